"""Sweeps: subset masks, the result store, and the runners that fill it."""

from .masks import kept_count, subset_mask, subset_masks
from .plan import SweepPlan, model_seed
from .runners import Runner, init_store, pending_work, run_local, run_ray, run_shard
from .store import ModelChunk, SweepStore

__all__ = [
    "ModelChunk",
    "Runner",
    "SweepPlan",
    "SweepStore",
    "init_store",
    "kept_count",
    "model_seed",
    "pending_work",
    "run_local",
    "run_ray",
    "run_shard",
    "subset_mask",
    "subset_masks",
]
