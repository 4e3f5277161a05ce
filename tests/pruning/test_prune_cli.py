"""`transfer-influence prune`: table, winning ratio, saved and merged JSON, clear errors."""

import json

from typer.testing import CliRunner

from transfer_influence.cli import app

from .conftest import write_pruning_config

runner = CliRunner()


def test_prune_prints_saves_and_merges(tmp_path):
    config = write_pruning_config(tmp_path)
    result = runner.invoke(app, ["prune", str(config), "--method", "lm,random", "--ratios", "0.5",
                                 "--seeds", "3", "--no-timing", "-q"])
    assert result.exit_code == 0, result.output
    assert "fixed_feature transfer (3 seeds" in result.output and "winning ratio" in result.output
    saved = tmp_path / "sweep.zarr.prune.json"
    assert {row["method"] for row in json.loads(saved.read_text())["rows"]} == {"lm", "random"}
    result = runner.invoke(app, ["prune", str(config), "--method", "fm", "--ratios", "0.5",
                                 "--seeds", "3", "--no-timing", "-q"])
    assert result.exit_code == 0, result.output
    assert {row["method"] for row in json.loads(saved.read_text())["rows"]} == {
        "lm", "random", "fm"}


def test_prune_errors_are_one_clear_message(tmp_path):
    config = write_pruning_config(tmp_path)
    result = runner.invoke(app, ["prune", str(config), "--ratios", "0.5,1.2"])
    assert result.exit_code == 1 and "strictly between 0 and 1" in result.output
    result = runner.invoke(app, ["prune", str(config), "--method", "influence"])
    assert result.exit_code == 1 and "transfer-influence run" in result.output
    other = tmp_path / "other"
    other.mkdir()
    (other / "prune.toml").write_text(config.read_text().replace("seed = 0", "seed = 1", 1))
    result = runner.invoke(app, ["prune", str(config), "--also-targets",
                                 str(other / "prune.toml")])
    assert result.exit_code == 1 and "has another source than this experiment" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "sweep.zarr.prune.json").exists()
