"""A tiny planted pruning experiment (see ``transfer_influence.data.planted_pruning``):
4 target classes, 4 related + 4 unrelated source classes, an MLP with 8 features."""

from pathlib import Path

import pytest

from transfer_influence.config import parse_config, read_toml
from transfer_influence.sweep.plan import SweepPlan

PRUNING_TOML = """
[data]
suite = "planted_pruning"
seed = 0
[model]
name = "mlp"
[model.options]
width = 8
depth = 1
[pretrain]
epochs = 10
lr = 0.05
batch_size = 32
[transfer]
mode = "fixed_feature"
l2 = 1e-3
[sweep]
num_models = 16
group_size = 16
store = "{store}"
[prune]
clusters = 8
"""


def write_pruning_config(folder: Path) -> Path:
    """The experiment's TOML in ``folder``, its store beside it."""
    path = folder / "prune.toml"
    path.write_text(PRUNING_TOML.format(store="sweep.zarr"))
    return path


def pruning_raw(store: Path) -> dict:
    """The experiment as a config mapping writing to ``store``."""
    return read_toml(PRUNING_TOML.format(store=store), source="PRUNING_TOML")


@pytest.fixture()
def pruning_plan(tmp_path: Path) -> SweepPlan:
    return SweepPlan.from_config(parse_config(pruning_raw(tmp_path / "sweep.zarr")))
