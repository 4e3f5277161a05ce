"""Runners: resume after SIGKILL, and every runner, shard count or interruption writes the same
store."""

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from transfer_influence.config import load_config
from transfer_influence.errors import StoreError
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import init_store, run_local, run_ray, run_shard
from transfer_influence.sweep.store import SweepStore
from transfer_influence.training import trainer

from .conftest import assert_same_store, kill_when_completed, write_sweep_config

CLI = [sys.executable, "-m", "transfer_influence"]


def test_store_masks_are_the_pure_function_of_seed_and_index(tiny_config: Path):
    store = run_local(load_config(tiny_config), quiet=True)
    plan = SweepPlan.from_config(load_config(tiny_config))
    np.testing.assert_array_equal(store.read_masks(), plan.masks(np.arange(8)))
    assert store.read_masks().sum(axis=1).tolist() == [4] * 8  # round(0.5 * 8 units)


def test_resume_after_sigkill_trains_only_missing_models(tmp_path: Path, monkeypatch):
    config_path = write_sweep_config(tmp_path, store="killed.zarr", num_models=20, group_size=1,
                                     epochs=4)
    process = subprocess.Popen([*CLI, "run", str(config_path), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = kill_when_completed(process, tmp_path / "killed.zarr", 3)
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
    assert_same_store(resumed, reference)


def test_four_concurrent_array_job_workers_write_the_same_store(tmp_path: Path,
                                                                 tiny_config: Path):
    """`init`, then shards 0..3 of 4 started at once on one store, equal one process."""
    reference = run_local(load_config(tiny_config), quiet=True)
    sharded_path = write_sweep_config(tmp_path, store="sharded.zarr")
    init = subprocess.run([*CLI, "init", str(sharded_path)], capture_output=True, text=True,
                          check=False)
    assert init.returncode == 0 and "0/8 models" in init.stdout, init.stderr
    workers = [
        subprocess.Popen([*CLI, "worker", str(sharded_path), "--shard", str(shard),
                          "--num-shards", "4", "--quiet"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for shard in range(4)
    ]
    for worker in workers:
        assert worker.wait(timeout=300) == 0, worker.stderr.read()
    assert_same_store(SweepStore.open(tmp_path / "sharded.zarr"), reference)


def killable_config(folder: Path, store: str) -> Path:
    """24 models in 6 groups of 4 and 4 epochs: slow enough to kill a worker inside a group."""
    return write_sweep_config(folder, store=store, num_models=24, group_size=4, epochs=4)


def start_ray_run(config: Path, **pipes) -> subprocess.Popen:
    """`run --runner ray` in its own session (its process group holds the local cluster)."""
    return subprocess.Popen([*CLI, "run", str(config), "--runner", "ray", "--quiet"], text=True,
                            start_new_session=True, **pipes)


def test_array_job_worker_killed_mid_group_then_rerun(tmp_path: Path):
    """A worker SIGKILLed while training a group of its shard, then rerun (with the other
    shard), leaves the store an uninterrupted single-process run writes, bit for bit."""
    config = partial(killable_config, tmp_path)
    init_store(load_config(config("killed.zarr")))
    process = subprocess.Popen([*CLI, "worker", str(config("killed.zarr")), "--shard", "0",
                                "--num-shards", "2", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = kill_when_completed(process, tmp_path / "killed.zarr", 4)  # in its second group
    shard_zero = np.concatenate(SweepPlan.from_config(load_config(config("killed.zarr"))
                                                      ).groups()[0::2])
    done = killed.completed()
    assert done.any() and not done[shard_zero].all() and not done.all()
    assert not done[np.setdiff1d(np.arange(24), shard_zero)].any()

    for shard in (0, 1):
        run_shard(load_config(config("killed.zarr")), shard, 2, quiet=True)
    reference = run_local(load_config(config("reference.zarr")), quiet=True)
    assert_same_store(SweepStore.open(tmp_path / "killed.zarr"), reference)


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
    assert_same_store(grown, fresh)
    np.testing.assert_array_equal(grown.read_outputs(np.arange(64)).correct_logit, before)

    run_local(load_config(config("by_workers.zarr", 64)), quiet=True)
    init_store(load_config(config("by_workers.zarr", 128)))
    assert SweepStore.open(tmp_path / "by_workers.zarr").status() == (64, 128)
    for shard in range(2):
        run_shard(load_config(config("by_workers.zarr", 128)), shard, 2, quiet=True)
    assert_same_store(SweepStore.open(tmp_path / "by_workers.zarr"), fresh)

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
    reference = run_local(load_config(tiny_config), quiet=True)
    ray_config = load_config(write_sweep_config(tmp_path, store="ray.zarr"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        store = run_ray(ray_config, quiet=True)
    finally:
        ray.shutdown()
    assert_same_store(store, reference)


def ray_task_pids(task: str) -> list[int]:
    """Processes whose title Ray has set to ``ray::<task>``: workers running that task now."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(f"ray::{task}".encode()):
                pids.append(int(cmdline.parent.name))
        except OSError:  # the process ended meanwhile
            continue
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds Ray workers through /proc")
def test_ray_run_survives_a_worker_killed_mid_group(tmp_path: Path):
    """A Ray worker SIGKILLed while it trains a group: Ray reruns the task, the run finishes and
    the store equals an uninterrupted local run."""
    pytest.importorskip("ray")

    config = partial(killable_config, tmp_path)
    process = start_ray_run(config("ray.zarr"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (busy := ray_task_pids("_ray_train_group")) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.05)
        assert busy, "no Ray worker started training"
        os.kill(busy[0], signal.SIGKILL)
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0 and "24/24 models complete" in out, err
    reference = run_local(load_config(config("reference.zarr")), quiet=True)
    assert_same_store(SweepStore.open(tmp_path / "ray.zarr"), reference)


@pytest.mark.slow
def test_ray_run_killed_mid_group_then_rerun(tmp_path: Path):
    """`run --runner ray` (driver, local cluster and its workers) SIGKILLed while groups are
    being trained, then rerun, leaves the store an uninterrupted local run writes."""
    pytest.importorskip("ray")

    config = partial(killable_config, tmp_path)
    process = start_ray_run(config("ray.zarr"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = kill_when_completed(process, tmp_path / "ray.zarr", 4, group=True, timeout=240)
    assert 0 < killed.num_completed < 24
    rerun = subprocess.run([*CLI, "run", str(config("ray.zarr")), "--runner", "ray", "--quiet"],
                           capture_output=True, text=True, check=False)
    assert rerun.returncode == 0 and "24/24 models complete" in rerun.stdout, rerun.stderr
    reference = run_local(load_config(config("reference.zarr")), quiet=True)
    assert_same_store(SweepStore.open(tmp_path / "ray.zarr"), reference)


def test_cnn_sweep_trains_in_threads_and_grows_bit_identically(tmp_path: Path, monkeypatch):
    """`run` trains CNNs with the threads strategy (through `auto`) and records their numerics;
    a CNN store grown from 2 to 4 models on one worker equals a 4-model sweep on two, bit for
    bit (each model trains on one intra-op thread whatever the pool)."""
    def config(store: str, num_models: int) -> Path:
        path = write_sweep_config(tmp_path, store=store, num_models=num_models, group_size=2,
                                  epochs=1)
        path.write_text(path.read_text().replace('name = "mlp"', 'name = "small_cnn"')
                        .replace("width = 32\ndepth = 1", "width = 2"))
        return path

    pools = []
    original = trainer._fit_threads
    monkeypatch.setattr(trainer, "_fit_threads", lambda models, *args: (
        pools.append((len(models), torch.get_num_threads())), original(models, *args))[1])
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        fresh = run_local(load_config(config("fresh.zarr", 4)), quiet=True)
        torch.set_num_threads(1)
        run_local(load_config(config("grown.zarr", 2)), quiet=True)
        grown = run_local(load_config(config("grown.zarr", 4)), quiet=True)
    finally:
        torch.set_num_threads(before)
    assert pools == [(2, 2), (2, 2), (2, 1), (2, 1)]
    assert fresh.numerics == {"conv_layout": "channels_last", "conv_threads": "1"}
    assert_same_store(grown, fresh)
