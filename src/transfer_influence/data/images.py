"""`LabeledImages`: the one in-memory form of a labelled image dataset.

Every loader returns a :class:`LabeledImages` and every later stage (sweeps, training, the store)
consumes one. Images are kept as ``uint8 [N, C, H, W]`` (4x smaller than float32, exact) and only
converted to floats batch by batch in :mod:`transfer_influence.data.transforms`.

Instances are immutable: the arrays are read-only views, so a dataset cached by
:func:`~transfer_influence.data.registry.load_dataset` can be shared safely and its
:meth:`LabeledImages.fingerprint` stays valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import DataError


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (the caller's array keeps its own flags)."""
    view = array.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class LabeledImages:
    """Images with integer class labels and class names.

    Attributes:
        images: ``uint8 [N, C, H, W]`` pixel values 0..255.
        labels: ``int64 [N]`` class indices in ``[0, num_classes)``.
        class_names: one distinct name per class; label ``k`` means ``class_names[k]``.
        name: a short name of the dataset (used in class-name prefixes and reports).

    Every class must have at least one example, so class indices, names and counts always agree;
    use :func:`select_classes` to drop classes.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str = "dataset"

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        class_names = tuple(str(c) for c in self.class_names)
        where = f"dataset {self.name!r}"
        if images.dtype.kind == "f" and np.isnan(images).any():
            raise DataError(
                f"{where}: images contain NaN values; fix or drop those images, then convert "
                "to uint8 0..255 (e.g. np.round(x * 255).astype(np.uint8) for floats in [0, 1])."
            )
        if images.ndim != 4:
            raise DataError(
                f"{where}: images must have shape [N, C, H, W], got shape {images.shape}; "
                "add a channel axis with images[:, None] for grey [N, H, W] images, or "
                "transpose NHWC with images.transpose(0, 3, 1, 2)."
            )
        if images.dtype != np.uint8:
            raise DataError(
                f"{where}: images must be uint8 0..255, got dtype {images.dtype}; convert them, "
                "e.g. np.round(x * 255).astype(np.uint8) for floats in [0, 1]."
            )
        if labels.dtype.kind == "f" and np.isnan(labels).any():
            raise DataError(f"{where}: labels contain NaN; every example needs a class index.")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{where}: labels must have shape [N] = [{images.shape[0]}] to match the images, "
                f"got shape {labels.shape}."
            )
        if labels.dtype.kind not in "iu":
            raise DataError(
                f"{where}: labels must be integer class indices, got dtype {labels.dtype}; "
                "map class names to indices first (e.g. with np.unique(..., return_inverse=True))."
            )
        num_classes = len(class_names)
        if num_classes == 0:
            raise DataError(f"{where}: class_names is empty; give one name per class.")
        duplicates = sorted({c for c in class_names if class_names.count(c) > 1})
        if duplicates:
            raise DataError(
                f"{where}: duplicate class names {duplicates}; class names must be distinct "
                "(combine() prefixes them with the dataset name for that reason)."
            )
        labels = labels.astype(np.int64, copy=False)
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            bad = labels[(labels < 0) | (labels >= num_classes)]
            raise DataError(
                f"{where}: labels must lie in [0, {num_classes}) for {num_classes} class names, "
                f"found {sorted(set(bad.tolist()))[:5]}; check the label mapping or class_names."
            )
        counts = np.bincount(labels, minlength=num_classes)
        empty = [class_names[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            raise DataError(
                f"{where}: classes without examples: {empty[:10]}; drop them with "
                "select_classes(ds, classes) so that every class has examples."
            )
        object.__setattr__(self, "images", _read_only(images))
        object.__setattr__(self, "labels", _read_only(labels))
        object.__setattr__(self, "class_names", class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def class_counts(self) -> np.ndarray:
        """``int64 [num_classes]`` number of examples of each class."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def class_index(self, class_name: str) -> int:
        """Index of the class called ``class_name`` (DataError listing the names if unknown)."""
        try:
            return self.class_names.index(class_name)
        except ValueError:
            raise DataError(
                f"dataset {self.name!r} has no class {class_name!r}; its classes are "
                f"{list(self.class_names)}."
            ) from None

    def examples_of(self, class_indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        """``int64`` indices (ascending) of the examples whose label is in ``class_indices``."""
        wanted = np.atleast_1d(np.asarray(class_indices, dtype=np.int64))
        return np.flatnonzero(np.isin(self.labels, wanted)).astype(np.int64)

    @cached_property
    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(repr(self.images.shape).encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        digest.update("\x00".join(self.class_names).encode())
        return digest.hexdigest()

    def fingerprint(self) -> str:
        """sha256 hex digest of images, labels and class names (cached; stamps result stores).

        The name is not part of it: renaming a dataset does not change what a model saw.
        """
        return self._fingerprint

    def take(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> LabeledImages:
        """A copy holding the examples at ``indices``, keeping all classes (each must remain)."""
        index = np.asarray(indices, dtype=np.int64)
        return LabeledImages(
            self.images[index], self.labels[index], self.class_names, name or self.name
        )




def select_classes(ds: LabeledImages, classes: Sequence[str | int]) -> LabeledImages:
    """Keep only ``classes`` (names or indices), relabelled ``0..k-1`` in the given order.

    Copies the kept images. Use it to drop classes, reorder them, or split classes between a
    source and a target task.
    """
    if len(classes) == 0:
        raise DataError(f"select_classes on {ds.name!r}: give at least one class to keep.")
    keep: list[int] = []
    for c in classes:
        if isinstance(c, str):
            k = ds.class_index(c)
        elif isinstance(c, (int, np.integer)) and 0 <= int(c) < ds.num_classes:
            k = int(c)
        else:
            raise DataError(
                f"select_classes on {ds.name!r}: {c!r} is neither a class name nor an index in "
                f"[0, {ds.num_classes}); the classes are {list(ds.class_names)}."
            )
        if k in keep:
            raise DataError(
                f"select_classes on {ds.name!r}: class {ds.class_names[k]!r} is listed twice."
            )
        keep.append(k)
    mapping = np.full(ds.num_classes, -1, dtype=np.int64)
    mapping[keep] = np.arange(len(keep))
    rows = ds.examples_of(keep)
    return LabeledImages(
        ds.images[rows],
        mapping[ds.labels[rows]],
        tuple(ds.class_names[k] for k in keep),
        ds.name,
    )
