"""Failure debugging: picking failures, and a real retraining run on the tiny planted sweep."""

import numpy as np

from transfer_influence.analysis import debug_failures, load_failures, pick_failures, save_failures
from transfer_influence.config import load_config
from transfer_influence.estimators import estimate_influence
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import run_local

from ..sweep.conftest import write_sweep_config


def test_pick_failures_takes_mostly_wrong_examples_with_the_clearest_culprit():
    correct = np.array([[1, 0, 0, 1, 0], [1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=bool)
    influence = np.array([[0.1, -0.2, -0.9, 0.0, -0.5], [0.0, -0.1, 0.2, -0.8, -0.6]])
    # Examples 1, 2 and 4 are wrong in most seeds; 3 is right in 2 of 3 seeds.
    assert pick_failures(correct, influence, 2) == [2, 4]
    assert pick_failures(correct, influence, 5) == [2, 4, 1]


def test_debug_failures_retrains_without_each_culprit(tmp_path):
    config = load_config(write_sweep_config(tmp_path, num_models=16, group_size=8))
    result = estimate_influence(run_local(config, quiet=True))
    plan = SweepPlan.from_config(config)
    failures = debug_failures(plan, result, count=2, seeds=3, quiet=True)
    assert 1 <= len(failures) <= 2
    for f in failures:
        column = result.influence[:, f.target_index]
        assert f.culprit == result.unit_names[int(np.nanargmin(column))]
        assert f.culprit_score == np.nanmin(column)
        assert f.baseline_correct < 0.5 and f.true_class != f.predicted_class
        assert all(x in np.arange(4) / 3 for x in (f.fixed_by_removal, f.fixed_by_random))
    save_failures(tmp_path / "f.json", failures)
    assert load_failures(tmp_path / "f.json") == failures
