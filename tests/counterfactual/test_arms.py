"""Arms are pure functions of their inputs; intervals are Student-t intervals."""

import numpy as np
import pytest
from scipy import stats

from transfer_influence.counterfactual import (
    baseline_arm,
    group_arm,
    mean_interval,
    named_arm,
    random_arms,
    ranked_arms,
    retrain_seed,
)
from transfer_influence.errors import ConfigError


def test_ranked_arms_remove_the_lowest_or_highest_scores_and_skip_nan():
    scores = np.array([0.3, -0.5, np.nan, 0.1, -0.2, 0.9])
    bottom = ranked_arms("bottom", scores, [2, 1], seeds=3)
    assert [arm.k for arm in bottom] == [1, 2]
    assert bottom[1].removed == ((1, 4),) * 3
    top = ranked_arms("top", scores, [2], seeds=2)
    assert top[0].removed == ((0, 5),) * 2
    masks = top[0].masks(6)
    assert masks.shape == (2, 6) and masks.sum(axis=1).tolist() == [4, 4]
    assert not masks[:, [0, 5]].any()


def test_random_arms_are_reproducible_and_differ_between_seeds():
    first = random_arms(50, [5], seeds=8, sweep_seed=7)[0]
    again = random_arms(50, [5], seeds=8, sweep_seed=7)[0]
    assert first == again
    assert all(len(set(r)) == 5 for r in first.removed)
    assert len(set(first.removed)) > 1  # a fresh draw per seed
    assert random_arms(50, [5], seeds=8, sweep_seed=8)[0] != first


def test_baseline_and_named_arms():
    assert baseline_arm(3).masks(4).all()
    arm = named_arm(["a", "b", "c"], ["c", "a"], seeds=2)
    assert arm.removed == ((0, 2),) * 2 and arm.k == 2
    with pytest.raises(ConfigError, match="unknown source unit.*'zebra'"):
        named_arm(["a", "b", "c"], ["zebra"], seeds=2)
    with pytest.raises(ConfigError, match="keep at"):
        named_arm(["a", "b"], ["a", "b"], seeds=2)


def test_group_arm_removes_every_class_of_a_superclass():
    names = ["fashion/Bag", "mnist/3", "mnist/7", "c100/vehicles_1/bus", "c100/fruit/apple"]
    assert group_arm(names, ["mnist"], seeds=2).removed == ((1, 2),) * 2
    assert group_arm(names, ["vehicles_1", "fashion"], seeds=1).removed == ((0, 3),)
    assert group_arm(names, ["c100"], seeds=1).k == 2
    with pytest.raises(ConfigError, match="no source unit belongs to group.*'Bag'.*fashion"):
        group_arm(names, ["Bag"], seeds=2)


@pytest.mark.parametrize("ks", [[0], [6], []])
def test_bad_k_is_rejected(ks):
    with pytest.raises(ConfigError, match="k"):
        ranked_arms("bottom", np.arange(6.0), ks, seeds=2)


def test_retrain_seeds_are_shared_across_arms_and_distinct_across_r():
    assert retrain_seed(0, 3) == retrain_seed(0, 3)
    assert len({retrain_seed(0, r) for r in range(20)}) == 20


def test_mean_interval_matches_scipy():
    values = np.array([0.61, 0.64, 0.58, 0.70, 0.66])
    mean, low, high = mean_interval(values)
    expected = stats.t.interval(0.95, 4, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(expected)
