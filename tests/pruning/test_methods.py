"""Every pruning method through the ratio sweep, and label-needing methods refused when the
surrogate treats the source as unlabelled (a self-supervised surrogate)."""

import numpy as np
import pytest

from transfer_influence.config import parse_config
from transfer_influence.errors import ConfigError
from transfer_influence.pruning import (
    el2n_scores,
    feature_mapping_scores,
    label_mapping_scores,
    run_pruning,
    score_source,
    train_surrogate,
)
from transfer_influence.pruning.scores import baseline_training
from transfer_influence.sweep.plan import SweepPlan

from .conftest import pruning_raw


def test_example_level_baselines_prune_the_same_fraction_of_examples(pruning_plan):
    result = run_pruning(pruning_plan, ["el2n", "grand", "forgetting", "moderate"], [0.25],
                         seeds=2, timing=False, quiet=True)
    for row in result.rows:
        assert row.pruned_units == 200 and row.kept_fraction == 0.75
        assert result.methods[row.method]  # each method's settings are saved
    training = result.methods["el2n"]["training"]
    assert training["recipe"]["epochs"] == 2.0 and training["seeds"] == [0, 1]


def test_el2n_method_is_the_baseline_score_under_the_saved_training(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    scored = score_source(pruning_plan, "el2n", surrogate)
    direct = el2n_scores(pruning_plan.data.source, baseline_training(pruning_plan, surrogate))
    np.testing.assert_array_equal(scored.scores, direct)
    assert scored.level == "example" and scored.num_units == len(pruning_plan.data.source)


@pytest.fixture()
def unlabelled_plan(tmp_path) -> SweepPlan:
    raw = pruning_raw(tmp_path / "sweep.zarr")
    raw["prune"]["surrogate"] = {"pretrain": {"epochs": 5, "lr": 0.05, "batch_size": 32,
                                              "objective": "simclr"}}
    return SweepPlan.from_config(parse_config(raw))


@pytest.mark.parametrize("method", ["lm", "lm-reversed", "el2n", "grand", "forgetting",
                                    "moderate"])
def test_label_methods_are_refused_with_a_self_supervised_surrogate(unlabelled_plan, method):
    surrogate = train_surrogate(unlabelled_plan)
    with pytest.raises(ConfigError, match=f"the '{method}' score needs the source labels"):
        score_source(unlabelled_plan, method, surrogate)


def test_fm_runs_on_a_self_supervised_surrogate(unlabelled_plan):
    surrogate = train_surrogate(unlabelled_plan)
    fm = score_source(unlabelled_plan, "fm", surrogate)
    assert fm.level == "cluster" and fm.scores.sum() == len(unlabelled_plan.data.target_train)


def test_multi_target_lm_and_fm_sum_each_targets_normalised_counts(pruning_plan):
    surrogate = train_surrogate(pruning_plan)
    first, second = pruning_plan.data.target_train, pruning_plan.data.target_test
    lm = score_source(pruning_plan, "lm", surrogate, extra_targets=[second])
    expected = (label_mapping_scores(surrogate, first) / len(first)
                + label_mapping_scores(surrogate, second) / len(second))
    np.testing.assert_allclose(lm.scores, expected)
    assert lm.method == "lm[2 targets]" and len(lm.settings["counts"]) == 2
    fm = score_source(pruning_plan, "fm", surrogate, extra_targets=[second])
    single = [feature_mapping_scores(surrogate, pruning_plan.data.source, t, clusters=8, seed=0)
              for t in (first, second)]
    np.testing.assert_allclose(fm.scores, single[0].scores / len(first)
                               + single[1].scores / len(second))
    assert score_source(pruning_plan, "el2n", surrogate, extra_targets=[second]).method == "el2n"
