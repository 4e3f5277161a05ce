"""Retraining arms: content-addressed stores, sharing between commands, resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from transfer_influence.config import load_config
from transfer_influence.counterfactual import (
    Arm,
    baseline_arm,
    correct_per_seed,
    paired_seeds,
    retrain,
    retrain_seed,
    run_counterfactual,
)
from transfer_influence.errors import ConfigError, StoreError
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.store import SweepStore
from transfer_influence.training import trainer

from ..sweep.conftest import PLANTED_DIVERGING_UNIT, plant_divergence, write_sweep_config


@pytest.fixture()
def counting_plan(tmp_path, monkeypatch):
    """The tiny planted experiment's plan, counting how many models it trains."""
    plan = SweepPlan.from_config(load_config(write_sweep_config(tmp_path, group_size=3)))
    trained = []
    original = SweepPlan.train_models

    def counting(self, masks, seeds, divergence=None, **options):
        trained.append(len(seeds))
        return original(self, masks, seeds, divergence, **options)

    monkeypatch.setattr(SweepPlan, "train_models", counting)
    return plan, trained


def test_arm_models_equal_models_trained_directly(counting_plan):
    plan, _ = counting_plan
    arm = Arm("culprit", 1, ((0,), (3,)))
    store, = retrain(plan, [arm], quiet=True)
    direct = plan.train_models(arm.masks(len(plan.unit_names)),
                               [retrain_seed(plan.config.sweep.seed, r) for r in range(2)])
    np.testing.assert_array_equal(store.read_masks(), arm.masks(len(plan.unit_names)))
    np.testing.assert_array_equal(store.read_outputs().correct_logit, direct.correct_logit)


def test_identical_arms_are_trained_once(counting_plan):
    plan, trained = counting_plan
    first = retrain(plan, [baseline_arm(4), Arm("top", 1, ((2,),) * 4)], quiet=True)
    assert sum(trained) == 8 and max(trained) <= 3  # in groups of group_size
    again = retrain(plan, [baseline_arm(4), Arm("top", 2, ((2, 5),) * 4)], quiet=True)
    assert sum(trained) == 12  # the baseline's 4 models were reused
    assert again[0].path == first[0].path and again[1].path != first[1].path


def test_equal_steps_arms_train_as_long_as_the_full_source(counting_plan, monkeypatch):
    """With equal_steps, a model without 3 of the 8 source classes takes the optimisation steps
    of full-source pretraining; the baseline's models are the same either way and shared."""
    plan, trained = counting_plan
    steps: list[int] = []
    original_call = trainer._Batcher.__call__

    def counting_batches(self, streams):
        steps.append(len(streams))
        return original_call(self, streams)

    monkeypatch.setattr(trainer._Batcher, "__call__", counting_batches)
    recipe, full = plan.config.pretrain, len(plan.data.source)
    arm = Arm("bottom", 3, ((0, 2, 5),) * 2)
    kept = int(arm.masks(len(plan.unit_names))[0].sum()) * int(plan.data.source.class_counts()[0])
    seeds = [retrain_seed(plan.config.sweep.seed, r) for r in range(2)]
    masks = arm.masks(len(plan.unit_names))[:1]
    plan.train_models(masks, seeds[:1])
    assert len(steps) == recipe.total_steps(kept) < recipe.total_steps(full)
    steps.clear()
    plan.train_models(masks, seeds[:1], equal_steps=True)
    assert len(steps) == recipe.total_steps(full)

    fewer = retrain(plan, [baseline_arm(2), arm], quiet=True)
    assert sum(trained) == 2 + 4  # the two direct models above, then 2 + 2
    equal = retrain(plan, [baseline_arm(2), arm], equal_steps=True, quiet=True)
    assert sum(trained) == 6 + 2  # only the arm's models: the baseline is shared
    assert equal[0].path == fewer[0].path and equal[1].path != fewer[1].path
    direct = plan.train_models(arm.masks(len(plan.unit_names)), seeds, equal_steps=True)
    np.testing.assert_array_equal(equal[1].read_outputs().correct_logit, direct.correct_logit)
    assert not np.array_equal(equal[1].read_outputs().correct_logit,
                              fewer[1].read_outputs().correct_logit)
    result = run_counterfactual(plan, "classes", [3], 2, classes=["filler0", "filler1"],
                                equal_steps=True, quiet=True)
    assert result.equal_steps and result.arms[0].k == 2


def test_counterfactual_validates_target_class_and_strategy(counting_plan):
    plan, trained = counting_plan
    with pytest.raises(ConfigError, match="unknown target class 'nope'"):
        run_counterfactual(plan, "random", [1], 2, target_class="nope", quiet=True)
    with pytest.raises(ConfigError, match="needs influence scores"):
        run_counterfactual(plan, "bottom", [1], 2, quiet=True)
    with pytest.raises(ConfigError, match="seeds must be >= 2"):
        run_counterfactual(plan, "random", [1], 1, quiet=True)
    assert trained == []


