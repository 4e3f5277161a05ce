"""Subset masks: which source units each model of a sweep is trained on.

Model ``i``'s mask is a pure function of ``(seed, i)``: it is drawn from
``numpy.random.default_rng([seed, i])`` and keeps exactly ``round(alpha * num_units)`` units.
Any process (a Ray worker, an array-job shard, the estimator checking a store) can therefore
recompute any model's mask without coordination, and results never depend on scheduling.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..errors import ConfigError


def kept_count(num_units: int, alpha: float) -> int:
    """Number of units every mask keeps, ``round(alpha * num_units)``, validated.

    The count must lie in ``[1, num_units - 1]``: a unit that is kept by every model (or by
    none) has no "without" (or "with") models, so its difference-in-means influence is undefined.
    """
    if not isinstance(num_units, (int, np.integer)) or num_units < 2:
        raise ConfigError(
            f"num_units must be an integer >= 2, got {num_units!r}; a sweep needs at least two"
            " source units to keep some and drop others."
        )
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(
            f"alpha (the fraction of source units each model keeps) must lie strictly between"
            f" 0 and 1, got {alpha!r}; the paper uses 0.5."
        )
    kept = round(float(alpha) * int(num_units))
    if not 1 <= kept <= num_units - 1:
        raise ConfigError(
            f"alpha={alpha} keeps {kept} of {num_units} units; every model must keep at least 1"
            f" and drop at least 1 unit. Choose alpha in [{1.5 / num_units:.3g},"
            f" {1 - 1.5 / num_units:.3g}] or use more units."
        )
    return kept


def subset_mask(seed: int, model_index: int, num_units: int, alpha: float) -> np.ndarray:
    """Bool mask ``[units]`` of the units model ``model_index`` keeps.

    Exactly ``round(alpha * num_units)`` entries are True, chosen uniformly without
    replacement from ``numpy.random.default_rng([seed, model_index])``.
    """
    kept = kept_count(num_units, alpha)
    if int(model_index) < 0 or int(seed) < 0:
        raise ConfigError(
            f"seed and model_index must be non-negative integers, got seed={seed},"
            f" model_index={model_index}."
        )
    rng = np.random.default_rng([int(seed), int(model_index)])
    mask = np.zeros(int(num_units), dtype=bool)
    mask[rng.permutation(int(num_units))[:kept]] = True
    return mask


def subset_masks(
    seed: int, model_indices: Iterable[int], num_units: int, alpha: float
) -> np.ndarray:
    """Bool masks ``[models, units]`` for ``model_indices``; row ``j`` is
    ``subset_mask(seed, model_indices[j], num_units, alpha)``."""
    indices = [int(i) for i in model_indices]
    masks = np.zeros((len(indices), int(num_units)), dtype=bool)
    for row, index in enumerate(indices):
        masks[row] = subset_mask(seed, index, num_units, alpha)
    return masks
