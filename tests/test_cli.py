"""The command line: stages end to end on a tiny planted sweep, and clear errors."""

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from transfer_influence.cli import DIVERGED_EXIT, app
from transfer_influence.config import load_config
from transfer_influence.outputs import TargetOutputs
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.store import SweepStore

from .sweep.conftest import PLANTED_DIVERGING_UNIT, plant_divergence, write_sweep_config

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_run_estimate_top_status(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=6)
    result = invoke("run", config, "--quiet")
    assert result.exit_code == 0, result.output
    assert "6/6 models complete" in result.output

    result = invoke("status", config)
    assert result.exit_code == 0 and "6/6 models complete" in result.output

    result = invoke("estimate", config)
    assert result.exit_code == 0, result.output
    assert "from 6 of 6 models" in result.output
    saved = tmp_path / "sweep.zarr.influence-prob_correct.npz"
    assert saved.exists()

    result = invoke("estimate", config)  # never overwritten silently
    assert result.exit_code == 1 and "already exists" in result.output

    result = invoke("top", config, "--k", "3", "--target-class", "target0", "--json")
    assert result.exit_code == 0, result.output
    table = json.loads(result.output)
    assert table["target_class"] == "target0" and len(table["helpful"]) == 3
    scores = [row["score"] for row in table["helpful"]]
    assert scores == sorted(scores, reverse=True)


def test_bad_config_fails_cleanly(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[data]\nsuite = "planted"\n[pretrain]\nepochs = 1\nlr = 0.1\n'
                   '[sweep]\nnum_models = 4\nmodels_per_group = 2\n')
    result = invoke("run", bad)
    assert result.exit_code == 1
    assert "sweep.models_per_group: unknown key" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_store_of_another_config_is_refused_and_untouched(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=4)
    assert invoke("run", config, "--quiet").exit_code == 0
    before = SweepStore.open(tmp_path / "sweep.zarr").read_outputs().correct_logit.copy()
    other = write_sweep_config(tmp_path, num_models=4, epochs=3)  # same store path, new recipe
    result = invoke("run", other, "--quiet")
    assert result.exit_code == 1 and "another configuration" in result.output
    after = SweepStore.open(tmp_path / "sweep.zarr").read_outputs().correct_logit
    assert (before == after).all()


def test_unknown_target_class_is_named(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=4)
    assert invoke("run", config, "--quiet").exit_code == 0
    result = invoke("top", config, "--target-class", "zebra")
    assert result.exit_code == 1
    assert "unknown target class 'zebra'" in result.output and "target0" in result.output


def test_missing_store_says_to_run_first(tmp_path: Path):
    result = invoke("status", write_sweep_config(tmp_path))
    assert result.exit_code == 1 and "run the sweep first" in result.output


