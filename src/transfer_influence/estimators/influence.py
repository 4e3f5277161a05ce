"""Influence estimation straight from a sweep store."""

from __future__ import annotations

import numpy as np

from ..errors import DataError, StoreError
from ..outputs import OutputVariant
from ..sweep.store import SweepStore
from .datamodels import fit_datamodels
from .difference_in_means import DEFAULT_CHUNK_MODELS, DifferenceInMeans
from .result import METHODS, InfluenceResult


def estimate_influence(
    store: SweepStore,
    variant: OutputVariant = "prob_correct",
    *,
    method: str = "dim",
    seed: int = 0,
    chunk_models: int = DEFAULT_CHUNK_MODELS,
) -> InfluenceResult:
    """Difference-in-means influence of every unit on every target example of ``store``.

    Streams the completed models in blocks of ``chunk_models``, computing the output
    ``variant`` per block, so memory is ``O(units x targets + chunk_models x targets)``
    however many models the sweep has (about 240 MiB + 30 bytes x chunk_models x targets at
    1,000 units x 10,000 targets; lower ``chunk_models`` if that is too much). Models not yet
    completed are ignored, and so are diverged ones; the result records how many models it used
    (``num_models``) and how many diverged models it excluded (``num_diverged``).

    ``method="ridge"`` or ``"lasso"`` returns linear datamodel weights instead
    (:func:`~transfer_influence.estimators.datamodels.fit_datamodels`, held-out models chosen
    with ``seed``; it holds all completed models in memory), with their held-out LDS.
    """
    if method not in METHODS:
        raise DataError(f"unknown estimation method {method!r}; choose one of"
                        f" {', '.join(METHODS)}.")
    if method == "dim":
        accumulator = DifferenceInMeans()
        for chunk in store.iter_completed_chunks(chunk_models):
            accumulator.update(chunk.masks, chunk.outputs.variant(variant))
        if accumulator.num_models == 0:
            raise _no_models(store)
        return InfluenceResult(
            influence=accumulator.result(), unit_names=store.unit_names,
            target_labels=store.target_labels, target_class_names=store.target_class_names,
            variant=variant, num_models=accumulator.num_models,
            counts_with=accumulator.counts_with, counts_without=accumulator.counts_without,
            num_diverged=int(store.diverged().sum()))
    masks = store.read_masks()  # the counts need only the masks; datamodels read the outputs
    if masks.shape[0] == 0:
        raise _no_models(store)
    counts_with = masks.sum(axis=0).astype(np.int64)
    datamodels = fit_datamodels(store, variant, method, seed=seed)  # type: ignore[arg-type]
    lds = None if np.isnan(datamodels.lds) else float(datamodels.lds)
    return InfluenceResult(
        influence=datamodels.weights, unit_names=store.unit_names,
        target_labels=store.target_labels, target_class_names=store.target_class_names,
        variant=variant, num_models=masks.shape[0], counts_with=counts_with,
        counts_without=masks.shape[0] - counts_with, method=method, heldout_lds=lds,
        num_diverged=int(store.diverged().sum()))


def _no_models(store: SweepStore) -> StoreError:
    return StoreError(
        f"no completed models in {store.path}; run (or resume) the sweep before estimating."
    )
