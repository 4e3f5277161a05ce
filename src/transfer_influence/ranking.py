"""The one top-k rule: every ranked list, removal arm and report table orders scores with it.

Highest (or lowest) first; ties keep index order (a stable sort, so results do not depend on the
sort algorithm); NaN scores (e.g. a unit no completed model kept) are never ranked, rather than
counted as 0 or sorted to either end.
"""

from __future__ import annotations

import numpy as np

from .errors import DataError


def top_indices(scores: np.ndarray, k: int | None = None, *, largest: bool = True) -> np.ndarray:
    """Int64 indices of the ``k`` largest (``largest``) or smallest entries of float ``scores``
    ``[n]``, best first, NaN entries left out (so fewer than ``k`` when fewer are defined);
    ``k=None`` ranks every defined entry."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise DataError(f"scores to rank must be one-dimensional, got shape {scores.shape}.")
    if k is not None and k < 0:
        raise DataError(f"k must be >= 0, got {k}.")
    valid = np.flatnonzero(~np.isnan(scores))
    order = valid[np.argsort(-scores[valid] if largest else scores[valid], kind="stable")]
    return order if k is None else order[:k]
