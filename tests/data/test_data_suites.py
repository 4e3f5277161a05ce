"""Transfer suites on the shipped data and the planted synthetic problem."""

from __future__ import annotations

import re

import numpy as np
import pytest

from transfer_influence.data import (
    LabeledImages,
    TransferData,
    fashion_digits_suite,
    many_class_suite,
    planted_transfer_problem,
    split_fashion_suite,
)
from transfer_influence.data.formats import FASHION_MNIST_CLASSES
from transfer_influence.errors import DataError


def test_fashion_digits_suite():
    data = fashion_digits_suite(seed=0, target_train_per_class=5)
    assert data.source.num_classes == 20 and data.target_train.num_classes == 10
    assert data.source.class_names[0] == "fashion/T-shirt/top"
    assert data.source.class_names[-1] == "mnist/9"
    counts = data.source.class_counts()
    assert (counts == counts[0]).all()
    np.testing.assert_array_equal(data.target_train.class_counts(), [5] * 10)
    assert data.target_test.image_shape == (1, 28, 28)
    again = fashion_digits_suite(seed=0, target_train_per_class=5)
    assert again.fingerprints() == data.fingerprints()
    assert fashion_digits_suite(seed=1).fingerprints()["source"] != data.fingerprints()["source"]


def test_split_fashion_suite():
    data = split_fashion_suite(seed=0)
    assert data.source.num_classes == 15 and data.target_test.num_classes == 5
    np.testing.assert_array_equal(data.source.class_counts()[:5], [1000] * 5)
    np.testing.assert_array_equal(data.source.class_counts()[5:], [800] * 10)
    assert data.target_train.class_names == (
        "T-shirt/top",
        "Dress",
        "Shirt",
        "Sneaker",
        "Ankle boot",
    )
    assert (len(data.target_train), len(data.target_test)) == (100, 5000)
    with pytest.raises(DataError, match="lower n_per_class"):
        split_fashion_suite(digits_per_class=900)


OMNIGLOT_ALPHABETS = {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin",
                      "Japanese_(katakana)", "Sanskrit", "Tagalog"}  # small1 + small2


def test_many_class_suite_classes_counts_and_seed():
    options = {"omniglot_per_class": 4, "digits_per_class": 30, "fashion_per_class": 20,
               "target_train_per_class": 5}
    data = many_class_suite(seed=0, **options)
    names = data.source.class_names
    assert data.source.num_classes == 262 and data.source.image_shape == (1, 28, 28)
    characters = [re.fullmatch(r"omniglot/(.+)/character(\d\d)", n) for n in names[:242]]
    assert all(characters) and len(set(names[:242])) == 242
    assert {m[1] for m in characters} == OMNIGLOT_ALPHABETS
    assert names[242:252] == tuple(f"mnist/{d}" for d in range(10))
    assert names[252:] == tuple(f"fashion/{c}" for c in FASHION_MNIST_CLASSES)
    np.testing.assert_array_equal(data.source.class_counts(),
                                  [4] * 242 + [30] * 10 + [20] * 10)
    characters_images = data.source.images[data.source.labels < 242]
    assert np.median(characters_images) == 0  # inverted: white strokes on black, like MNIST
    # The target is the fashion_digits suite's, so mnist/<d> is the known relative of digit d.
    digits = fashion_digits_suite(seed=0, target_train_per_class=5, source_per_class=2)
    for split in ("target_train", "target_test"):
        assert data.fingerprints()[split] == digits.fingerprints()[split]
    assert many_class_suite(seed=0, **options).fingerprints() == data.fingerprints()
    other = many_class_suite(seed=1, **options).fingerprints()
    assert other["source"] != data.fingerprints()["source"]
    with pytest.raises(DataError, match="lower n_per_class to at most 15"):
        many_class_suite(omniglot_per_class=16)  # 15 train drawers per character


