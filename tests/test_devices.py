"""Devices: names resolved (auto's order, unavailable devices refused with what to use), kept out
of the config hash, passed to pretraining and transfer, chosen on the command line; on a CUDA
machine, CUDA and CPU give the same outputs and ridge datamodels to tolerance. Which float64
work goes where on mps is decided by functions tested here on the CPU."""

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import transfer_influence.sweep.plan as plan_module
import transfer_influence.training.transfer as transfer_module
from transfer_influence.cli import app
from transfer_influence.config import load_config, parse_config
from transfer_influence.devices import (
    datamodel_device,
    float64_device,
    precise_dtype,
    resolve_device,
    supports_float64,
)
from transfer_influence.errors import ConfigError
from transfer_influence.estimators import estimate_influence, fit_lasso, fit_ridge
from transfer_influence.sweep.plan import SweepPlan

from .estimators.conftest import random_store
from .sweep.conftest import write_sweep_config


@pytest.fixture
def no_gpu(monkeypatch):
    """A machine without CUDA or mps, whatever this one has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="'cuda:2' is not available: PyTorch sees 2 CUDA"):
        resolve_device("cuda:2")


def test_unavailable_or_unknown_devices_are_refused(no_gpu):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="'cuda' is not available.*use device = 'auto' or 'cpu'"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="'mps' is not available"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="'gpu' is not one of auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


def test_float64_work_per_device():
    """mps has no float64: precision-sensitive sums use float32 there, the float64 linear heads
    move to the CPU, and a config's CPU fits datamodels with NumPy (None)."""
    assert [supports_float64(d) for d in ("cpu", "cuda", "cuda:1", "mps")] == [True] * 3 + [False]
    assert precise_dtype("cuda:1") == torch.float64 and precise_dtype("mps") == torch.float32
    assert float64_device("cuda:1") == torch.device("cuda:1")
    assert float64_device(torch.device("mps")) == torch.device("cpu")


def test_datamodel_device_is_none_on_the_cpu(monkeypatch, no_gpu):
    assert datamodel_device("cpu") is None and datamodel_device("auto") is None
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert datamodel_device("auto") == torch.device("mps")
    with pytest.raises(ConfigError, match="'cuda' is not available"):
        datamodel_device("cuda")


def test_fixed_feature_heads_are_fitted_where_float64_device_says(monkeypatch):
    """Transfer asks ``float64_device`` (the CPU for mps) where to fit the float64 heads."""
    asked, seen = [], []
    real = transfer_module.fit_linear_heads

    def where(device):
        asked.append(device)
        return torch.device("cpu")

    def spy(features, labels, *args, **kwargs):
        seen.append((features.device, features.dtype, labels.device))
        return real(features, labels, *args, **kwargs)

    monkeypatch.setattr(transfer_module, "float64_device", where)
    monkeypatch.setattr(transfer_module, "fit_linear_heads", spy)
    plan = SweepPlan.from_config(parse_config({**RAW, "device": "cpu"}))
    masks = np.ones((1, plan.data.source.num_classes), bool)
    plan.variant(transfer_mode="fixed_feature").train_models(masks, [0])
    assert asked == [torch.device("cpu")]
    assert seen == [(torch.device("cpu"), torch.float64, torch.device("cpu"))]


RAW = {"data": {"suite": "planted", "options": {"n_per_class": 16, "target_test_per_class": 6}},
       "model": {"name": "mlp", "options": {"width": 8, "depth": 1}},
       "pretrain": {"epochs": 1, "lr": 0.05, "batch_size": 16}, "sweep": {"num_models": 2}}


def test_device_is_validated_but_not_hashed():
    base = parse_config(RAW).config_hash()
    for device in ("cpu", "cuda", "cuda:1", "mps", "auto"):
        assert parse_config({**RAW, "device": device}).config_hash() == base
    with pytest.raises(ConfigError, match="device"):
        parse_config({**RAW, "device": "gpu"})


