"""A tiny planted sweep shared by the runner and CLI tests, and helpers to compare stores and to
kill a sweep process part-way."""

import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer_influence.errors import StoreError
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.store import SweepStore
from transfer_influence.training import trainer

OUTPUT_FIELDS = ("correct_logit", "max_other_logit", "logsumexp", "predicted")

TINY_SWEEP = """
name = "tiny"
[data]
suite = "planted"
seed = 3
[data.options]
n_per_class = 60
target_train_per_class = 5
target_test_per_class = 20
[model]
name = "mlp"
[model.options]
width = 32
depth = 1
[pretrain]
epochs = {epochs}
lr = 0.05
batch_size = 64
[transfer]
l2 = 0.01
[sweep]
unit = "{unit}"
num_models = {num_models}
group_size = {group_size}
seed = 11
store = "{store}"
"""


def write_sweep_config(folder: Path, *, store: str = "sweep.zarr", num_models: int = 8,
                       group_size: int = 2, epochs: int = 2, unit: str = "class") -> Path:
    """Write the tiny planted sweep's TOML into ``folder`` and return its path."""
    path = folder / f"{Path(store).stem}.toml"
    path.write_text(TINY_SWEEP.format(store=store, num_models=num_models,
                                      group_size=group_size, epochs=epochs, unit=unit))
    return path


@pytest.fixture()
def tiny_config(tmp_path: Path) -> Path:
    return write_sweep_config(tmp_path)


PLANTED_DIVERGING_UNIT = 0
"""The source class :func:`plant_divergence` makes training diverge on."""


def overflow_saturated_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scale the trainer's inputs of saturated (all-255) images by 1e30, so that training on
    them overflows to an inf/NaN loss within a few steps."""
    original_inputs = trainer.to_inputs

    def scaled(images, normalization):
        x = original_inputs(images, normalization)
        hot = (images == 255).flatten(1).all(1)
        return x * torch.where(hot, 1e30, 1.0).view(-1, *[1] * (x.ndim - 1))

    monkeypatch.setattr(trainer, "to_inputs", scaled)


def plant_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every model that keeps source class ``PLANTED_DIVERGING_UNIT`` diverge: its images
    are saturated (all 255) and :func:`overflow_saturated_inputs` blows them up (every plan
    built afterwards has the planted data)."""
    original_from_config = SweepPlan.from_config.__func__

    def from_config(cls, config):
        plan = original_from_config(cls, config)
        source = plan.data.source
        images = source.images.copy()
        images[source.labels == PLANTED_DIVERGING_UNIT] = 255
        plan.data = dataclasses.replace(plan.data,
                                        source=dataclasses.replace(source, images=images))
        return plan

    monkeypatch.setattr(SweepPlan, "from_config", classmethod(from_config))
    overflow_saturated_inputs(monkeypatch)


def assert_same_store(a: SweepStore, b: SweepStore) -> None:
    """Both stores are complete and hold bit-identical masks and outputs."""
    assert a.completed().all() and b.completed().all()
    np.testing.assert_array_equal(a.read_masks(), b.read_masks())
    out_a, out_b = a.read_outputs(), b.read_outputs()
    for field in OUTPUT_FIELDS:
        np.testing.assert_array_equal(getattr(out_a, field), getattr(out_b, field), err_msg=field)


def kill_when_completed(process: subprocess.Popen, store_path: Path, at_least: int, *,
                        group: bool = False, timeout: float = 120) -> SweepStore:
    """SIGKILL ``process`` (its whole process group if ``group``) once the store at
    ``store_path`` has ``at_least`` completed models; returns the store as the kill left it.
    Fails if the process ended before it could be killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (store_path / "zarr.json").exists():
            try:
                done = SweepStore.open(store_path, read_only=True).num_completed
            except (StoreError, ValueError, OSError):  # the store is still being created
                done = 0
            if done >= at_least:
                break
        time.sleep(0.02)
    stderr = "" if process.stderr is None or process.poll() is None else process.stderr.read()
    assert process.poll() is None, f"the sweep ended before it could be killed: {stderr}"
    if group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.send_signal(signal.SIGKILL)
    process.wait()
    return SweepStore.open(store_path, read_only=True)
