"""From scores to pruned source sets: a pruning ratio removes the lowest-scoring units.

A method scores its own *units*: source classes (LM, influence), k-means clusters (FM) or source
examples (EL2N, GraNd, forgetting, moderate). A ratio ``r`` prunes ``round(r * units)`` of them,
lowest score first, and the pruned units' member examples leave pretraining. Ties are broken by a
seeded permutation (LM gives many classes a count of 0), the same for every seed of an arm, so
the pruned set is a pure function of the scores, the ratio and the sweep seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError


def check_ratios(ratios: Sequence[float]) -> list[float]:
    """Distinct ratios, sorted, each strictly between 0 and 1."""
    values = sorted({float(r) for r in ratios})
    bad = [r for r in values if not 0.0 < r < 1.0]
    if not values or bad:
        raise ConfigError(
            f"pruning ratios must lie strictly between 0 and 1 (the fraction of source units"
            f" removed), got {bad or 'none'}; e.g. 0.2, 0.5 and 0.8."
        )
    return values


def pruned_count(num_units: int, ratio: float) -> int:
    """Units a ratio prunes: ``round(ratio * units)``, at least 1 pruned and 1 kept."""
    return min(max(round(ratio * num_units), 1), num_units - 1)


def pruning_order(scores: np.ndarray, tie_seed: Sequence[int]) -> np.ndarray:
    """Unit indices from lowest to highest score (pruned first to last); equal scores are
    ordered by a permutation drawn from ``default_rng(tie_seed)``."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.size < 2 or np.isnan(scores).any():
        raise ConfigError(f"pruning scores must be a 1-D array of >= 2 numbers without NaN, got"
                          f" shape {scores.shape}.")
    shuffle = np.random.default_rng(list(tie_seed)).permutation(scores.size)
    return shuffle[np.argsort(scores[shuffle], kind="stable")]


def pruned_units(scores: np.ndarray, ratio: float, tie_seed: Sequence[int]) -> np.ndarray:
    """Sorted indices of the units ``ratio`` prunes, lowest scores first."""
    order = pruning_order(scores, tie_seed)
    return np.sort(order[:pruned_count(order.size, ratio)])


def random_pruned_units(num_units: int, ratio: float, seed: Sequence[int]) -> np.ndarray:
    """Sorted indices of ``pruned_count`` units drawn uniformly from ``default_rng(seed)``."""
    rng = np.random.default_rng(list(seed))
    return np.sort(rng.choice(num_units, pruned_count(num_units, ratio), replace=False))


def member_examples(members: np.ndarray, units: np.ndarray) -> np.ndarray:
    """Sorted example indices belonging to ``units``, given each example's unit ``members``."""
    return np.flatnonzero(np.isin(members, units))
