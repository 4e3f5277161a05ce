"""``transfer-influence influence-function`` refuses an unknown solver before any work."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from transfer_influence.cli import app

from ..sweep.conftest import write_sweep_config


def test_influence_function_rejects_an_unknown_solver_before_any_work(tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)
    result = CliRunner().invoke(app, ["influence-function", str(config), "--solver", "newton"])
    assert result.exit_code == 1 and "unknown solver 'newton'" in result.output
    assert not list(tmp_path.glob("sweep.zarr.influence-function.*"))  # nothing trained or saved
