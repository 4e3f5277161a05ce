"""``transfer-influence influence-function`` end to end on the tiny planted experiment."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from transfer_influence.cli import app

from ..sweep.conftest import write_sweep_config

OPTIONS = ["--tests", "1", "--validate", "3", "--train-tol", "3e-5", "--damping", "1e-2",
           "--cg-tol", "1e-3", "--k", "2"]


def test_influence_function_command_saves_resumes_and_refuses_other_arguments(tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)
    runner = CliRunner()
    result = runner.invoke(app, ["influence-function", str(config), *OPTIONS])
    assert result.exit_code == 0, result.output
    assert "summed test loss" in result.output and "test example 0" in result.output
    assert "leave-one-out validation on 3 examples: Pearson" in result.output
    for name in ("args.json", "models.pt", "scores.npz", "validation.json"):
        assert (tmp_path / f"sweep.zarr.influence-function.{name}").exists()
    saved = json.loads((tmp_path / "sweep.zarr.influence-function.validation.json").read_text())
    assert len(saved["actual"]) == 3 and len(saved["predicted"]) == 3
    before = (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns

    again = runner.invoke(app, ["influence-function", str(config), *OPTIONS])
    assert again.exit_code == 0, again.output  # everything reused, nothing recomputed
    assert (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns == before

    other = runner.invoke(app, ["influence-function", str(config), *OPTIONS[:-2], "--k", "2",
                                "--seed", "5"])
    assert other.exit_code == 1 and "other arguments" in other.output
    assert (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns == before
