"""Runners: resume after SIGKILL, and every runner writes the same store."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from transfer_influence.config import load_config
from transfer_influence.errors import StoreError
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import init_store, run_local, run_shard
from transfer_influence.sweep.store import SweepStore

from .conftest import write_sweep_config

OUTPUT_FIELDS = ("correct_logit", "max_other_logit", "logsumexp", "predicted")


def _assert_same_store(a: SweepStore, b: SweepStore) -> None:
    assert a.completed().all() and b.completed().all()
    np.testing.assert_array_equal(a.read_masks(), b.read_masks())
    out_a, out_b = a.read_outputs(), b.read_outputs()
    for field in OUTPUT_FIELDS:
        np.testing.assert_array_equal(getattr(out_a, field), getattr(out_b, field), err_msg=field)


def test_store_masks_are_the_pure_function_of_seed_and_index(tiny_config: Path):
    store = run_local(load_config(tiny_config), quiet=True)
    plan = SweepPlan.from_config(load_config(tiny_config))
    np.testing.assert_array_equal(store.read_masks(), plan.masks(np.arange(8)))
    assert store.read_masks().sum(axis=1).tolist() == [4] * 8  # round(0.5 * 8 units)


def test_resume_after_sigkill_trains_only_missing_models(tmp_path: Path, monkeypatch):
    config_path = write_sweep_config(tmp_path, store="killed.zarr", num_models=20, group_size=1,
                                     epochs=4)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "transfer_influence", "run", str(config_path), "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    store_path = tmp_path / "killed.zarr"
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        if (store_path / "zarr.json").exists():
            try:
                done = SweepStore.open(store_path, read_only=True).num_completed
            except (StoreError, ValueError, OSError):  # the store is still being created
                done = 0
            if done >= 3:
                break
        time.sleep(0.02)
    assert process.poll() is None, f"run ended before it could be killed: {process.stderr.read()}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = SweepStore.open(store_path, read_only=True)
    missing_before = set(killed.missing().tolist())
    assert 0 < len(missing_before) < 20

    trained: list[int] = []
    original = SweepPlan.train_group

    def recording(self, indices):
        trained.extend(int(i) for i in indices)
        return original(self, indices)

    monkeypatch.setattr(SweepPlan, "train_group", recording)
    resumed = run_local(load_config(config_path), quiet=True)
    assert set(trained) == missing_before and len(trained) == len(missing_before)

    monkeypatch.setattr(SweepPlan, "train_group", original)
    reference = run_local(load_config(write_sweep_config(
        tmp_path, store="reference.zarr", num_models=20, group_size=1, epochs=4)), quiet=True)
    _assert_same_store(resumed, reference)


def test_array_job_shards_write_the_same_store(tmp_path: Path, tiny_config: Path):
    reference = run_local(load_config(tiny_config), quiet=True)
    sharded_path = write_sweep_config(tmp_path, store="sharded.zarr")
    init = subprocess.run([sys.executable, "-m", "transfer_influence", "init", str(sharded_path)],
                          capture_output=True, text=True, check=False)
    assert init.returncode == 0 and "0/8 models" in init.stdout, init.stderr
    workers = [
        subprocess.Popen([sys.executable, "-m", "transfer_influence", "worker", str(sharded_path),
                          "--shard", str(shard), "--num-shards", "2", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for shard in range(2)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read().decode()
    _assert_same_store(SweepStore.open(tmp_path / "sharded.zarr"), reference)


def test_grown_store_equals_a_sweep_run_at_the_larger_size(tmp_path: Path):
    """64 models grown to 128, by `run` and by `init` + array-job workers, equal a 128-model
    sweep from scratch bit for bit; shrinking or changing another setting is refused."""
    def config(store: str, num_models: int, epochs: int = 1) -> Path:
        return write_sweep_config(tmp_path, store=store, num_models=num_models, group_size=8,
                                  epochs=epochs)

    fresh = run_local(load_config(config("fresh.zarr", 128)), quiet=True)
    run_local(load_config(config("by_run.zarr", 64)), quiet=True)
    small = SweepStore.open(tmp_path / "by_run.zarr")
    assert small.status() == (64, 64)
    before = small.read_outputs().correct_logit
    grown = run_local(load_config(config("by_run.zarr", 128)), quiet=True)
    _assert_same_store(grown, fresh)
    np.testing.assert_array_equal(grown.read_outputs(np.arange(64)).correct_logit, before)

    run_local(load_config(config("by_workers.zarr", 64)), quiet=True)
    init_store(load_config(config("by_workers.zarr", 128)))
    assert SweepStore.open(tmp_path / "by_workers.zarr").status() == (64, 128)
    for shard in range(2):
        run_shard(load_config(config("by_workers.zarr", 128)), shard, 2, quiet=True)
    _assert_same_store(SweepStore.open(tmp_path / "by_workers.zarr"), fresh)

    with pytest.raises(StoreError, match="cannot shrink to 100; set num_models >= 128"):
        run_local(load_config(config("by_run.zarr", 100)), quiet=True)
    with pytest.raises(StoreError, match="another configuration"):
        run_local(load_config(config("by_run.zarr", 256, epochs=2)), quiet=True)
    assert SweepStore.open(tmp_path / "by_run.zarr").status() == (128, 128)


def test_shard_arguments_are_validated(tiny_config: Path):
    from transfer_influence.errors import ConfigError

    with pytest.raises(ConfigError, match="shard must lie"):
        run_shard(load_config(tiny_config), 2, 2, quiet=True)


def test_ray_runner_writes_the_same_store(tmp_path: Path, tiny_config: Path):
    ray = pytest.importorskip("ray")
    from transfer_influence.sweep.runners import run_ray

    reference = run_local(load_config(tiny_config), quiet=True)
    ray_config = load_config(write_sweep_config(tmp_path, store="ray.zarr"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store = run_ray(ray_config, quiet=True)
    finally:
        ray.shutdown()
    _assert_same_store(store, reference)
