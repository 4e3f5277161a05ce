"""A sweep store with random outputs, optionally lifted by chosen units, for estimator tests."""

from collections.abc import Callable
from pathlib import Path

import numpy as np

from transfer_influence.outputs import TargetOutputs
from transfer_influence.sweep.masks import subset_masks
from transfer_influence.sweep.store import SweepStore


def random_store(path: Path, *, models: int, units: int, targets: int, classes: int = 3,
                 unfinished_every: int, correct_boost: Callable[[np.ndarray], np.ndarray]
                 | None = None) -> SweepStore:
    """A store of random logits where every ``unfinished_every``-th model never finished;
    ``correct_boost(masks) -> [models, 1]`` is added to the correct-class logit (a signal)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, size=targets)
    store = SweepStore.create(
        path, num_models=models, unit_names=[f"u{i}" for i in range(units)],
        target_labels=labels, target_class_names=["a", "b", "c"][:classes], config_hash="h",
        fingerprints={},
    )
    done = np.array([i for i in range(models) if i % unfinished_every != unfinished_every - 1])
    masks = subset_masks(0, done, units, 0.5)
    logits = rng.normal(size=(done.size, targets, classes)).astype(np.float32)
    if correct_boost is not None:
        logits[np.arange(done.size)[:, None], np.arange(targets), labels] += correct_boost(masks)
    store.write_models(done, masks, TargetOutputs.from_logits(logits, labels))
    return store