def test_train_models_trains_and_transfers_on_the_config_device(monkeypatch, no_gpu):
    seen = []
    for name in ("pretrain_group", "transfer_fixed_feature", "finetune_group"):
        real = getattr(plan_module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append((_name, kwargs["device"]))
            return _real(*args, **kwargs)

        monkeypatch.setattr(plan_module, name, spy)
    finetune = {"mode": "finetune", "recipe": {"epochs": 1, "lr": 0.05, "batch_size": 8}}
    plan = SweepPlan.from_config(parse_config({**RAW, "device": "cpu", "transfer": finetune}))
    masks = np.ones((1, plan.data.source.num_classes), bool)
    plan.train_models(masks, [0])
    plan.variant(transfer_mode="fixed_feature").train_models(masks, [0])
    assert seen == [("pretrain_group", torch.device("cpu")), ("finetune_group", torch.device("cpu")),
                    ("pretrain_group", torch.device("cpu")),
                    ("transfer_fixed_feature", torch.device("cpu"))]
    on_gpu = SweepPlan(parse_config({**RAW, "device": "cuda"}), plan.data)
    with pytest.raises(ConfigError, match="'cuda' is not available"):
        on_gpu.train_models(masks, [0])


def test_cli_device_option(tmp_path: Path, no_gpu):
    config = write_sweep_config(tmp_path, num_models=4)
    result = CliRunner().invoke(app, ["run", str(config), "--quiet", "--device", "cuda:0"])
    assert result.exit_code == 1 and "'cuda:0' is not available" in result.output
    assert not (tmp_path / "sweep.zarr").exists()  # refused before any work
    result = CliRunner().invoke(app, ["run", str(config), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0 and "4/4 models complete" in result.output, result.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("transfer", ["fixed_feature", "finetune"])
def test_cuda_and_cpu_give_the_same_outputs(tmp_path: Path, transfer):
    config = load_config(write_sweep_config(tmp_path, num_models=4))
    config = config.model_copy(update={"transfer": config.transfer.model_copy(update={
        "mode": transfer, "recipe": config.pretrain if transfer == "finetune" else None})})
    on_cpu = SweepPlan.from_config(config.model_copy(update={"device": "cpu"}))
    on_cuda = SweepPlan(config.model_copy(update={"device": "cuda"}), on_cpu.data)
    masks = on_cpu.masks(np.arange(4))
    cpu, cuda = on_cpu.train_models(masks, [1, 2, 3, 4]), on_cuda.train_models(masks, [1, 2, 3, 4])
    for name in ("correct_logit", "max_other_logit", "logsumexp"):
        np.testing.assert_allclose(getattr(cuda, name), getattr(cpu, name), rtol=1e-3, atol=1e-3)
    assert (cuda.predicted == cpu.predicted).mean() > 0.95  # near-ties may flip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("method", "tolerance", "lds_tolerance"),
                         [("ridge", 1e-9, 1e-6), ("lasso", 1e-4, 1e-2)])
def test_cuda_and_numpy_datamodels_agree(tmp_path: Path, method, tolerance, lds_tolerance):
    """The datamodel fit on CUDA (float64) gives NumPy's weights, choices and held-out scores,
    directly and through ``estimate_influence`` with a config-style device. Ridge agrees to
    rounding; LASSO to ``tolerance`` of the weights' scale, because a rounding difference may
    stop a target's iterations one step earlier or later within the solver's duality-gap
    tolerance (on the CPU torch and NumPy agreed to 1e-13; not run here: no GPU), and the
    LDS, a rank correlation, may then move by a near-tie in the predictions."""
    fit = fit_ridge if method == "ridge" else fit_lasso
    store = random_store(tmp_path / "s.zarr", models=200, units=12, targets=20,
                         unfinished_every=7)
    masks, outputs = store.read_masks(), store.read_outputs().variant("margin")
    on_cpu, on_cuda = fit(masks, outputs, refit=True), fit(masks, outputs, refit=True,
                                                           device="cuda")
    scale = np.abs(on_cpu.weights).max()
    np.testing.assert_allclose(on_cuda.weights, on_cpu.weights, rtol=0, atol=tolerance * scale)
    same_choice = np.isclose(on_cuda.regularization, on_cpu.regularization, rtol=1e-9)
    assert same_choice.mean() >= (1.0 if method == "ridge" else 0.9)  # LASSO: near-ties
    np.testing.assert_allclose(on_cuda.lds_per_target[same_choice],
                               on_cpu.lds_per_target[same_choice], atol=lds_tolerance)
    cpu_estimate = estimate_influence(store, "margin", method=method, device="cpu")
    cuda_estimate = estimate_influence(store, "margin", method=method, device="cuda")
    np.testing.assert_allclose(cuda_estimate.influence, cpu_estimate.influence, rtol=0,
                               atol=tolerance * np.abs(cpu_estimate.influence).max())
    assert cuda_estimate.heldout_lds == pytest.approx(cpu_estimate.heldout_lds, abs=lds_tolerance)
