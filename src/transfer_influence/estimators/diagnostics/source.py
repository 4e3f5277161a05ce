"""Store access for the diagnostics: a sweep's completed models as blocks of masks and
class-mean outputs (:class:`SweepSource`), streamed once to every consumer."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal, NamedTuple, Protocol

import numpy as np

from ...errors import DataError, StoreError
from ...outputs import OutputVariant
from ...sweep.store import SweepStore
from ..difference_in_means import DEFAULT_CHUNK_MODELS, DifferenceInMeans, check_masks_outputs

Side = Literal["helpful", "harmful", "abs"]
SIDES: tuple[Side, ...] = ("helpful", "harmful", "abs")

class _Block(NamedTuple):
    indices: np.ndarray  # int64 [models]: model indices in the sweep
    masks: np.ndarray  # bool [models, units]
    values: np.ndarray  # float64 [models, targets]: one output variant


class SweepSource:
    """The completed models of a sweep, read block by block: model indices ``[models]``, masks
    bool ``[models, units]`` and one output variant, float64 ``[models, targets]``.

    Build it with :meth:`from_store` or :meth:`from_arrays`. Diagnostics may read it several
    times; every pass sees the same models in the same order.
    """

    def __init__(
        self,
        blocks: Callable[[], Iterator[_Block]],
        *,
        num_models: int,
        num_units: int,
        target_labels: np.ndarray,
        target_class_names: list[str],
        variant: str,
    ) -> None:
        self._blocks = blocks
        self.num_models = num_models
        self.num_units = num_units
        self.target_labels = target_labels
        self.target_class_names = target_class_names
        self.variant = variant

    @classmethod
    def from_store(
        cls,
        store: SweepStore,
        variant: OutputVariant = "prob_correct",
        *,
        chunk_models: int = DEFAULT_CHUNK_MODELS,
    ) -> SweepSource:
        """The models completed in ``store`` *now*, streamed ``chunk_models`` at a time.

        Models completed later (by a sweep still running) are left out of every pass, so
        diagnostics that read the store several times always see the same models.
        """
        completed = store.completed()
        if not completed.any():
            raise StoreError(
                f"no completed models in {store.path}; run (or resume) the sweep before"
                " diagnosing its influence estimates."
            )
        if chunk_models < 1:
            raise DataError(f"chunk_models must be >= 1, got {chunk_models}.")

        def blocks() -> Iterator[_Block]:
            for chunk in store.iter_completed_chunks(chunk_models):
                keep = completed[chunk.indices]
                if keep.any():
                    yield _Block(chunk.indices[keep], chunk.masks[keep],
                                 chunk.outputs.take(keep).variant(variant))

        return cls(
            blocks, num_models=int(completed.sum()), num_units=store.num_units,
            target_labels=store.target_labels, target_class_names=store.target_class_names,
            variant=variant,
        )

    @classmethod
    def from_arrays(
        cls,
        masks: np.ndarray,
        outputs: np.ndarray,
        target_labels: np.ndarray | Sequence[int],
        *,
        target_class_names: Sequence[str] | None = None,
        model_indices: np.ndarray | Sequence[int] | None = None,
        variant: str = "outputs",
        chunk_models: int = DEFAULT_CHUNK_MODELS,
    ) -> SweepSource:
        """In-memory models: ``masks`` bool ``[models, units]``, ``outputs`` float
        ``[models, targets]`` (one output variant, named ``variant`` in reports),
        ``target_labels`` int ``[targets]``.

        ``model_indices`` ``[models]`` are the models' indices in their sweep (default
        ``0 .. models - 1``); bootstrap weights and knockoff masks are keyed on them, so arrays
        read from a store give the same diagnostics as the store when given the store's
        indices. ``target_class_names`` defaults to the labels as strings.
        """
        masks, outputs = check_masks_outputs(masks, outputs)
        outputs = outputs.astype(np.float64, copy=False)
        labels = np.asarray(target_labels)
        if masks.shape[0] == 0:
            raise DataError("no models given; diagnostics need the masks and outputs of models.")
        if not np.isfinite(outputs).all():
            raise DataError(
                "outputs contain NaN or inf; drop diverged models (or use a bounded output"
                " variant such as prob_correct) before diagnosing influence."
            )
        if labels.shape != (outputs.shape[1],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"target_labels must be integers [targets] = [{outputs.shape[1]}], got"
                f" {labels.dtype} {labels.shape}."
            )
        names = ([str(c) for c in range(int(labels.max()) + 1)] if target_class_names is None
                 else [str(name) for name in target_class_names])
        if labels.min() < 0 or labels.max() >= len(names):
            raise DataError(
                f"target_labels must lie in [0, {len(names)}) to index target_class_names; got"
                f" range [{labels.min()}, {labels.max()}]."
            )
        indices = (np.arange(masks.shape[0]) if model_indices is None
                   else np.asarray(model_indices, dtype=np.int64).reshape(-1))
        if (indices.shape != (masks.shape[0],) or np.unique(indices).size != indices.size
                or indices.min() < 0):
            raise DataError(
                f"model_indices must be {masks.shape[0]} distinct non-negative integers, one per"
                f" model; got shape {indices.shape}."
            )
        if chunk_models < 1:
            raise DataError(f"chunk_models must be >= 1, got {chunk_models}.")

        def blocks() -> Iterator[_Block]:
            for start in range(0, masks.shape[0], chunk_models):
                rows = slice(start, start + chunk_models)
                yield _Block(indices[rows], masks[rows], outputs[rows])

        return cls(
            blocks, num_models=int(masks.shape[0]), num_units=int(masks.shape[1]),
            target_labels=labels.astype(np.int64), target_class_names=names, variant=variant,
        )

    def blocks(self) -> Iterator[_Block]:
        """One pass over the models, in blocks of ``(indices, masks, values)``."""
        return self._blocks()


class _ClassMeans:
    """Reduces outputs ``[models, targets]`` to ``[models, P + 1]``: the mean over the targets of
    each of the ``P`` target classes that have targets, then the mean over all targets."""

    def __init__(self, target_labels: np.ndarray, num_classes: int) -> None:
        labels = np.asarray(target_labels)
        self.num_classes = num_classes
        self.present = np.flatnonzero(np.bincount(labels, minlength=num_classes))
        self._order = np.argsort(labels, kind="stable")
        ordered = labels[self._order]
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self._counts = np.diff(np.r_[self._starts, labels.size])

    def __call__(self, values: np.ndarray) -> np.ndarray:
        reduced = np.empty((values.shape[0], self._starts.size + 1))
        reduced[:, :-1] = np.add.reduceat(values[:, self._order], self._starts, axis=1)
        reduced[:, :-1] /= self._counts
        reduced[:, -1] = values.mean(axis=1)
        return reduced

    def split(self, reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(overall [...], per_class [..., classes])`` from ``[..., P + 1]`` columns; classes
        without target examples get NaN."""
        per_class = np.full(reduced.shape[:-1] + (self.num_classes,), np.nan)
        per_class[..., self.present] = reduced[..., :-1]
        return reduced[..., -1], per_class


class _Consumer(Protocol):
    def update(self, position: int, block: _Block, reduced: np.ndarray) -> None:
        """Take a block whose first model is the ``position``-th of the source."""


def _stream(source: SweepSource, reducer: _ClassMeans, *consumers: _Consumer) -> None:
    """One pass over ``source``, feeding every block (and its class means) to each consumer."""
    position = 0
    for block in source.blocks():
        reduced = reducer(block.values)
        for consumer in consumers:
            consumer.update(position, block, reduced)
        position += block.indices.size


class _Estimate:
    """Difference-in-means of the reduced outputs over all models."""

    def __init__(self) -> None:
        self.sums = DifferenceInMeans()

    def update(self, position: int, block: _Block, reduced: np.ndarray) -> None:
        self.sums.update(block.masks, reduced)
