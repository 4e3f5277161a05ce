"""Arms of a retraining experiment: which source units each seed removes.

An arm is one condition of a counterfactual ("remove the 5 most harmful classes", "remove 5
random classes", "remove nothing"), repeated over ``R`` seeds. Seed ``r`` of every arm uses the
same initialisation and batch-order seed, so arms are compared pairwise, seed by seed, which
removes most of the seed-to-seed noise from the difference.

Everything here is a pure function of its arguments: the ranking of units, ``k``, the sweep seed
and ``r``. Rebuilding the arms after a kill therefore finds the same stores and resumes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..errors import ConfigError
from ..ranking import top_indices

Strategy = Literal["bottom", "top", "random", "classes", "groups"]
STRATEGIES: tuple[Strategy, ...] = ("bottom", "top", "random", "classes", "groups")


@dataclass(frozen=True)
class Arm:
    """One retraining condition over ``len(removed)`` seeds.

    ``removed[r]`` are the unit indices seed ``r`` leaves out of pretraining (empty for the
    no-removal baseline); ``k`` is how many units each seed removes.
    """

    name: str
    k: int
    removed: tuple[tuple[int, ...], ...]

    @property
    def seeds(self) -> int:
        """How many seeds (models) the arm trains."""
        return len(self.removed)

    def masks(self, num_units: int) -> np.ndarray:
        """Kept units, ``bool [seeds, units]``."""
        masks = np.ones((self.seeds, num_units), dtype=bool)
        for r, removed in enumerate(self.removed):
            masks[r, list(removed)] = False
        return masks


def retrain_seed(sweep_seed: int, r: int) -> int:
    """Initialisation and batch-order seed of seed ``r`` in every arm (shared, so arms pair)."""
    return int(np.random.default_rng([sweep_seed, 2, r]).integers(2**31 - 1))


def baseline_arm(seeds: int) -> Arm:
    """Pretrain on the whole source."""
    return Arm("baseline", 0, ((),) * seeds)


def _check_k(ks: Sequence[int], num_units: int) -> list[int]:
    ks = [int(k) for k in ks]
    if not ks:
        raise ConfigError("give at least one k (how many source units to remove).")
    bad = [k for k in ks if not 1 <= k < num_units]
    if bad:
        raise ConfigError(
            f"every k must lie in [1, {num_units - 1}] (remove at least one unit and keep at"
            f" least one of the {num_units}); got {bad}."
        )
    return sorted(set(ks))


def ranked_arms(strategy: Literal["bottom", "top"], scores: np.ndarray, ks: Sequence[int],
                seeds: int) -> list[Arm]:
    """Remove the ``k`` lowest-scoring (``bottom``: most harmful) or highest-scoring (``top``:
    most helpful) units, for each ``k``; units with NaN scores are never removed."""
    scores = np.asarray(scores, dtype=np.float64)
    order = top_indices(scores, largest=strategy == "top")
    arms = []
    for k in _check_k(ks, scores.size):
        if k > order.size:
            raise ConfigError(f"k={k} exceeds the {order.size} units with a defined influence.")
        removed = tuple(sorted(int(i) for i in order[:k]))
        arms.append(Arm(strategy, k, (removed,) * seeds))
    return arms


def random_arms(num_units: int, ks: Sequence[int], seeds: int, sweep_seed: int) -> list[Arm]:
    """Remove ``k`` units drawn uniformly for each seed (a fresh draw per seed and ``k``)."""
    arms = []
    for k in _check_k(ks, num_units):
        removed = tuple(
            tuple(sorted(int(i) for i in np.random.default_rng([sweep_seed, 3, k, r]).choice(
                num_units, k, replace=False)))
            for r in range(seeds)
        )
        arms.append(Arm("random", k, removed))
    return arms


def named_arm(unit_names: Sequence[str], names: Sequence[str], seeds: int) -> Arm:
    """Remove the hand-picked units ``names`` (e.g. source classes semantically close to the
    target) in every seed."""
    index = {name: i for i, name in enumerate(unit_names)}
    unknown = [name for name in names if name not in index]
    if unknown:
        raise ConfigError(
            f"unknown source unit(s) {unknown}; valid names include"
            f" {', '.join(map(repr, list(unit_names)[:12]))}"
            f"{' ...' if len(unit_names) > 12 else ''}."
        )
    removed = tuple(sorted({index[name] for name in names}))
    _check_k([len(removed)], len(unit_names))
    return Arm("classes", len(removed), (removed,) * seeds)


def group_arm(unit_names: Sequence[str], groups: Sequence[str], seeds: int) -> Arm:
    """Remove every unit in the named groups, in every seed: a hand-picked baseline from the
    dataset's metadata. A unit belongs to each leading component of its ``/``-separated name,
    e.g. ``mnist/3`` to ``mnist`` (the shipped ``fashion_digits`` suite) and
    ``vehicles_1/bus`` to ``vehicles_1`` (CIFAR-100 loaded with ``label = "fine+coarse"``)."""
    members = {group: [name for name in unit_names if group in str(name).split("/")[:-1]]
               for group in groups}
    empty = [group for group, names in members.items() if not names]
    if empty:
        known = sorted({part for name in unit_names for part in str(name).split("/")[:-1]})
        raise ConfigError(f"no source unit belongs to group(s) {empty}; groups are the leading"
                          f" parts of '/'-separated unit names: {known[:20] or 'none here'}.")
    arm = named_arm(unit_names, [name for names in members.values() for name in names], seeds)
    return Arm("groups", arm.k, arm.removed)


def check_seeds(seeds: int) -> int:
    """At least two seeds: an interval needs a spread."""
    if seeds < 2:
        raise ConfigError(f"seeds must be >= 2 to give a confidence interval, got {seeds}.")
    return int(seeds)