def _completed(folder: Path) -> int:
    total = 0
    for path in folder.glob("*.zarr"):
        try:
            total += SweepStore.open(path, read_only=True).num_completed
        except (StoreError, ValueError, OSError):  # a store still being created
            pass
    return total


def test_counterfactual_resumes_after_sigkill(tmp_path, monkeypatch):
    config_path = write_sweep_config(tmp_path, store="cf.zarr", group_size=1, epochs=4)
    command = [sys.executable, "-m", "transfer_influence", "counterfactual", str(config_path),
               "--remove", "random", "--k", "1,2", "--seeds", "4", "--quiet"]
    process = subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    retrain_dir = tmp_path / "cf.zarr.retrain"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if retrain_dir.exists() and _completed(retrain_dir) >= 3:
            break
        time.sleep(0.02)
    assert process.poll() is None, f"ended before the kill: {process.stderr.read()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_at_kill = _completed(retrain_dir)
    assert 3 <= done_at_kill < 12

    trained = []
    original = SweepPlan.train_models
    monkeypatch.setattr(SweepPlan, "train_models",
                        lambda self, m, s, d=None, **o: trained.append(len(s))
                        or original(self, m, s, d, **o))
    plan = SweepPlan.from_config(load_config(config_path))
    resumed = run_counterfactual(plan, "random", [1, 2], 4, quiet=True)
    assert sum(trained) == 12 - done_at_kill

    (tmp_path / "fresh").mkdir()
    fresh_config = load_config(write_sweep_config(tmp_path / "fresh", store="cf.zarr",
                                                  group_size=1, epochs=4))
    fresh = run_counterfactual(SweepPlan.from_config(fresh_config), "random", [1, 2], 4,
                               quiet=True)
    assert json.dumps(resumed.baseline.accuracies) == json.dumps(fresh.baseline.accuracies)
    for a, b in zip(resumed.arms, fresh.arms):
        assert a.removed == b.removed and a.accuracies == b.accuracies
    stores = sorted(retrain_dir.glob("*.zarr"))
    for path in stores:
        mine = SweepStore.open(path, read_only=True)
        other = SweepStore.open(tmp_path / "fresh" / "cf.zarr.retrain" / path.name, read_only=True)
        np.testing.assert_array_equal(correct_per_seed(mine), correct_per_seed(other))
        np.testing.assert_array_equal(mine.read_outputs().logsumexp,
                                      other.read_outputs().logsumexp)


def test_ray_runner_retrains_the_same_models(tmp_path):
    ray = pytest.importorskip("ray")
    arms = [baseline_arm(3), Arm("top", 1, ((2,),) * 3), Arm("culprit", 1, ((0,), (4,), (5,)))]
    local_plan = SweepPlan.from_config(load_config(write_sweep_config(tmp_path, group_size=2)))
    local = retrain(local_plan, arms, quiet=True)
    (tmp_path / "ray").mkdir()
    ray_plan = SweepPlan.from_config(load_config(write_sweep_config(tmp_path / "ray",
                                                                    group_size=2)))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = retrain(ray_plan, arms, quiet=True, runner="ray")
    finally:
        ray.shutdown()
    for a, b in zip(local, remote):
        assert b.completed().all()
        np.testing.assert_array_equal(a.read_masks(), b.read_masks())
        np.testing.assert_array_equal(a.read_outputs().correct_logit,
                                      b.read_outputs().correct_logit)
    with pytest.raises(ConfigError, match="runner must be"):
        retrain(ray_plan, arms, runner="slurm")


def test_retraining_records_diverged_seeds_and_never_retries_them(counting_plan, monkeypatch):
    """Seeds 1 and 3 keep the planted diverging unit: recorded diverged in the arm's store, the
    others completed; a rerun trains nothing, and a counterfactual compares only seeds completed
    in every arm (here none, since the baseline keeps the unit everywhere: a clear error)."""
    plant_divergence(monkeypatch)
    plan, trained = counting_plan
    plan = SweepPlan.from_config(plan.config)  # rebuilt with the planted data
    other = 1 + PLANTED_DIVERGING_UNIT
    arm = Arm("planted", 1, ((PLANTED_DIVERGING_UNIT,), (other,), (PLANTED_DIVERGING_UNIT,),
                             (other,)))
    store, = retrain(plan, [arm], quiet=True)
    assert store.diverged().tolist() == [False, True, False, True]
    assert store.completed().tolist() == [True, False, True, False]
    assert correct_per_seed(store).shape[0] == 2
    assert paired_seeds([store]).tolist() == [0, 2]
    before = sum(trained)
    retrain(plan, [arm], quiet=True)
    assert sum(trained) == before
    with pytest.raises(StoreError, match="no seed completed in every arm"):
        paired_seeds([store, retrain(plan, [baseline_arm(4)], quiet=True)[0]])
