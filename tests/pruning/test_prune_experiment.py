"""The pruning-ratio sweep: resume after a crash, merged results, and bad input."""

import numpy as np
import pytest

import transfer_influence.pruning.surrogate as surrogate_module
from transfer_influence.config import parse_config
from transfer_influence.counterfactual import retrain_seed
from transfer_influence.errors import ConfigError
from transfer_influence.models import build_model
from transfer_influence.pruning import PruningResult, run_pruning, train_surrogate
from transfer_influence.sweep.plan import SweepPlan

from .conftest import pruning_raw


class Crash(Exception):
    pass


def test_a_killed_pruning_run_resumes_without_retraining_finished_models(pruning_plan,
                                                                         monkeypatch):
    original = SweepPlan.train_models
    trained: list[int] = []

    def crashing(self, masks, seeds, *args, **options):
        if len(trained) == 2:
            raise Crash
        trained.append(len(seeds))
        return original(self, masks, seeds, *args, **options)

    monkeypatch.setattr(SweepPlan, "train_models", crashing)
    args = (pruning_plan, ["lm", "random-examples"], [0.25, 0.5], 3)
    with pytest.raises(Crash):
        run_pruning(*args, timing=False, quiet=True)
    first = sum(trained)
    assert first > 0

    def counting(self, masks, seeds, *args, **options):
        trained.append(len(seeds))
        return original(self, masks, seeds, *args, **options)

    monkeypatch.setattr(SweepPlan, "train_models", counting)
    resumed = run_pruning(*args, timing=False, quiet=True)
    total = 3 * (1 + 2 * 2)  # the reference + 2 methods x 2 ratios, 3 seeds each
    assert sum(trained) == total  # the crashed run's models were not trained again
    again = run_pruning(*args, timing=False, quiet=True)
    assert sum(trained) == total  # a finished run retrains nothing
    assert [row.accuracy for row in again.rows] == [row.accuracy for row in resumed.rows]


def test_results_merge_across_runs_and_refuse_other_seeds(pruning_plan, tmp_path):
    lm = run_pruning(pruning_plan, ["lm"], [0.5], 2, timing=False, quiet=True)
    rnd = run_pruning(pruning_plan, ["random"], [0.25, 0.5], 2, timing=False, quiet=True)
    merged = rnd.merged_into(lm)
    assert {(row.method, row.ratio) for row in merged.rows} == {
        ("lm", 0.5), ("random", 0.25), ("random", 0.5)}
    path = tmp_path / "prune.json"
    merged.save(path)
    loaded = PruningResult.load(path)
    assert loaded.rows == merged.rows and loaded.winning_ratio("fixed_feature", "lm") == 0.5
    other = run_pruning(pruning_plan, ["lm"], [0.5], 3, timing=False, quiet=True)
    with pytest.raises(ConfigError, match="used 2 seeds, this run 3"):
        other.merged_into(loaded)


def test_timing_measures_the_full_the_sweep_and_the_pruned_models(pruning_plan):
    result = run_pruning(pruning_plan, ["lm"], [0.5], 2, quiet=True)
    timing = result.timing
    assert timing["full_model_seconds"] > 0 and timing["pruned_model_seconds"]["0.5"] > 0
    assert timing["sweep_seconds"] == pytest.approx(16 * timing["sweep_model_seconds"])
    assert timing["timed_method"] == "lm" and timing["surrogate_seconds"] > 0


def test_a_surrogate_built_for_another_image_size_is_refused(pruning_plan, monkeypatch):
    def wrong_size(name, *, in_channels, image_size, num_classes, **options):
        return build_model(name, in_channels=in_channels, image_size=2 * image_size,
                           num_classes=num_classes, **options)

    monkeypatch.setattr(surrogate_module, "build_model", wrong_size)
    with pytest.raises(ConfigError, match=r"does not accept the data's images .*\[1, 8, 8\]"):
        train_surrogate(pruning_plan)
    assert not surrogate_module.surrogate_path(pruning_plan).exists()


