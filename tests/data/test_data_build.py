"""The data section of a config becomes source and target datasets, including a user's files."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer_influence.config import DataConfig
from transfer_influence.data.build import build_transfer_data
from transfer_influence.errors import ConfigError


def _write_npz(path: Path, num_classes: int, per_class: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (num_classes * per_class, size, size), dtype=np.uint8)
    labels = np.repeat(np.arange(num_classes), per_class)
    np.savez(path, images=images, labels=labels,
             class_names=np.array([f"c{k}" for k in range(num_classes)]))


def _write_folder(root: Path, classes: list[str], per_class: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")


def test_user_files_are_combined_resized_and_selected(tmp_path: Path):
    _write_npz(tmp_path / "a.npz", num_classes=3, per_class=6, size=10, seed=1)
    _write_folder(tmp_path / "target_train", ["x", "y"], per_class=4, size=12)
    _write_folder(tmp_path / "target_test", ["x", "y"], per_class=3, size=12)
    config = DataConfig.model_validate({
        "source": [
            {"path": "a.npz", "format": "npz", "prefix": "mine", "classes": ["c2", "c0"]},
            {"name": "sklearn-digits", "prefix": "digits", "per_class": 5},
        ],
        "target_train": {"path": "target_train", "format": "image_folder"},
        "target_test": {"path": "target_test", "format": "image_folder"},
        "image_size": 8,
    })
    data = build_transfer_data(config, base_dir=tmp_path)
    assert data.source.class_names[:2] == ("mine/c2", "mine/c0")
    assert data.source.num_classes == 12 and len(data.source) == 2 * 6 + 10 * 5
    assert data.source.image_shape == (1, 8, 8)
    assert data.target_train.image_shape == (1, 8, 8) and len(data.target_test) == 6


def test_mismatched_target_classes_are_rejected(tmp_path: Path):
    _write_folder(tmp_path / "train", ["x", "y"], per_class=2, size=8)
    _write_folder(tmp_path / "test", ["x", "z"], per_class=2, size=8)
    config = DataConfig.model_validate({
        "source": [{"name": "sklearn-digits"}],
        "target_train": {"path": "train", "format": "image_folder"},
        "target_test": {"path": "test", "format": "image_folder"},
    })
    with pytest.raises(ConfigError, match="differ from target_test"):
        build_transfer_data(config, base_dir=tmp_path)


def test_suite_options_are_checked():
    config = DataConfig.model_validate({"suite": "planted", "options": {"n_per_klass": 3}})
    with pytest.raises(ConfigError, match="do not fit suite 'planted'"):
        build_transfer_data(config)
