"""Retrain arms of models and keep every model, resumably, in content-addressed stores.

Each arm gets its own :class:`~transfer_influence.sweep.store.SweepStore` (one model per seed),
named by a hash of the experiment's config hash, the removed units of every seed and the seeds.
Identical arms requested by different commands (the no-removal baseline of a counterfactual and
of a failure-debugging run, or ``k = 5`` asked for twice) are therefore trained once, and a
killed run resumes from the completed flags like a sweep does. Models of several arms are
trained together in groups of the sweep's ``group_size``, so ``R`` seeds x several ``k`` form one
batch where they fit; groups run in this process or as Ray tasks. A model that diverges follows
the sweep's ``on_divergence`` policy: recorded as diverged in its arm's store (and never retried)
or raised.

With ``equal_steps`` every model takes as many optimisation steps as pretraining on the whole
source (see :meth:`SweepPlan.train_models`): removing classes then removes data but not
optimisation. Such arms get stores of their own, except arms that remove nothing (the
baseline), whose models are the same either way and are shared.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..config import ExperimentConfig
from ..errors import ConfigError
from ..sweep.plan import SweepPlan
from ..sweep.runners import ray_map, worker_plan, write_trained
from ..sweep.store import SweepStore
from .arms import Arm, retrain_seed


def arm_store_path(plan: SweepPlan, arm: Arm, equal_steps: bool = False) -> str:
    """Where the arm's models live: ``<sweep store>.retrain/<hash>.zarr``."""
    return f"{plan.config.store_path()}.retrain/{arm_hash(plan, arm, equal_steps)}.zarr"


def arm_hash(plan: SweepPlan, arm: Arm, equal_steps: bool = False) -> str:
    """16 hex digits identifying the arm's models: the config, each seed's removal and seed,
    and equal-steps training when it changes the models (some seed removes a unit)."""
    payload: dict[str, object] = {
        "config": plan.config.config_hash(),
        "removed": [list(r) for r in arm.removed],
        "seeds": [retrain_seed(plan.config.sweep.seed, r) for r in range(arm.seeds)],
    }
    if equal_steps and any(arm.removed):
        payload["equal_steps"] = True
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_arm_store(plan: SweepPlan, arm: Arm, equal_steps: bool = False) -> SweepStore:
    """The arm's store, created if absent and checked against the arm's hash."""
    target = plan.data.target_test
    return SweepStore.open_or_create(
        arm_store_path(plan, arm, equal_steps),
        num_models=arm.seeds,
        unit_names=plan.unit_names,
        target_labels=target.labels,
        target_class_names=target.class_names,
        config_hash=arm_hash(plan, arm, equal_steps),
        fingerprints=plan.data.fingerprints(),
        numerics=plan.numerics(),
    )


Pending = list[tuple[int, int]]
"""Models still to train, as ``(arm position, seed r)`` pairs."""


def _train_and_write(plan: SweepPlan, arms: Sequence[Arm], stores: Sequence[SweepStore],
                     group: Pending, equal_steps: bool) -> int:
    """Train one group of ``(arm, r)`` models together and write each into its arm's store."""
    masks = np.stack([arms[a].masks(len(plan.unit_names))[r] for a, r in group])
    seeds = [retrain_seed(plan.config.sweep.seed, r) for _, r in group]
    divergence = plan.divergence_log(len(group))
    outputs = plan.train_models(masks, seeds, divergence, equal_steps=equal_steps)
    which = np.array([a for a, _ in group])
    for a in np.unique(which):
        rows = np.flatnonzero(which == a)
        write_trained(stores[a], np.array([group[i][1] for i in rows]), masks[rows],
                      outputs.take(rows), divergence and divergence.take(rows))
    return len(group)


def _ray_train_and_write(config: ExperimentConfig, arms: Sequence[Arm], group: Pending,
                         equal_steps: bool) -> int:
    """A Ray task: rebuild the plan (once per worker), open the arms' stores, train one group."""
    plan = worker_plan(config)
    stores = [SweepStore.open(arm_store_path(plan, arm, equal_steps),
                              config_hash=arm_hash(plan, arm, equal_steps)) for arm in arms]
    return _train_and_write(plan, arms, stores, group, equal_steps)


def retrain(plan: SweepPlan, arms: Sequence[Arm], *, equal_steps: bool = False,
            quiet: bool = False, runner: str = "local", address: str | None = None
            ) -> list[SweepStore]:
    """Train every missing model of ``arms`` (pretrain on the kept units, transfer) and return
    one completed store per arm, in the order of ``arms``.

    ``equal_steps``: every model takes the steps of full-source pretraining (module docstring).
    ``runner="ray"`` sends each group to a Ray cluster (``address``, or a local one), like
    ``transfer-influence run --runner ray``; the stores must be on storage every worker sees.
    """
    if runner not in ("local", "ray"):
        raise ConfigError(f"runner must be 'local' or 'ray', got {runner!r}.")
    stores = [open_arm_store(plan, arm, equal_steps) for arm in arms]  # before any worker
    pending = [(a, int(r)) for a, store in enumerate(stores) for r in store.missing()]
    size = plan.config.sweep.group_size
    groups = [pending[start:start + size] for start in range(0, len(pending), size)]
    total = sum(arm.seeds for arm in arms)
    if runner == "ray":
        ray_map(_ray_train_and_write,
                [(plan.config, list(arms), group, equal_steps) for group in groups],
                address=address, num_cpus_per_task=1.0, quiet=quiet, total=total,
                done=total - len(pending), desc="retrain (ray)")
        return [SweepStore.open(store.path, config_hash=store.config_hash) for store in stores]
    with tqdm(total=total, initial=total - len(pending), unit="model", desc="retrain",
              dynamic_ncols=True, disable=quiet or not sys.stderr.isatty()) as bar:
        for group in groups:
            bar.update(_train_and_write(plan, arms, stores, group, equal_steps))
    return stores
