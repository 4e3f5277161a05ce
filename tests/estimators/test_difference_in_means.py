"""Difference-in-means: brute-force agreement for every variant, streaming, planted effects."""

import numpy as np
import pytest

from transfer_influence.errors import DataError
from transfer_influence.estimators import DifferenceInMeans, difference_in_means
from transfer_influence.outputs import OUTPUT_VARIANTS, TargetOutputs
from transfer_influence.sweep.masks import subset_masks


def brute_force(masks, outputs):
    """The definition, one unit and one model at a time, in float64."""
    models, units = masks.shape
    influence = np.zeros((units, outputs.shape[1]))
    for unit in range(units):
        with_rows = [outputs[i] for i in range(models) if masks[i, unit]]
        without_rows = [outputs[i] for i in range(models) if not masks[i, unit]]
        influence[unit] = np.mean(with_rows, axis=0) - np.mean(without_rows, axis=0)
    return influence


@pytest.fixture(scope="module")
def sweep():
    rng = np.random.default_rng(0)
    models, units, targets, classes = 120, 9, 15, 4
    masks = subset_masks(7, range(models), units, 0.5)
    labels = rng.integers(0, classes, size=targets)
    logits = rng.normal(scale=2.0, size=(models, targets, classes)).astype(np.float32)
    return masks, TargetOutputs.from_logits(logits, labels)


@pytest.mark.parametrize("variant", OUTPUT_VARIANTS)
def test_matches_brute_force_for_every_variant(sweep, variant):
    masks, outputs = sweep
    values = outputs.variant(variant)
    np.testing.assert_allclose(
        difference_in_means(masks, values), brute_force(masks, values), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("chunk", [1, 7, 50, 1000])
def test_streaming_equals_one_block(sweep, chunk):
    masks, outputs = sweep
    values = outputs.variant("margin")
    whole = difference_in_means(masks, values, chunk_models=len(masks))
    np.testing.assert_allclose(difference_in_means(masks, values, chunk_models=chunk), whole,
                               rtol=1e-5, atol=1e-5)


def test_accumulator_reports_counts(sweep):
    masks, outputs = sweep
    accumulator = DifferenceInMeans().update(masks[:50], outputs.variant("margin")[:50])
    accumulator.update(masks[50:], outputs.variant("margin")[50:])
    assert accumulator.num_models == len(masks)
    np.testing.assert_array_equal(accumulator.counts_with, masks.sum(axis=0))
    np.testing.assert_array_equal(accumulator.counts_without, (~masks).sum(axis=0))


def test_large_common_offset_keeps_precision():
    rng = np.random.default_rng(1)
    masks = subset_masks(0, range(3000), 10, 0.5)
    values = (1000.0 + rng.normal(scale=0.01, size=(3000, 8))).astype(np.float32)
    exact = brute_force(masks, values.astype(np.float64))
    np.testing.assert_allclose(difference_in_means(masks, values, chunk_models=512), exact,
                               atol=2e-5)


def test_planted_effect_is_recovered():
    rng = np.random.default_rng(2)
    models, units, targets = 20000, 20, 5
    masks = subset_masks(3, range(models), units, 0.5)
    weights = rng.normal(size=(units, targets))
    values = masks @ weights + rng.normal(scale=0.1, size=(models, targets))
    # With exactly k of U units kept, dropping unit c makes every other unit d slightly more
    # likely (k/(U-1) vs (k-1)/(U-1)), so the expected influence is w_c - sum_{d!=c} w_d/(U-1).
    expected = weights - (weights.sum(axis=0) - weights) / (units - 1)
    np.testing.assert_allclose(difference_in_means(masks, values), expected, atol=0.15)


def test_unit_without_comparison_is_nan_with_warning():
    masks = subset_masks(0, range(40), 6, 0.5)
    masks[:, 2] = True
    values = np.random.default_rng(0).normal(size=(40, 3))
    accumulator = DifferenceInMeans().update(masks, values)
    with pytest.warns(RuntimeWarning, match="kept by every model or by none"):
        influence = accumulator.result()
    assert np.isnan(influence[2]).all() and np.isfinite(np.delete(influence, 2, axis=0)).all()
    assert accumulator.counts_without[2] == 0


def test_invalid_inputs():
    masks = subset_masks(0, range(10), 4, 0.5)
    values = np.zeros((10, 3))
    with pytest.raises(DataError, match="bool"):
        difference_in_means(masks.astype(np.float32), values)
    with pytest.raises(DataError, match="same number of models"):
        difference_in_means(masks, values[:9])
    with pytest.raises(DataError, match="NaN"):
        difference_in_means(masks, values + np.nan)
    with pytest.raises(DataError, match="same sweep"):
        DifferenceInMeans().update(masks, values).update(masks, values[:, :2])
    with pytest.raises(DataError, match="no models"):
        DifferenceInMeans().result()
