"""Subset masks: exact kept count, purity and validation."""

import numpy as np
import pytest

from transfer_influence.errors import ConfigError
from transfer_influence.sweep.masks import kept_count, subset_mask, subset_masks


@pytest.mark.parametrize(("units", "alpha"), [(10, 0.5), (7, 0.5), (1000, 0.37), (3, 0.34)])
def test_exact_kept_count(units, alpha):
    expected = round(alpha * units)
    masks = subset_masks(0, range(50), units, alpha)
    assert masks.dtype == bool and masks.shape == (50, units)
    assert (masks.sum(axis=1) == expected).all()


def test_pure_function_of_seed_and_index():
    first = subset_mask(3, 17, 100, 0.5)
    assert np.array_equal(first, subset_mask(3, 17, 100, 0.5))
    # Independent of which other models are requested alongside, and of their order.
    assert np.array_equal(subset_masks(3, [17], 100, 0.5)[0], first)
    assert np.array_equal(subset_masks(3, [5, 99, 17, 0], 100, 0.5)[2], first)


def test_different_models_and_seeds_differ():
    masks = subset_masks(0, range(20), 100, 0.5)
    assert len({row.tobytes() for row in masks}) == 20
    assert not np.array_equal(subset_mask(0, 1, 100, 0.5), subset_mask(1, 1, 100, 0.5))


def test_every_unit_kept_about_alpha_of_the_time():
    masks = subset_masks(1, range(2000), 20, 0.5)
    assert np.allclose(masks.mean(axis=0), 0.5, atol=0.05)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.2, 1.5])
def test_alpha_outside_open_interval(alpha):
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        subset_mask(0, 0, 10, alpha)


@pytest.mark.parametrize(("units", "alpha"), [(10, 0.01), (10, 0.99)])
def test_kept_count_must_leave_units_on_both_sides(units, alpha):
    with pytest.raises(ConfigError, match="at least 1"):
        kept_count(units, alpha)


def test_too_few_units_and_negative_index():
    with pytest.raises(ConfigError, match="num_units"):
        subset_mask(0, 0, 1, 0.5)
    with pytest.raises(ConfigError, match="non-negative"):
        subset_mask(0, -1, 10, 0.5)