def test_transfer_data_checks_shapes_and_classes():
    a = LabeledImages(np.zeros((2, 1, 4, 4), np.uint8), [0, 1], ("x", "y"))
    b = LabeledImages(np.zeros((2, 1, 5, 5), np.uint8), [0, 1], ("x", "y"))
    with pytest.raises(DataError, match="image shapes differ"):
        TransferData(a, b, b)
    with pytest.raises(DataError, match="same classes"):
        TransferData(a, a, LabeledImages(a.images, [1, 0], ("y", "x")))


def _nearest(images: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1) / 255.0
    p = prototypes.reshape(len(prototypes), -1)
    return ((x[:, None] - p[None]) ** 2).sum(-1).argmin(1)


def _cue(images: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """Per image: mean over pixels of (pixel - image mean) * cue pattern (+-1), i.e. the cue's
    signed amplitude (the pattern is balanced, so a constant image scores 0)."""
    x = images.reshape(len(images), -1) / 255.0
    return ((x - x.mean(1, keepdims=True)) * pattern.reshape(1, -1)).mean(1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_planted_problem_structure(seed):
    data, truth = planted_transfer_problem(seed)
    source, protos, cue = data.source, truth.target_prototypes, truth.cue_pattern
    assert source.num_classes == 8 and data.target_train.num_classes == 4
    assert source.class_names[truth.helpful_source_class] == truth.helpful_source_name
    assert source.class_names[truth.harmful_source_class] == truth.harmful_source_name
    assert len(truth.filler_source_classes) == 6
    t, u = truth.target_class, truth.confused_with
    # t and u are the closest pair of target prototypes: the one that needs good features
    distances = ((protos[:, None] - protos[None]) ** 2).sum(axis=(2, 3, 4))
    distances[np.diag_indices_from(distances)] = np.inf
    assert set(np.unravel_index(distances.argmin(), distances.shape)) == {t, u}
    # the cue is a balanced +-1 pattern orthogonal to the t-u difference
    assert cue.shape == (1, 8, 8) and set(np.unique(cue)) == {-1.0, 1.0} and cue.sum() == 0
    assert abs(float(((protos[t] - protos[u]) * cue).sum())) < 1e-5

    def nearest_of(k: int) -> np.ndarray:
        return _nearest(source.images[source.labels == k], protos)

    assert (nearest_of(truth.helpful_source_class) == t).mean() > 0.8
    # harmful: filler images stamped with a strong cue of either polarity; fillers carry none
    harmful_cue = _cue(source.images[source.labels == truth.harmful_source_class], cue)
    assert (np.abs(harmful_cue) > 0.2).mean() > 0.9 and 0.3 < (harmful_cue > 0).mean() < 0.7
    for k in (truth.helpful_source_class, *truth.filler_source_classes):
        assert abs(_cue(source.images[source.labels == k], cue).mean()) < 0.05
    # the cue marks t (+) and u (-) in the target training split and is reversed at test time
    proto_cue = _cue(np.round(protos * 255), cue)  # the prototypes' own (common) projection
    for split, sign in ((data.target_train, 1.0), (data.target_test, -1.0)):
        amplitude = _cue(split.images, cue) - proto_cue[split.labels]
        assert (sign * amplitude[split.labels == t] > 0).mean() > 0.9
        assert (sign * amplitude[split.labels == u] < 0).mean() > 0.9
        others = ~np.isin(split.labels, [t, u])
        assert 0.2 < (amplitude[others] > 0).mean() < 0.8
    test_nearest = _nearest(data.target_test.images, protos)
    assert (test_nearest == data.target_test.labels).mean() > 0.8


def test_planted_problem_is_seeded():
    a, truth_a = planted_transfer_problem(3)
    b, truth_b = planted_transfer_problem(3)
    assert a.fingerprints() == b.fingerprints()
    assert (truth_a.target_class, truth_a.harmful_source_class) == (
        truth_b.target_class,
        truth_b.harmful_source_class,
    )
    assert planted_transfer_problem(4)[0].fingerprints() != a.fingerprints()
