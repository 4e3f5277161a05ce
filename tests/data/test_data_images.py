"""LabeledImages validation, selection views and class selection."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_influence.data import LabeledImages, select_classes
from transfer_influence.errors import DataError


def make(n_per_class: int = 3, classes: tuple[str, ...] = ("a", "b", "c")) -> LabeledImages:
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    images = np.arange(len(labels) * 4, dtype=np.uint8).reshape(-1, 1, 2, 2)
    return LabeledImages(images, labels, classes, "toy")


def test_properties_and_read_only():
    ds = make()
    assert (len(ds), ds.num_classes, ds.image_shape) == (9, 3, (1, 2, 2))
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.class_counts(), [3, 3, 3])
    np.testing.assert_array_equal(ds.examples_of([0, 2]), [0, 1, 2, 6, 7, 8])
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 1


def test_fingerprint_depends_on_content_not_name():
    ds = make()
    other = LabeledImages(ds.images, ds.labels, ds.class_names, "renamed")
    assert ds.fingerprint() == other.fingerprint() and len(ds.fingerprint()) == 64
    relabelled = LabeledImages(ds.images, ds.labels[::-1].copy(), ds.class_names)
    assert relabelled.fingerprint() != ds.fingerprint()


@pytest.mark.parametrize(
    ("images", "labels", "names", "match"),
    [
        (np.full((2, 1, 2, 2), np.nan), [0, 1], ("a", "b"), "NaN"),
        (np.zeros((2, 1, 2, 2), np.float32), [0, 1], ("a", "b"), "uint8"),
        (np.zeros((2, 2, 2), np.uint8), [0, 1], ("a", "b"), r"\[N, C, H, W\]"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 1, 1], ("a", "b"), "labels must have shape"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 2], ("a", "b"), r"labels must lie in \[0, 2\)"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0.0, 1.0], ("a", "b"), "integer class indices"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 0], ("a", "b"), "'b'.*select_classes"),
        (np.zeros((2, 1, 2, 2), np.uint8), [0, 1], ("a", "a"), "duplicate class names"),
    ],
)
def test_validation_errors_say_what_is_wrong(images, labels, names, match):
    with pytest.raises(DataError, match=match):
        LabeledImages(images, np.asarray(labels), names)


def test_select_classes_relabels_in_given_order():
    ds = make()
    picked = select_classes(ds, ["c", 0])
    assert picked.class_names == ("c", "a")
    np.testing.assert_array_equal(picked.labels, [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(picked.images, ds.images[[0, 1, 2, 6, 7, 8]])
    with pytest.raises(DataError, match="no class 'z'"):
        select_classes(ds, ["z"])
    with pytest.raises(DataError, match="listed twice"):
        select_classes(ds, ["a", 0])
