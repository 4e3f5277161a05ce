"""Runners: who trains which groups of a sweep, all writing disjoint rows of one store.

- :func:`run_local` trains every missing group in this process (the default).
- :func:`run_shard` trains the groups of one shard of an array job (``--shard i --num-shards N``):
  group ``k`` belongs to shard ``k % N``.
- :func:`run_ray` sends one task per missing group to a Ray cluster (a local one by default).

All three skip completed and diverged models, so rerunning after a kill resumes where the sweep
stopped (a diverged model is final, never retried); and
because a model's subset and seed depend only on ``(sweep seed, model index)``, the finished store
is the same whichever runner, shard count or interruption produced it.

A runner of your own (:class:`Runner`) is built from the same pieces: ``SweepPlan.from_config``,
``plan.open_store()``, :func:`pending_work`, ``plan.train_group(indices)`` and
``store.write_models(indices, masks, outputs)`` (see docs/extending.md).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..outputs import TargetOutputs
from ..training import DivergenceLog
from .plan import SweepPlan
from .store import SweepStore

logger = logging.getLogger(__name__)


class Runner(Protocol):
    """``runner(config, *, quiet) -> SweepStore``: train the sweep's missing models (or some of
    them) into its store and return the store. :func:`run_local` and :func:`run_ray` are
    runners, and so is ``functools.partial(run_shard, shard=i, num_shards=n)``. The contract:
    write only whole groups of ``plan.groups()`` (models of a group train together), each model
    as ``plan.train_group`` trains it, and skip completed models, so that every runner leaves
    the same store."""

    def __call__(self, config: ExperimentConfig, *, quiet: bool = ...) -> SweepStore: ...


def pending_work(plan: SweepPlan, store: SweepStore, *, shard: int = 0, num_shards: int = 1
                 ) -> list[np.ndarray]:
    """The missing models of each group of ``shard``, one array per group that has any."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ConfigError(f"shard must lie in [0, num_shards) with num_shards >= 1; got shard"
                          f" {shard} of {num_shards}.")
    done = store.completed() | store.diverged()
    work = []
    for k, group in enumerate(plan.groups()):
        missing = group[~done[group]]
        if k % num_shards == shard and missing.size:
            work.append(missing)
    return work


def _progress(total: int, done: int, quiet: bool, desc: str) -> tqdm:
    return tqdm(total=total, initial=done, unit="model", desc=desc, dynamic_ncols=True,
                disable=quiet or not sys.stderr.isatty())


def write_trained(store: SweepStore, indices: np.ndarray, masks: np.ndarray,
                  outputs: TargetOutputs, divergence: DivergenceLog | None) -> None:
    """Write models ``indices`` as :meth:`SweepPlan.train_models` returned them: the diverged
    ones of ``divergence`` as diverged records, the rest as completed models."""
    indices = np.asarray(indices, dtype=np.int64)
    diverged = np.zeros(len(indices), bool) if divergence is None else divergence.diverged
    if divergence is not None and diverged.any():
        store.write_diverged(indices[diverged], masks[diverged], divergence.step[diverged],
                             divergence.last_loss[diverged])
        logger.warning("models %s diverged; recorded without outputs", indices[diverged].tolist())
    if not diverged.all():
        store.write_models(indices[~diverged], masks[~diverged], outputs.take(~diverged))


def _train_and_write(plan: SweepPlan, store: SweepStore, indices: np.ndarray) -> None:
    write_trained(store, indices, *plan.train_group(indices))


def _run_in_process(plan: SweepPlan, store: SweepStore, work: Iterable[np.ndarray],
                    quiet: bool, desc: str) -> None:
    work = list(work)
    todo = sum(len(group) for group in work)
    started = time.perf_counter()
    with _progress(store.num_models, store.num_models - todo, quiet, desc) as bar:
        for indices in work:
            _train_and_write(plan, store, indices)
            bar.update(len(indices))
    logger.info("trained %d models in %.1f s", todo, time.perf_counter() - started)


