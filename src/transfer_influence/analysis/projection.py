"""Label projection: describe a target example in source terms.

The source classes with the largest positive influence on a target example are what the
pretrained model "thinks" the example is, in the source's vocabulary (Jain et al. 2022, section
5): a photo of a target "bird" projected onto "ostrich", "peacock", ... An unexpected projection
points at what the model relies on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from ..estimators.result import InfluenceResult
from ..sweep.store import SweepStore


@dataclass(frozen=True)
class LabelProjection:
    """The ``k`` source units with the largest positive influence on one target test example."""

    target_index: int
    true_class: str
    predicted_class: str | None
    sources: list[tuple[str, float]]


def consensus_predictions(store: SweepStore, chunk_models: int = 256) -> np.ndarray:
    """int64 ``[targets]``: the class most of the sweep's completed models predict for each
    target example (ties: the smaller class index), streamed over the store."""
    num_classes = len(store.target_class_names)
    votes = np.zeros((store.num_targets, num_classes), dtype=np.int64)
    for chunk in store.iter_completed_chunks(chunk_models):
        for c in range(num_classes):
            votes[:, c] += (chunk.outputs.predicted == c).sum(axis=0)
    if votes.sum() == 0:
        raise DataError(f"no completed models in {store.path}; run the sweep first.")
    return votes.argmax(axis=1)


def default_examples(result: InfluenceResult) -> list[int]:
    """One target test example per target class (the first of each), a sensible sample."""
    labels = np.asarray(result.target_labels)
    return [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]


def project_labels(
    result: InfluenceResult,
    examples: Sequence[int],
    *,
    k: int = 5,
    predictions: np.ndarray | None = None,
) -> list[LabelProjection]:
    """Label projections of target test ``examples`` (indices): their ``k`` most positively
    influential source units, with the true and (if ``predictions`` ``[targets]`` is given)
    predicted class names."""
    influence = np.asarray(result.influence)
    targets = influence.shape[1]
    if k < 1:
        raise DataError(f"k must be >= 1, got {k}.")
    bad = [int(i) for i in examples if not 0 <= int(i) < targets]
    if bad:
        raise DataError(f"target example indices {bad} are out of range; the target test set"
                        f" has {targets} examples (0 to {targets - 1}).")
    names = result.target_class_names
    projections = []
    for index in examples:
        column = influence[:, int(index)]
        valid = np.flatnonzero(~np.isnan(column))
        order = valid[np.argsort(-column[valid], kind="stable")][:k]
        predicted = None if predictions is None else names[int(predictions[int(index)])]
        projections.append(LabelProjection(
            int(index), names[int(result.target_labels[int(index)])], predicted,
            [(result.unit_names[u], float(column[u])) for u in order]))
    return projections
