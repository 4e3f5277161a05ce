"""The command line: stages end to end on a tiny planted sweep, and clear errors."""

import json
from pathlib import Path

from typer.testing import CliRunner

from transfer_influence.cli import app
from transfer_influence.sweep.store import SweepStore

from .sweep.conftest import write_sweep_config

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