def run_local(experiment: ExperimentConfig | SweepPlan, *, quiet: bool = False) -> SweepStore:
    """Train every missing model of the sweep in this process; returns the store.

    ``experiment`` is a config, or a plan (e.g. :meth:`SweepPlan.from_data` over your own data).
    """
    plan = experiment if isinstance(experiment, SweepPlan) else SweepPlan.from_config(experiment)
    store = plan.open_store()
    _run_in_process(plan, store, pending_work(plan, store), quiet, "sweep")
    return store


def init_store(config: ExperimentConfig) -> SweepStore:
    """Create the sweep's store (or check an existing one) without training anything; run this
    once before starting array-job workers."""
    return SweepPlan.from_config(config).open_store()


def run_shard(config: ExperimentConfig, shard: int, num_shards: int, *, quiet: bool = False
              ) -> SweepStore:
    """Train the missing models of one array-job shard (group ``k`` goes to shard ``k % N``).

    Create the store first (``transfer-influence init``): concurrent shards creating it at the
    same instant could race.
    """
    plan = SweepPlan.from_config(config)
    store = plan.open_store()
    work = pending_work(plan, store, shard=shard, num_shards=num_shards)
    _run_in_process(plan, store, work, quiet, f"shard {shard}/{num_shards}")
    return store


_WORKER_PLANS: dict[str, SweepPlan] = {}


def worker_plan(config: ExperimentConfig) -> SweepPlan:
    """The experiment's plan; its data is loaded once per worker process (the slow part) and
    cached by config hash, while the plan carries this call's config, so its store and device
    (which the hash leaves out) are never those of an earlier task's config."""
    key = config.config_hash()
    if key not in _WORKER_PLANS:
        _WORKER_PLANS[key] = SweepPlan.from_config(config)
    return SweepPlan(config, _WORKER_PLANS[key].data)


def _ray_train_group(config: ExperimentConfig, indices: np.ndarray) -> int:
    """A Ray task: train one group of the sweep and write it."""
    plan = worker_plan(config)
    _train_and_write(plan, plan.open_store(create=False), indices)
    return len(indices)


def ray_map(task: Callable[..., int], calls: Sequence[tuple], *, address: str | None,
            num_cpus_per_task: float, quiet: bool, total: int, done: int, desc: str) -> None:
    """Run ``task(*args)`` for every ``args`` in ``calls`` as Ray tasks and wait for all; each
    task returns how many models it finished (for the progress bar). ``address`` joins an
    existing cluster, otherwise a local one is started and shut down again."""
    try:
        import ray
    except ImportError as error:
        raise ConfigError("the Ray runner needs Ray: pip install 'transfer-influence[ray]'"
                          ) from error
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=not quiet,
                 logging_level=logging.WARNING)
    try:
        remote = ray.remote(num_cpus=num_cpus_per_task)(task)
        pending = [remote.remote(*args) for args in calls]
        with _progress(total, done, quiet, desc) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                bar.update(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()


def run_ray(config: ExperimentConfig, *, address: str | None = None,
            num_cpus_per_task: float = 1.0, quiet: bool = False) -> SweepStore:
    """Train every missing group as a Ray task; ``address`` joins an existing cluster, otherwise
    a local one is started with this machine's cores.

    Every worker must see the store path (a shared file system or an fsspec URL such as
    ``s3://``) and the data (``TRANSFER_INFLUENCE_DATA``).
    """
    plan = SweepPlan.from_config(config)
    store = plan.open_store()  # created here, before any worker writes
    work = pending_work(plan, store)
    todo = sum(len(group) for group in work)
    ray_map(_ray_train_group, [(config, indices) for indices in work], address=address,
            num_cpus_per_task=num_cpus_per_task, quiet=quiet, total=store.num_models,
            done=store.num_models - todo, desc="sweep (ray)")
    return SweepStore.open(store.path, config_hash=config.config_hash())