def test_bad_transfer_mode_and_no_methods_fail_before_training(pruning_plan):
    with pytest.raises(ConfigError, match=r"needs a \[transfer.recipe\]"):
        run_pruning(pruning_plan, ["lm"], [0.5], 2, transfers=["finetune"], quiet=True)
    with pytest.raises(ConfigError, match="at least one pruning method"):
        run_pruning(pruning_plan, [], [0.5], 2, quiet=True)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        run_pruning(pruning_plan, ["lm"], [1.0], 2, quiet=True)
    with pytest.raises(ConfigError, match=r"unknown pruning method\(s\) \['lmm'\]"):
        run_pruning(pruning_plan, ["lm", "lmm"], [0.5], 2, quiet=True)
    assert not surrogate_module.surrogate_path(pruning_plan).exists()


def test_more_clusters_than_source_examples_fail_before_training(tmp_path):
    raw = pruning_raw(tmp_path / "sweep.zarr")
    raw["prune"]["clusters"] = 801
    plan = SweepPlan.from_config(parse_config(raw))
    with pytest.raises(ConfigError, match="clusters = 801 exceeds the 800 source examples"):
        run_pruning(plan, ["lm", "fm"], [0.5], 2, quiet=True)
    assert not surrogate_module.surrogate_path(plan).exists()


def test_class_and_example_masks_of_the_whole_source_train_the_same_model(pruning_plan):
    """The reference is trained once, under class units, and paired with example-level arms."""
    seeds = [5]
    by_class = pruning_plan.variant(unit="class").train_models(
        np.ones((1, pruning_plan.data.source.num_classes), bool), seeds)
    by_example = pruning_plan.variant(unit="example").train_models(
        np.ones((1, len(pruning_plan.data.source)), bool), seeds)
    np.testing.assert_array_equal(by_class.correct_logit, by_example.correct_logit)


def test_a_diverged_pruned_model_is_recorded_and_left_out_of_its_comparison(pruning_plan,
                                                                            monkeypatch):
    """Pruning retraining follows ``on_divergence = "record"``: seed 1 of every pruned arm is
    made to diverge; it is recorded, never retrained, and its row compares the other seeds."""
    original = SweepPlan.train_models
    diverging_seed = retrain_seed(pruning_plan.config.sweep.seed, 1)

    def train_models(self, masks, seeds, divergence=None, **options):
        outputs = original(self, masks, seeds, divergence, **options)
        for g, seed in enumerate(seeds):
            if seed == diverging_seed and not masks[g].all():
                divergence.step[g], divergence.last_loss[g] = 7, 2.5
        return outputs

    monkeypatch.setattr(SweepPlan, "train_models", train_models)
    result = run_pruning(pruning_plan, ["lm"], [0.5], 3, timing=False, quiet=True)
    (row,) = result.rows
    assert row.diverged_seeds == 1 and len(row.accuracy.accuracies) == 2
    assert len(result.reference["fixed_feature"].accuracies) == 3
    monkeypatch.setattr(SweepPlan, "train_models", lambda *a, **k: pytest.fail("retrained"))
    again = run_pruning(pruning_plan, ["lm"], [0.5], 3, timing=False, quiet=True)
    assert again.rows == result.rows


def test_both_transfer_modes_are_measured_when_the_config_can_fine_tune(tmp_path):
    raw = pruning_raw(tmp_path / "sweep.zarr")
    raw["transfer"]["recipe"] = {"epochs": 5, "lr": 0.01, "batch_size": 4}
    plan = SweepPlan.from_config(parse_config(raw))
    result = run_pruning(plan, ["lm"], [0.5], 2, timing=False, quiet=True)
    assert list(result.reference) == ["fixed_feature", "finetune"]
    assert [row.transfer for row in result.rows] == ["fixed_feature", "finetune"]
    assert result.rows[0].accuracy != result.rows[1].accuracy
