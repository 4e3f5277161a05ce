"""The examples in examples/ run: a model defined outside the package (examples/my_models.py),
named by import path in examples/my_model.toml, and the Slurm array script
examples/slurm_array.sh."""

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import transfer_influence as ti
from transfer_influence.cli import app
from transfer_influence.config import load_config, read_toml

from .sweep.conftest import assert_same_store, write_sweep_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example_config(name: str, store: Path, **sweep):
    """``examples/<name>`` with a smaller sweep writing to ``store``."""
    raw = read_toml((EXAMPLES / name).read_text(), source=name)
    raw["sweep"] |= {"store": str(store), **sweep}
    raw["pretrain"]["epochs"] = 2
    return ti.parse_config(raw, source=name, base_dir=EXAMPLES)


@pytest.fixture
def examples_importable(monkeypatch):
    """examples/ on sys.path, as ``PYTHONPATH=examples`` does for the CLI."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.mark.filterwarnings("ignore:.*kept by every model or by none")  # 6 models: expected
def test_my_model_example_runs_a_reproducible_sweep(tmp_path, examples_importable):
    config = example_config("my_model.toml", tmp_path / "a.zarr", num_models=6, group_size=3)
    assert config.model.name == "my_models:dropout_cnn"
    assert config.model.options == {"width": 8, "dropout": 0.2, "activation": "gelu"}
    torch.manual_seed(0)
    store = ti.run_local(config, quiet=True)
    assert store.completed().all()
    result = ti.estimate_influence(store, "prob_correct")
    masks = store.read_masks()
    mixed = masks.any(0) & ~masks.all(0)  # units some models saw and some did not
    assert result.num_models == 6 and result.influence.shape == (8, 200)
    assert mixed.sum() >= 4 and np.isfinite(result.influence[mixed]).all()
    # dropout and the custom layer's initialisation are seeded per model: another global seed
    # and another grouping give the same store
    torch.manual_seed(1)
    again = ti.run_local(example_config("my_model.toml", tmp_path / "b.zarr", num_models=6,
                                        group_size=2), quiet=True)
    a, b = store.read_outputs(), again.read_outputs()
    np.testing.assert_array_equal(a.correct_logit, b.correct_logit)
    np.testing.assert_array_equal(a.predicted, b.predicted)


def test_slurm_array_script_runs_a_sweep_shard_by_shard(tmp_path):
    """examples/slurm_array.sh as a user runs it, with the array executed locally: its usage
    lines (`init`, `sbatch`, `status`, `estimate`) and the worker command the script itself
    builds for each task of ``#SBATCH --array`` are valid CLI calls that complete the sweep."""
    script = EXAMPLES / "slurm_array.sh"
    text = script.read_text()
    array = re.search(r"^#SBATCH --array=(\d+)-(\d+)$", text, re.MULTILINE)
    first, last = int(array[1]), int(array[2])
    usage = re.findall(r"^#   ((?:transfer-influence|sbatch) .+)$", text, re.MULTILINE)
    assert [line.split()[:2] for line in usage] == [
        ["transfer-influence", "init"], ["sbatch", "examples/slurm_array.sh"],
        ["transfer-influence", "status"], ["transfer-influence", "estimate"]]
    example = usage[0].split()[2]
    assert all(line.split()[2] == example for line in usage) and (EXAMPLES.parent / example).exists()
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert all(line in readme for line in usage), "README's Scaling out shows the same commands"

    config = write_sweep_config(tmp_path, num_models=16, group_size=2, epochs=1)
    shim = tmp_path / "bin"  # records the arguments the script passes to transfer-influence
    shim.mkdir()
    (shim / "transfer-influence").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    (shim / "transfer-influence").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{os.environ['PATH']}",
               RECORD=str(tmp_path / "argv"), SLURM_ARRAY_TASK_COUNT=str(last - first + 1))
    outputs = []
    for line in usage:
        program, *args = shlex.split(line.replace(example, str(config)))
        if program == "sbatch":  # the array, one task after another
            for task in range(first, last + 1):
                subprocess.run(["bash", *args], cwd=EXAMPLES.parent, check=True,
                               env=env | {"SLURM_ARRAY_TASK_ID": str(task)})
                argv = (tmp_path / "argv").read_text().splitlines()
                assert argv[:4] == ["worker", str(config), "--shard", str(task)]
                outputs.append(invoke_cli(argv))
        else:
            outputs.append(invoke_cli(args))
    assert "0/16 models" in outputs[0] and "16/16 models complete" in outputs[-2]
    assert "from 16 of 16 models" in outputs[-1]
    assert_same_store(ti.SweepStore.open(tmp_path / "sweep.zarr"), ti.run_local(
        load_config(write_sweep_config(tmp_path, store="reference.zarr", num_models=16,
                                       group_size=2, epochs=1)), quiet=True))

    outside_array = subprocess.run(["bash", str(script), str(config)], capture_output=True,
                                   text=True, check=False, env={k: v for k, v in env.items()
                                                   if not k.startswith("SLURM_")})
    assert outside_array.returncode != 0 and "sbatch --array" in outside_array.stderr


def invoke_cli(args: list[str]) -> str:
    """Run the CLI in this process with ``args``; return its output, failing on an error."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"transfer-influence {' '.join(args)}:\n{result.output}"
    return result.output


@pytest.mark.slow  # two influence-function runs: ~17 s on a loaded machine
def test_influence_observations_script_summarises_saved_runs_per_seed(tmp_path, capsys,
                                                                      monkeypatch,
                                                                      examples_importable):
    """examples/influence_observations.py: one influence-function run per pretraining seed,
    each in its own store, summarised as mean |influence| with intervals and paired ratios."""
    import influence_observations

    config = write_sweep_config(tmp_path, epochs=1)
    solver = ["--tests", "1", "--damping", "1e-2", "--cg-tol", "1e-3", "--train-tol", "1e-4"]
    monkeypatch.setattr("sys.argv", ["influence_observations.py", str(config), str(config),
                                     "--seeds", "2", *solver])
    influence_observations.main()
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["configs"]["sweep"]
    for seed, value in enumerate(summary["per_seed"]):
        with np.load(tmp_path / f"sweep-seed{seed}.zarr.influence-function.scores.npz") as saved:
            assert value == pytest.approx(np.abs(saved["total"]).mean())
    first, second = summary["per_seed"]
    assert first != second  # each seed pretrains its own model
    assert summary["ratio"] == 1.0 and summary["mean"] == pytest.approx((first + second) / 2)
