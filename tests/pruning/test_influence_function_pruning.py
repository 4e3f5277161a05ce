"""Data cleansing by multi-stage influence (Chen et al. 2020, section 4.2) as a pruning method:
``influence-function`` prunes the examples the saved influence-function run calls most harmful,
``influence-function-reversed`` the most helpful, mapped to the pruning plan's example units."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transfer_influence.cli import app
from transfer_influence.config import load_config
from transfer_influence.errors import ConfigError, StoreError
from transfer_influence.influence_functions.experiment import (
    InfluenceArgs,
    run_influence_function,
)
from transfer_influence.pruning import pruned_units, run_pruning, score_source, train_surrogate
from transfer_influence.sweep.plan import SweepPlan

from ..sweep.conftest import write_sweep_config

MISLABELED = 7
"""Source example whose label the planted problem flips to another source class."""


def plant_mislabeled_example(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every plan built afterwards has source example ``MISLABELED`` relabelled to the next
    source class."""
    original_from_config = SweepPlan.from_config.__func__

    def from_config(cls, config):
        plan = original_from_config(cls, config)
        source = plan.data.source
        labels = np.array(source.labels).copy()
        labels[MISLABELED] = (labels[MISLABELED] + 1) % source.num_classes
        plan.data = dataclasses.replace(plan.data,
                                        source=dataclasses.replace(source, labels=labels))
        return plan

    monkeypatch.setattr(SweepPlan, "from_config", classmethod(from_config))


def test_cleansing_prunes_the_most_harmful_examples_of_the_saved_run(tmp_path, monkeypatch):
    plant_mislabeled_example(monkeypatch)
    config = load_config(write_sweep_config(tmp_path, epochs=1))
    result = run_influence_function(config, InfluenceArgs(
        config.config_hash(), tests=1, damping=1e-2, cg_tol=1e-3, train_tol=1e-4))
    plan = SweepPlan.from_config(config)
    assert result.unit_names == plan.variant(unit="example").unit_names

    surrogate = train_surrogate(plan)
    ratio, k = 0.05, round(0.05 * len(plan.data.source))
    harmful = score_source(plan, "influence-function", surrogate)
    removed = pruned_units(harmful.scores, ratio, [0])
    names = plan.variant(unit="example").unit_names
    assert {names[i] for i in removed} == {n for n, _ in result.top(k, harmful=True)}
    assert MISLABELED in removed  # the planted mislabeled example is cleansed away
    helpful = pruned_units(score_source(plan, "influence-function-reversed", surrogate).scores,
                           ratio, [0])
    assert {names[i] for i in helpful} == {n for n, _ in result.top(k, harmful=False)}
    assert MISLABELED not in helpful

    pruning = run_pruning(plan, ["influence-function", "influence-function-reversed"], [ratio],
                          seeds=2, timing=False, quiet=True)
    assert [row.pruned_units for row in pruning.rows] == [k, k]
    assert all(row.kept_fraction == 1 - k / len(plan.data.source) for row in pruning.rows)
    saved = pruning.methods["influence-function"]["influence_function"]
    assert saved["config_hash"] == config.config_hash() and saved["damping"] == 1e-2


def test_missing_or_foreign_influence_scores_are_refused_before_training(tmp_path):
    path = write_sweep_config(tmp_path, epochs=1)
    runner = CliRunner()
    result = runner.invoke(app, ["prune", str(path), "--method", "influence-function",
                                 "--ratios", "0.1", "--seeds", "2"])
    assert result.exit_code == 1
    assert "run `transfer-influence influence-function CONFIG`" in result.output
    assert not list(tmp_path.glob("*.retrain")) and not list(tmp_path.glob("*surrogate*"))

    config = load_config(path)
    args = config.artifact_path("influence-function.args.json")
    args.write_text(json.dumps(dataclasses.asdict(InfluenceArgs("0" * 16))))
    plan = SweepPlan.from_config(config)
    with config.artifact_path("influence-function.scores.npz").open("wb") as file:
        np.savez(file, total=np.zeros(len(plan.data.source)), per_test=np.zeros((0, 0)),
                 tests=np.zeros(0))
    with pytest.raises(StoreError, match="another configuration"):
        run_pruning(plan, ["influence-function-reversed"], [0.1], seeds=2, quiet=True)
    args.write_text(json.dumps(dataclasses.asdict(InfluenceArgs(config.config_hash()))))
    with config.artifact_path("influence-function.scores.npz").open("wb") as file:
        np.savez(file, total=np.zeros(3), per_test=np.zeros((3, 0)), tests=np.zeros(0))
    with pytest.raises(StoreError, match="scores 3 pretraining examples"):
        run_pruning(plan, ["influence-function"], [0.1], seeds=2, quiet=True)
    config.artifact_path("influence-function.scores.npz").unlink()
    with pytest.raises(ConfigError, match="no saved influence-function scores"):
        run_pruning(plan, ["influence-function"], [0.1], seeds=2, quiet=True)
    assert not Path(f"{config.store_path()}.retrain").exists()
