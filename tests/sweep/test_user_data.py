"""A sweep over the user's own in-memory data: torch datasets as source and target, through
SweepPlan.from_data, give the same store as the same data described in a config."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from transfer_influence import estimate_influence, run_counterfactual
from transfer_influence.config import load_config
from transfer_influence.data import LabeledImages
from transfer_influence.errors import ConfigError, StoreError
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import run_local

from .conftest import write_sweep_config


class NamedImages(Dataset):
    """A user's Dataset class: float CHW tensors in [0, 1], int labels, a ``classes`` list."""

    def __init__(self, data: LabeledImages) -> None:
        self.data, self.classes = data, list(data.class_names)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.data.images[i].astype(np.float32) / 255), int(
            self.data.labels[i])


def as_tensor_dataset(data: LabeledImages) -> TensorDataset:
    return TensorDataset(torch.from_numpy(data.images.copy()), torch.from_numpy(data.labels.copy()))


def test_torch_datasets_give_the_same_store_as_the_config(tmp_path: Path):
    config = load_config(write_sweep_config(tmp_path, store="config.zarr", num_models=6,
                                            group_size=3))
    reference = run_local(config, quiet=True)
    data = SweepPlan.from_config(config).data
    mine = config.model_copy(update={"data": None})
    mine = mine.model_copy(update={"sweep": mine.sweep.model_copy(update={"store": "mine.zarr"})})
    plan = SweepPlan.from_data(mine, NamedImages(data.source),
                               as_tensor_dataset(data.target_train),
                               as_tensor_dataset(data.target_test))
    assert plan.unit_names == list(data.source.class_names)
    assert plan.data.target_test.class_names == ("0", "1", "2", "3")  # TensorDataset: no names
    store = run_local(plan, quiet=True)
    assert store.fingerprints == plan.data.fingerprints()
    assert store.fingerprints["source"] == data.fingerprints()["source"]  # same images and names
    for field in ("correct_logit", "max_other_logit", "logsumexp", "predicted"):
        np.testing.assert_array_equal(getattr(store.read_outputs(), field),
                                      getattr(reference.read_outputs(), field))
    # every command's library function takes the plan: estimates, retraining, reading
    result = estimate_influence(plan.read_store(), "prob_correct")
    assert result.unit_names == plan.unit_names
    cf = run_counterfactual(plan, "random", [1], seeds=2, quiet=True)
    assert len(cf.arms) == 1 and 0 <= cf.baseline.mean <= 1
    # the store refuses other data
    other = SweepPlan.from_data(mine, data.target_test, data.target_train, data.target_test)
    with pytest.raises(StoreError):
        other.open_store()


def test_data_section_and_user_data_are_exclusive(tmp_path: Path):
    config = load_config(write_sweep_config(tmp_path))
    data = SweepPlan.from_config(config).data
    with pytest.raises(ConfigError, match="describes its data in \\[data\\]"):
        SweepPlan.from_data(config, data.source, data.target_train, data.target_test)
    with pytest.raises(ConfigError, match="no \\[data\\] section.*SweepPlan.from_data"):
        SweepPlan.from_config(config.model_copy(update={"data": None}))


USER_FILES = """
name = "my-files"
[data]
image_size = 8
[[data.source]]
path = "source.npz"
format = "npz"
prefix = "npz"
[[data.source]]
path = "more_source"
format = "image_folder"
prefix = "folder"
[data.target_train]
path = "target/train"
format = "image_folder"
[data.target_test]
path = "target/test"
format = "image_folder"
[model]
name = "mlp"
[model.options]
width = 8
depth = 1
[pretrain]
epochs = 1
batch_size = 16
lr = 0.05
[sweep]
num_models = 4
group_size = 2
store = "files.zarr"
"""


def test_sweep_from_a_users_npz_and_image_folders(tmp_path: Path):
    """The README's [[data.source]] example: an .npz and class folders as source, class folders
    as target, run as a sweep."""
    from tests.data.test_data_build import _write_folder, _write_npz

    _write_npz(tmp_path / "source.npz", num_classes=3, per_class=10, size=10, seed=1)
    _write_folder(tmp_path / "more_source", ["p", "q"], per_class=8, size=12)
    _write_folder(tmp_path / "target" / "train", ["x", "y"], per_class=4, size=8)
    _write_folder(tmp_path / "target" / "test", ["x", "y"], per_class=3, size=8)
    (tmp_path / "files.toml").write_text(USER_FILES)
    store = run_local(load_config(tmp_path / "files.toml"), quiet=True)
    assert store.completed().all()
    assert store.unit_names == ["npz/c0", "npz/c1", "npz/c2", "folder/p", "folder/q"]
    assert store.target_class_names == ["x", "y"] and store.num_targets == 6
    assert np.isfinite(store.read_outputs().correct_logit).all()
