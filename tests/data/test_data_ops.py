"""combine, resize, channels, stratified splits and per-class sampling."""

from __future__ import annotations

import numpy as np
import pytest

from transfer_influence.data import (
    LabeledImages,
    combine,
    invert,
    rename,
    resize,
    sample_per_class,
    stratified_split,
    to_channels,
)
from transfer_influence.errors import DataError


def make(counts: list[int], shape=(1, 4, 4), name: str = "toy") -> LabeledImages:
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), *shape), dtype=np.uint8)
    return LabeledImages(images, labels, tuple(str(k) for k in range(len(counts))), name)


def test_combine_prefixes_class_names_and_shifts_labels():
    fashion = LabeledImages(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ("Bag", "Coat"), "fashion")
    digits = rename(make([1, 1, 1, 1]), "digits")
    both = combine([fashion, digits])
    assert both.class_names[:3] == ("fashion/Bag", "fashion/Coat", "digits/0")
    np.testing.assert_array_equal(both.labels, [0, 1, 2, 3, 4, 5])
    assert combine([fashion, digits], ["f", "d"]).class_names[-1] == "d/3"
    with pytest.raises(DataError, match="repeat"):
        combine([fashion, fashion])


def test_combine_rejects_different_shapes():
    with pytest.raises(DataError, match="call resize"):
        combine([make([2], (1, 4, 4), "a"), make([2], (1, 8, 8), "b")])


def test_resize_and_channels():
    ds = make([3, 2], (1, 8, 8))
    small = resize(ds, 4)
    assert small.image_shape == (1, 4, 4) and small.images.dtype == np.uint8
    constant = LabeledImages(np.full((1, 1, 8, 8), 77, np.uint8), [0], ("a",))
    assert (resize(constant, (16, 12)).images == 77).all()
    assert resize(ds, 8) is ds
    rgb = to_channels(ds, 3)
    assert rgb.image_shape == (3, 8, 8)
    np.testing.assert_array_equal(to_channels(rgb, 1).images, ds.images)
    with pytest.raises(DataError, match="1 or 3"):
        to_channels(ds, 2)


def test_stratified_split_reproducible_and_stratified():
    ds = make([10, 20, 3])
    train, test = stratified_split(ds, 0.3, seed=1)
    again_train, _ = stratified_split(ds, 0.3, seed=1)
    other_train, _ = stratified_split(ds, 0.3, seed=2)
    np.testing.assert_array_equal(train.images, again_train.images)
    assert not np.array_equal(train.images, other_train.images)
    np.testing.assert_array_equal(test.class_counts(), [3, 6, 1])
    np.testing.assert_array_equal(train.class_counts(), [7, 14, 2])
    rows = {r.tobytes() for r in train.images} | {r.tobytes() for r in test.images}
    assert len(rows) == len(ds)
    with pytest.raises(DataError, match="single example"):
        stratified_split(make([5, 1]), 0.5, seed=0)


def test_sample_per_class():
    ds = make([5, 8, 6])
    few = sample_per_class(ds, 4, seed=0)
    np.testing.assert_array_equal(few.class_counts(), [4, 4, 4])
    np.testing.assert_array_equal(few.images, sample_per_class(ds, 4, seed=0).images)
    picked = sample_per_class(ds, 2, seed=0, classes=["2", "0"])
    assert picked.class_names == ("2", "0")
    with pytest.raises(DataError, match="fewer.*at most 5"):
        sample_per_class(ds, 6, seed=0)


def test_invert_flips_polarity_and_keeps_labels():
    ds = LabeledImages(np.array([[[[0, 255], [10, 200]]]], np.uint8), [0], ("a",), "ink")
    flipped = invert(ds)
    np.testing.assert_array_equal(flipped.images, [[[[255, 0], [245, 55]]]])
    assert flipped.class_names == ("a",) and flipped.name == "ink"
    np.testing.assert_array_equal(invert(flipped).images, ds.images)
