"""A tiny planted sweep shared by the runner and CLI tests."""

from pathlib import Path

import pytest

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
