"""Ridge and LASSO datamodels on a torch device: torch (here on the CPU, the device this machine
has) gives NumPy's weights, choices and scores to rounding, float32 (what ``mps`` uses) to a
documented tolerance; an unknown or missing device is a clear error; ``estimate`` and the other
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


@pytest.mark.parametrize("shape", [(400, 30, 40), (60, 150, 12)])  # class- and example-level
@pytest.mark.parametrize("refit", [False, True])
def test_torch_lasso_equals_numpy_lasso(shape, refit):
    """Same solver in both libraries: same alphas, warm starts, stopping and choice, so the
    weights agree to rounding (1e-13 measured) and every target picks the same alpha."""
    masks, outputs = _planted(*shape)
    numpy_fit = fit_lasso(masks, outputs, alphas=30, seed=3, refit=refit)
    torch_fit = fit_lasso(masks, outputs, alphas=30, seed=3, refit=refit, device="cpu")
    _assert_same_fit(torch_fit, numpy_fit, rtol=1e-9)
    assert torch_fit.weights.dtype == np.float64 and torch_fit.num_models == numpy_fit.num_models
    assert (numpy_fit.weights == 0).any()  # a sparse fit: the soft threshold is exercised


@pytest.mark.parametrize(("fit", "same_choice"), [(fit_ridge, 1.0), (fit_lasso, 0.9)])
def test_float32_fits_are_within_the_documented_tolerance(monkeypatch, fit, same_choice):
    """What ``mps`` computes (float32, see ``devices.precise_dtype``), measured on the CPU: the
    weights agree with the float64 fit to 1e-3 of their scale (ridge: 2.7e-4 measured with two
    BLAS threads, 1e-6 with one; LASSO: 5.4e-4, its iterates stopping elsewhere within the
    solver's tolerance), the same regularisation for every target (ridge) or at least 90% of
    them (LASSO near-ties: 97% measured) and the held-out LDS to 1e-3."""
    masks, outputs = _planted(400, 30, 40, seed=1)
    numpy_fit = fit(masks, outputs, seed=0)
    monkeypatch.setattr(datamodels_module, "precise_dtype", lambda device: torch.float32)
    single = fit(masks, outputs, seed=0, device="cpu")
    scale = np.abs(numpy_fit.weights).max()
    assert np.abs(single.weights - numpy_fit.weights).max() <= 1e-3 * scale
    same = np.isclose(single.regularization, numpy_fit.regularization, rtol=1e-4)
    assert same.mean() >= same_choice
    assert abs(single.lds - numpy_fit.lds) <= 1e-3


@pytest.mark.parametrize("fit", [fit_ridge, fit_lasso])
def test_unknown_or_missing_devices_are_refused_clearly(fit):
    masks, outputs = _planted(60, 5, 3)
    with pytest.raises(ConfigError, match="'cuda:3' is not available"):
        fit(masks, outputs, device="cuda:3")  # this machine has no CUDA device
    with pytest.raises(ConfigError, match="'gpu' is not one of auto, cpu, cuda, cuda:N or mps"):
        fit(masks, outputs, device="gpu")
    auto = fit(masks, outputs, device="auto")  # the CPU here: torch's CPU solver
    _assert_same_fit(auto, fit(masks, outputs, device=torch.device("cpu")), rtol=0)


@pytest.mark.parametrize("method", ["ridge", "lasso"])
def test_store_fits_take_the_device(tmp_path: Path, method):
    store = random_store(tmp_path / "s.zarr", models=80, units=6, targets=5,
                         unfinished_every=9)
    numpy_fit = fit_datamodels(store, "margin", method)
    _assert_same_fit(fit_datamodels(store, "margin", method, device="cpu"), numpy_fit,
                     rtol=1e-9)
    # A config's "cpu" means NumPy (datamodel_device): the default fit, bit for bit.
    on_cpu = estimate_influence(store, "margin", method=method, device="cpu")
    np.testing.assert_array_equal(on_cpu.influence, numpy_fit.weights)
    with pytest.raises(ConfigError, match="'cuda:7' is not available"):
        estimate_influence(store, "margin", method=method, device="cuda:7")


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
