"""A tiny planted sweep shared by the runner and CLI tests."""

import dataclasses
from pathlib import Path

import pytest
import torch

from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.training import trainer

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
