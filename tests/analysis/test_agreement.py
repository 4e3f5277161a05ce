"""Rank agreement between the methods on constructed cases with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from transfer_influence.analysis.agreement import (
    AgreementTable,
    class_sums,
    experiment_agreement,
    rank_agreement,
)
from transfer_influence.config import load_config
from transfer_influence.errors import DataError
from transfer_influence.estimators.result import InfluenceResult
from transfer_influence.influence_functions.experiment import (
    InfluenceFunctionResult,
    example_names,
)
from transfer_influence.sweep.plan import SweepPlan

from ..sweep.conftest import write_sweep_config


def test_class_sums_match_a_loop():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    scores = rng.normal(size=40)
    expected = [scores[labels == c].sum() for c in range(6)]  # class 5 has no example: 0
    np.testing.assert_allclose(class_sums(scores, labels, 6), expected)
    with pytest.raises(DataError, match="one score per source example"):
        class_sums(scores[:-1], labels, 6)


def test_identical_and_reversed_rankings_with_exact_p_values():
    x = np.array([0.3, -1.0, 2.0, 0.1])
    rho, p, n, exact = rank_agreement(x, 10 * x + 1)
    # 4 classes: 2 of the 24 orderings reach |rho| = 1 (this one and its reverse)
    assert (rho, n, exact) == (1.0, 4, True) and p == pytest.approx(2 / 24)
    rho, p, n, exact = rank_agreement(x, -x)
    assert rho == -1.0 and p == pytest.approx(2 / 24)
    # the same by brute force over a less extreme pair
    y = np.array([0.0, -2.0, 1.0, 3.0])
    rho, p, _, _ = rank_agreement(x, y)
    from itertools import permutations

    from scipy import stats
    assert rho == pytest.approx(stats.spearmanr(x, y).statistic)
    null = [stats.spearmanr(x[list(o)], y).statistic for o in permutations(range(4))]
    assert p == pytest.approx(np.mean(np.abs(null) >= abs(rho) - 1e-12))


def test_many_classes_use_seeded_random_permutations():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    rho, p, n, exact = rank_agreement(x, x + 0.1 * rng.normal(size=30), seed=3)
    assert not exact and n == 30 and rho > 0.9 and p == pytest.approx(1 / 10000)
    noise = rng.normal(size=30)
    _, p_noise, _, _ = rank_agreement(x, noise, seed=3)
    assert p_noise == rank_agreement(x, noise, seed=3)[1] and p_noise > 0.01


def test_non_finite_and_constant_scores():
    rho, p, n, _ = rank_agreement(np.array([1.0, np.nan, 3.0, 4.0, 2.0]),
                                  np.array([1.0, 5.0, 3.0, np.inf, 2.0]))
    assert n == 3 and rho == pytest.approx(1.0)  # only the 3 classes both score
    rho, p, n, _ = rank_agreement(np.ones(5), np.arange(5.0))
    assert math.isnan(rho) and math.isnan(p) and n == 5
    with pytest.raises(DataError, match="one score per source class"):
        AgreementTable.compare(["a", "b"], {"x": np.zeros(3)})


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> SweepPlan:
    folder = tmp_path_factory.mktemp("agreement")
    return SweepPlan.from_config(load_config(write_sweep_config(Path(folder))))


def _influence_function(plan: SweepPlan, helpfulness: np.ndarray) -> InfluenceFunctionResult:
    """Example influences whose class sums are ``-helpfulness`` (spread unevenly over each
    class's examples, so only the sum carries the ranking)."""
    source = plan.data.source
    labels = np.asarray(source.labels)
    rng = np.random.default_rng(0)
    total = np.zeros(len(source))
    for c, value in enumerate(helpfulness):
        members = np.flatnonzero(labels == c)
        weights = rng.dirichlet(np.ones(members.size))
        noise = rng.normal(0, 5, members.size)
        total[members] = -value * weights + noise - noise.mean()  # sums to -value
    return InfluenceFunctionResult(example_names(source), total, np.zeros((len(source), 0)),
                                   np.arange(0))


def _sweep(plan: SweepPlan, overall: np.ndarray) -> InfluenceResult:
    target = plan.data.target_test
    units = len(overall)
    return InfluenceResult(np.repeat(overall[:, None], len(target), axis=1),
                           list(plan.data.source.class_names), np.asarray(target.labels),
                           list(target.class_names), "prob_correct", 16, np.full(units, 8),
                           np.full(units, 8))


def test_signs_are_aligned_so_equal_rankings_agree(plan):
    classes = plan.data.source.num_classes
    helpfulness = np.linspace(-1.0, 2.0, classes)
    rng = np.random.default_rng(2)
    helpfulness = rng.permutation(helpfulness)
    scored = _influence_function(plan, helpfulness)
    np.testing.assert_allclose(-class_sums(scored.total, plan.data.source.labels, classes),
                               helpfulness, atol=1e-9)
    same = experiment_agreement(plan, influence_function=scored,
                                sweep=_sweep(plan, 0.01 * helpfulness))
    (row,) = same.rows
    assert (row.first, row.second, row.classes) == ("influence function", "sweep", classes)
    assert row.rho == pytest.approx(1.0) and row.p_value < 0.1
    reversed_ = experiment_agreement(plan, influence_function=scored,
                                     sweep=_sweep(plan, -helpfulness))
    assert reversed_.rows[0].rho == pytest.approx(-1.0)
    assert set(same.missing) == {"lm", "fm"}


def test_missing_inputs_say_what_to_run(plan):
    table = experiment_agreement(plan, influence_function=None, config="tiny.toml")
    assert table.rows == [] and table.scores == {}
    assert table.missing == {
        "influence function": "transfer-influence influence-function tiny.toml",
        "sweep": "transfer-influence run tiny.toml",
        "lm": "transfer-influence prune tiny.toml --method lm",
        "fm": "transfer-influence prune tiny.toml --method fm",
    }
    classes = plan.data.source.num_classes
    only_sweep = experiment_agreement(plan, influence_function=None,
                                      sweep=_sweep(plan, np.arange(float(classes))))
    assert list(only_sweep.scores) == ["sweep"] and only_sweep.rows == []
    wrong = _sweep(plan, np.arange(float(classes)))
    wrong = InfluenceResult(wrong.influence, [f"x{i}" for i in range(classes)],
                            wrong.target_labels, wrong.target_class_names, "prob_correct", 16,
                            np.full(classes, 8), np.full(classes, 8))
    with pytest.raises(DataError, match="re-estimate"):
        experiment_agreement(plan, influence_function=None, sweep=wrong)
