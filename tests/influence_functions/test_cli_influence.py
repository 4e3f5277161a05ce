"""``transfer-influence influence-function`` end to end on the tiny planted experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from transfer_influence.cli import app
from transfer_influence.config import load_config
from transfer_influence.influence_functions import Proximal
from transfer_influence.influence_functions.experiment import build_problem
from transfer_influence.sweep.plan import SweepPlan

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
    # the first-order regime diagnostic: measured and predicted distances of every removal
    assert "of 3 removals moved the pretrained optimum more than 2x" in result.output
    assert all(len(saved[key]) == 3 and all(v > 0 for v in saved[key])
               for key in ("pretrain_shift", "finetune_shift", "predicted_shift", "shift_ratio"))
    before = (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns

    again = runner.invoke(app, ["influence-function", str(config), *OPTIONS])
    assert again.exit_code == 0, again.output  # everything reused, nothing recomputed
    assert (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns == before

    other = runner.invoke(app, ["influence-function", str(config), *OPTIONS[:-2], "--k", "2",
                                "--seed", "5"])
    assert other.exit_code == 1 and "other arguments" in other.output
    assert (tmp_path / "sweep.zarr.influence-function.scores.npz").stat().st_mtime_ns == before


def test_influence_function_command_with_the_ekfac_solver(tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)
    runner = CliRunner()
    scores = {}
    for solver in ("cg", "ekfac"):
        result = runner.invoke(app, ["influence-function", str(config), *OPTIONS[:2],
                                     *OPTIONS[4:], "--solver", solver, "--overwrite"])
        assert result.exit_code == 0, result.output
        with np.load(tmp_path / "sweep.zarr.influence-function.scores.npz") as saved:
            scores[solver] = saved["total"]
    assert json.loads((tmp_path / "sweep.zarr.influence-function.args.json").read_text())[
        "solver"] == "ekfac"
    assert np.corrcoef(scores["cg"], scores["ekfac"])[0, 1] > 0.3  # 0.73 when written


def _finetune_config(tmp_path: Path, proximal: float) -> Path:
    """The tiny planted experiment with full fine-tuning (and a proximal term when > 0), on a
    smooth CNN with weight decay, whose fine-tuned backbone training can converge."""
    config = write_sweep_config(tmp_path, epochs=1)
    smooth = ('[model]\nname = "small_cnn"\n[model.options]\nwidth = 2\nactivation = "tanh"\n'
              'pool = "avg"\n[pretrain]\nweight_decay = 0.01\n')
    text = config.read_text()
    config.write_text(text[:text.index("[model]")] + smooth + text[text.index("[pretrain]\n")
                                                                   + len("[pretrain]\n"):])
    recipe = "[transfer.recipe]\nepochs = 1\nlr = 0.05\nbatch_size = 16\nweight_decay = 0.01\n"
    mode = f'mode = "finetune"\nproximal = {proximal}\n'
    config.write_text(config.read_text().replace("[transfer]\n", f"[transfer]\n{mode}")
                      .replace("[sweep]\n", f"{recipe}[sweep]\n"))
    return config


def test_case_2_runs_from_a_finetuning_config_with_a_proximal_term(tmp_path: Path):
    config = _finetune_config(tmp_path, 1.0)
    result = CliRunner().invoke(app, ["influence-function", str(config), *OPTIONS])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "sweep.zarr.influence-function.validation.json").read_text())
    assert len(saved["actual"]) == 3 and any(saved["predicted"])
    plan = SweepPlan.from_config(load_config(config))
    problem = build_problem(plan, cache=tmp_path / "sweep.zarr.influence-function.models.pt")
    assert problem.finetune == Proximal(1.0, 0.01)
    assert not torch.equal(problem.phi[:problem.w_size], problem.theta[:problem.w_size])


def test_finetuning_without_a_proximal_term_is_refused(tmp_path: Path):
    config = _finetune_config(tmp_path, 0)
    result = CliRunner().invoke(app, ["influence-function", str(config), *OPTIONS])
    assert result.exit_code == 1 and "transfer.proximal = alpha > 0" in result.output
    assert not list(tmp_path.glob("sweep.zarr.influence-function.*"))


def test_overwriting_keeps_what_the_new_arguments_do_not_change(tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)
    runner = CliRunner()
    assert runner.invoke(app, ["influence-function", str(config), *OPTIONS]).exit_code == 0
    files = {name: tmp_path / f"sweep.zarr.influence-function.{name}"
             for name in ("models.pt", "scores.npz", "validation-checkpoint.json")}
    before = {name: path.stat().st_mtime_ns for name, path in files.items()}
    done = json.loads(files["validation-checkpoint.json"].read_text())

    # another solver: new scores, but the converged models and the retrainings are reused
    exact = [*OPTIONS[:8], "--cg-tol", "1e-4", "--solver", "exact", "--overwrite"]
    result = runner.invoke(app, ["influence-function", str(config), *exact])
    assert result.exit_code == 0, result.output
    assert files["models.pt"].stat().st_mtime_ns == before["models.pt"]
    assert files["scores.npz"].stat().st_mtime_ns != before["scores.npz"]
    kept = json.loads(files["validation-checkpoint.json"].read_text())
    assert all(kept[index] == value for index, value in done.items())

    # another training tolerance: everything is recomputed
    tighter = [*exact[:5], "2e-5", *exact[6:]]
    assert tighter[4:7] == ["--train-tol", "2e-5", "--damping"]
    result = runner.invoke(app, ["influence-function", str(config), *tighter])
    assert result.exit_code == 0, result.output
    assert files["models.pt"].stat().st_mtime_ns != before["models.pt"]
