"""Ridge datamodels on a torch device: torch's linear algebra (here on the CPU, the device this
machine has) gives NumPy's weights, choices and scores to rounding, float32 (what ``mps`` uses)
to a documented tolerance; LASSO stays on the CPU and says so; ``estimate`` and the other
commands that fit datamodels take ``--device``."""

from pathlib import Path

import numpy as np
import pytest
import torch

import transfer_influence.estimators.datamodels as datamodels_module
from transfer_influence.errors import ConfigError
from transfer_influence.estimators import Estimate, estimate_influence, register_estimator
from transfer_influence.estimators.datamodels import fit_datamodels, fit_lasso, fit_ridge
from transfer_influence.sweep.masks import subset_masks

from .conftest import random_store


def _planted(models: int, units: int, targets: int, seed: int = 0):
    """Sweep-style masks (half the units each) and outputs linear in them plus noise."""
    rng = np.random.default_rng(seed)
    masks = subset_masks(seed, np.arange(models), units, 0.5)
    weights = rng.normal(size=(units, targets)) * 0.2
    return masks, masks @ weights + 0.5 + rng.normal(size=(models, targets))


def _assert_same_fit(torch_fit, numpy_fit, rtol):
    scale = np.abs(numpy_fit.weights).max()
    np.testing.assert_allclose(torch_fit.weights, numpy_fit.weights, rtol=0, atol=rtol * scale)
    np.testing.assert_allclose(torch_fit.bias, numpy_fit.bias, rtol=rtol, atol=rtol * scale)
    np.testing.assert_allclose(torch_fit.regularization, numpy_fit.regularization, rtol=rtol)
    np.testing.assert_allclose(torch_fit.lds_per_target, numpy_fit.lds_per_target, atol=1e-6)
    np.testing.assert_array_equal(torch_fit.heldout_indices, numpy_fit.heldout_indices)


@pytest.mark.parametrize("shape", [(400, 30, 40), (60, 150, 12)])  # class- and example-level
@pytest.mark.parametrize("refit", [False, True])
def test_torch_ridge_equals_numpy_ridge(shape, refit):
    masks, outputs = _planted(*shape)
    numpy_fit = fit_ridge(masks, outputs, seed=3, refit=refit)
    torch_fit = fit_ridge(masks, outputs, seed=3, refit=refit, device="cpu")
    _assert_same_fit(torch_fit, numpy_fit, rtol=1e-9)
    assert torch_fit.weights.dtype == np.float64 and torch_fit.num_models == numpy_fit.num_models


def test_float32_ridge_is_within_the_documented_tolerance(monkeypatch):
    """What ``mps`` computes (float32, see ``devices.precise_dtype``), measured on the CPU: the
    weights agree with the float64 fit to 1e-3 of their scale and the LDS to 1e-3
    (2.7e-4 measured with two BLAS threads, 1e-6 with one)."""
    masks, outputs = _planted(400, 30, 40, seed=1)
    numpy_fit = fit_ridge(masks, outputs, seed=0)
    monkeypatch.setattr(datamodels_module, "precise_dtype", lambda device: torch.float32)
    single = fit_ridge(masks, outputs, seed=0, device="cpu")
    scale = np.abs(numpy_fit.weights).max()
    assert np.abs(single.weights - numpy_fit.weights).max() <= 1e-3 * scale
    np.testing.assert_allclose(single.regularization, numpy_fit.regularization, rtol=1e-4)
    assert abs(single.lds - numpy_fit.lds) <= 1e-3


def test_lasso_runs_on_the_cpu_and_warns_for_a_gpu():
    masks, outputs = _planted(200, 12, 5)
    on_cpu = fit_lasso(masks, outputs, alphas=10)
    with pytest.warns(RuntimeWarning, match="LASSO datamodels are fitted on the CPU.*'cuda'"):
        asked_gpu = fit_lasso(masks, outputs, alphas=10, device="cuda")
    np.testing.assert_array_equal(asked_gpu.weights, on_cpu.weights)


def test_store_fits_take_the_device(tmp_path: Path):
    store = random_store(tmp_path / "s.zarr", models=80, units=6, targets=5,
                         unfinished_every=9)
    numpy_fit = fit_datamodels(store, "margin")
    _assert_same_fit(fit_datamodels(store, "margin", device="cpu"), numpy_fit, rtol=1e-9)
    with pytest.raises(ConfigError, match="'cuda:7' is not available"):
        estimate_influence(store, "margin", method="ridge", device="cuda:7")


def test_estimators_get_the_config_device(tmp_path: Path, monkeypatch, clean_registry):
    """``estimate_influence``'s config-style device reaches an estimator as a torch device, or
    None on the CPU (where the built-ins use NumPy)."""
    store = random_store(tmp_path / "s.zarr", models=20, units=4, targets=3,
                         unfinished_every=5)
    seen = []

    def recorder(masks, outputs, *, seed, device):
        seen.append(device)
        return Estimate(np.zeros((masks.shape[1], outputs.shape[1])))

    register_estimator("recorder", recorder)
    estimate_influence(store, method="recorder", device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    estimate_influence(store, method="recorder", device="cuda:1")
    assert seen == [None, torch.device("cuda:1")]
