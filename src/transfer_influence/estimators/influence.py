"""Influence estimation straight from a sweep store."""

from __future__ import annotations

import numpy as np

from ..devices import datamodel_device
from ..errors import StoreError
from ..outputs import OutputVariant
from ..sweep.store import SweepStore
from .datamodels import completed_models
from .difference_in_means import DEFAULT_CHUNK_MODELS, DifferenceInMeans
from .registry import get_estimator
from .result import InfluenceResult


def estimate_influence(
    store: SweepStore,
    variant: OutputVariant = "prob_correct",
    *,
    method: str = "dim",
    seed: int = 0,
    chunk_models: int = DEFAULT_CHUNK_MODELS,
    device: str = "cpu",
) -> InfluenceResult:
    """Difference-in-means influence of every unit on every target example of ``store``.

    Streams the completed models in blocks of ``chunk_models``, computing the output
    ``variant`` per block, so memory is ``O(units x targets + chunk_models x targets)``
    however many models the sweep has (about 240 MiB + 30 bytes x chunk_models x targets at
    1,000 units x 10,000 targets; lower ``chunk_models`` if that is too much). Models not yet
    completed are ignored, and so are diverged ones; the result records how many models it used
    (``num_models``) and how many diverged models it excluded (``num_diverged``).

    Any other ``method`` is an estimator by name (``ridge`` or ``lasso``: linear datamodel
    weights, held-out models chosen with ``seed``, with their held-out LDS; or one registered
    with :func:`~transfer_influence.estimators.registry.register_estimator`), given all completed
    models' masks and outputs at once (in memory). ``dim`` is the registered estimator
    ``difference_in_means`` computed in streamed blocks: the same numbers in bounded memory.

    ``device`` is a config's ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``):
    ``ridge`` and ``lasso`` datamodels are fitted there with torch (on the CPU with NumPy/SciPy,
    see :func:`~transfer_influence.devices.datamodel_device`); ``dim`` always runs on the CPU.
    """
    torch_device = datamodel_device(device)
    estimator = get_estimator(method)
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
    _, masks, outputs = completed_models(store, variant)
    estimate = estimator(masks, outputs, seed=seed, device=torch_device)
    counts_with = masks.sum(axis=0).astype(np.int64)
    return InfluenceResult(
        influence=estimate.influence, unit_names=store.unit_names,
        target_labels=store.target_labels, target_class_names=store.target_class_names,
        variant=variant, num_models=masks.shape[0], counts_with=counts_with,
        counts_without=masks.shape[0] - counts_with, method=method,
        heldout_lds=estimate.heldout_lds, num_diverged=int(store.diverged().sum()))


def _no_models(store: SweepStore) -> StoreError:
    return StoreError(
        f"no completed models in {store.path}; run (or resume) the sweep before estimating."
    )