def test_analysis_commands_on_a_class_sweep(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=8, group_size=8)
    assert invoke("run", config, "--quiet").exit_code == 0

    result = invoke("counterfactual", config, "--remove", "bottom", "--k", "1,2", "--seeds", "2",
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert "best k =" in result.output
    saved = json.loads((tmp_path / "sweep.zarr.counterfactual-bottom.json").read_text())
    assert [arm["k"] for arm in saved["arms"]] == [1, 2] and saved["seeds"] == 2

    result = invoke("project", config, "--examples", "0,3", "--k", "2", "--json")
    assert result.exit_code == 0, result.output
    projections = json.loads(result.output)
    assert [p["target_index"] for p in projections] == [0, 3]
    assert all(len(p["sources"]) == 2 for p in projections)

    result = invoke("debug", config, "--examples", "1", "--seeds", "2", "--quiet")
    assert result.exit_code == 0, result.output
    failures = json.loads((tmp_path / "sweep.zarr.failures.json").read_text())
    assert failures[0]["target_index"] == 1 and failures[0]["seeds"] == 2

    result = invoke("leakage", config)
    assert result.exit_code == 1 and "unit = 'example'" in result.output


def test_analysis_commands_reject_bad_options(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=4)
    for args, message in [
        (("--remove", "worst"), "choose bottom, top, random"),
        (("--remove", "classes="), "choose bottom, top, random"),
        (("--k", "1,x"), "comma-separated integers"),
        (("--remove", "classes=filler0,zebra", "--seeds", "2"), "unknown source unit"),
        (("--remove", "random", "--seeds", "1"), "seeds must be >= 2"),
    ]:
        result = invoke("counterfactual", config, *args, "--quiet")
        assert result.exit_code != 0 and message in result.output, (args, result.output)
    assert not (tmp_path / "sweep.zarr.retrain").exists()  # nothing trained


@pytest.mark.filterwarnings("ignore:.*kept by every model or by none")  # 8 models, 480 units
def test_leakage_on_an_example_sweep(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=8, group_size=8, unit="example")
    assert invoke("run", config, "--quiet").exit_code == 0
    result = invoke("leakage", config, "--targets", "2", "--k", "3", "--pixel-check", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found[0]["target_index"] == 2
    assert len(found[0]["leaks"]) == 3 and len(found[0]["misleading"]) == 3
    assert all(-1 <= c["similarity"] <= 1 for c in found[0]["leaks"])


def test_datamodel_estimates_through_the_cli(tmp_path: Path):
    config = write_sweep_config(tmp_path, num_models=64, group_size=32, epochs=1)
    assert invoke("run", config, "--quiet").exit_code == 0
    result = invoke("estimate", config, "--method", "ridge")
    assert result.exit_code == 0, result.output
    assert "ridge datamodel weights" in result.output and "held-out linear datamodeling" in result.output
    assert (tmp_path / "sweep.zarr.datamodel-ridge-prob_correct.npz").exists()
    result = invoke("top", config, "--method", "ridge", "--k", "2", "--json")
    assert result.exit_code == 0 and "ridge" in json.loads(result.output)["variant"]
    result = invoke("top", config, "--method", "ols")
    assert result.exit_code != 0 and "choose one of dim, ridge, lasso" in result.output
    # --device: where ridge datamodels are fitted; an unavailable device is refused before work
    saved = tmp_path / "sweep.zarr.datamodel-ridge-prob_correct.npz"
    before = saved.stat().st_mtime_ns
    for command in ("estimate", "diagnose", "top", "project", "leakage", "report"):
        result = invoke(command, config, "--device", "cuda:99", "--overwrite"
                        ) if command == "estimate" else invoke(command, config, "--device", "cuda:99")
        assert result.exit_code == 1 and "'cuda:99' is not available" in result.output, command
    assert saved.stat().st_mtime_ns == before
    result = invoke("estimate", config, "--method", "ridge", "--device", "cpu", "--overwrite")
    assert result.exit_code == 0, result.output


def test_diagnose_says_pure_noise_needs_more_models(tmp_path: Path):
    """A store whose outputs are pure noise (written directly, no training): the held-out
    datamodel score is near zero and the verdict asks for more models."""
    config_path = write_sweep_config(tmp_path, num_models=300)
    plan = SweepPlan.from_config(load_config(config_path))
    store = plan.open_store()
    rng = np.random.default_rng(0)
    indices = np.arange(store.num_models)
    logits = rng.standard_normal((store.num_models, store.num_targets, 4)).astype(np.float32)
    store.write_models(indices, plan.masks(indices),
                       TargetOutputs.from_logits(logits, store.target_labels))
    result = invoke("diagnose", config_path, "--replicates", "30")
    assert result.exit_code == 0, result.output
    assert "Train more models" in result.output
    # The exact steps to get there (noise fails several checks: four times the models), and
    # following them grows the store, keeping the models already trained.
    assert (f"set num_models = 1200 in the [sweep] table of {config_path} and run:\n"
            f"  transfer-influence run {config_path}\n") in result.output
    config_path.write_text(config_path.read_text().replace("num_models = 300",
                                                           "num_models = 1200"))
    assert invoke("init", config_path).exit_code == 0
    assert SweepStore.open(tmp_path / "sweep.zarr").status() == (300, 1200)
    saved = json.loads((tmp_path / "sweep.zarr.diagnostics-prob_correct.json").read_text())
    assert abs(saved["metrics"]["held-out LDS (ridge datamodel)"]) < 0.1
    assert saved["needs_more_models"] is True

    result = invoke("top", config_path, "--k", "2", "--json")  # standard errors now shown
    assert result.exit_code == 0
    assert all(item["se"] > 0 for item in json.loads(result.output)["helpful"])
    result = invoke("report", config_path)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "sweep.zarr.report.html").read_text()
    assert "Train more models" in page and "No diagnostics" not in page


def test_run_records_diverged_models_exits_non_zero_and_diagnose_names_the_unit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plant_divergence(monkeypatch)
    config = write_sweep_config(tmp_path, num_models=32, group_size=4)
    result = invoke("run", config, "--quiet")
    store = SweepStore.open(tmp_path / "sweep.zarr", read_only=True)
    diverged = int(store.diverged().sum())
    assert 0 < diverged < 32 and store.missing().size == 0
    assert result.exit_code == DIVERGED_EXIT, result.output
    assert f"{32 - diverged}/32 models complete" in result.output
    assert f"{diverged} model(s) diverged" in result.output

    result = invoke("status", config)
    assert f"{32 - diverged}/32 models complete, {diverged} diverged, 0 remaining" in result.output
    assert "min left" not in result.output and "no progress" not in result.output

    result = invoke("estimate", config)
    assert result.exit_code == 0, result.output
    assert f"from {32 - diverged} of 32 models ({diverged} diverged, excluded" in result.output

    result = invoke("diagnose", config, "--replicates", "20")
    assert result.exit_code == 0, result.output
    unit = SweepPlan.from_config(load_config(config)).unit_names[PLANTED_DIVERGING_UNIT]
    assert f"{diverged} diverged excluded" in result.output
    assert f"{unit}: {diverged}/{diverged} models diverged with it" in result.output
    saved = json.loads((tmp_path / "sweep.zarr.diagnostics-prob_correct.json").read_text())
    assert saved["num_diverged"] == diverged and saved["divergence_units"] == [unit]

    result = invoke("top", config, "--k", "2")
    assert result.exit_code == 0 and f"{32 - diverged} models, {diverged} diverged" in result.output
    result = invoke("report", config)
    assert result.exit_code == 0, result.output
    page = (tmp_path / "sweep.zarr.report.html").read_text()
    assert f"{32 - diverged} of 32 completed, {diverged} diverged (excluded" in page
    assert f"{unit}: {diverged}/{diverged} models diverged with it" in page


def test_status_says_when_no_runner_makes_progress(tmp_path: Path, monkeypatch):
    config_path = write_sweep_config(tmp_path, num_models=8, group_size=2)
    plan = SweepPlan.from_config(load_config(config_path))
    store = plan.open_store()
    for group in plan.groups()[:2]:  # two groups written a moment apart, then the runner stops
        masks, outputs, _ = plan.train_group(group)
        store.write_models(group, masks, outputs)
    result = invoke("status", config_path)
    assert result.exit_code == 0, result.output
    assert "4/8 models complete, 0 diverged, 4 remaining (50% done)" in result.output
    assert "min left at" in result.output and "no progress" not in result.output

    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    result = invoke("status", config_path)
    assert "no progress for 60 min: is a runner still going?" in result.output
    assert "min left" not in result.output and "last model finished 60.0 min ago" in result.output
