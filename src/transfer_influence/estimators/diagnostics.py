"""How far to trust a difference-in-means influence estimate, and whether to train more models.

Four diagnostics, all computed from the completed models of a sweep (a :class:`SweepSource`:
a :class:`~transfer_influence.sweep.store.SweepStore` streamed in blocks, or in-memory arrays;
both give the same numbers for the same models):

- **Split-half agreement** (:func:`split_half_agreement`): the models are split at random
  (``seed``) into two disjoint halves, influence is estimated on each, and the Spearman rank
  correlation between the two estimates is reported for the overall scores and, averaged over
  target classes, for the per-class scores. :func:`spearman_brown` turns a split-half
  correlation ``r`` into the reliability of the full sample, ``2 r / (1 + r)``.
- **Bootstrap standard errors**: each replicate reweights every model by an independent
  Poisson(1) count (a streaming-friendly bootstrap: a model's weight depends only on
  ``(seed, replicate, model index)``), and the weighted difference in means is accumulated block
  by block as matrix products. :func:`bootstrap_summary` gives the standard error of the overall
  and per-class scores and a **convergence curve** (mean standard error against the number of
  models, on prefixes of the model order, with its log-log slope: about ``-1/2``, the
  ``1/sqrt(m)`` law). :func:`bootstrap_se` gives the standard error of every influence value
  ``[units, targets]``, one replicate at a time.
- **Knockoff false discovery rate** (:func:`knockoff_fdr`, :func:`estimate_fdr`): knockoff
  units are given masks drawn independently from the same distribution as the real masks, so
  their "influence" on the same outputs is pure noise; how many of them score as high as the
  reported top-``k`` real units estimates how many of those could be noise.
- :func:`diagnose` / :func:`diagnose_store` run all of them in one pass and return a
  :class:`Diagnostics` whose :meth:`Diagnostics.verdict` says in words whether more models are
  needed.
- **Divergence association** (:func:`divergence_association`): diverged models are excluded
  from every estimate, which biases the influences when divergence depends on the subset. Each
  unit is tested for whether keeping it makes divergence more likely (one-sided Fisher exact
  test on the 2x2 table kept/dropped x diverged/completed, Benjamini-Hochberg adjusted), and
  the units significant at ``DIVERGENCE_FDR`` are named: such a unit is itself a finding.

Aggregates. The summaries users read are a unit's *overall* score (influence averaged over all
target examples, ``[units]``) and its *per-class* scores (averaged over the target examples of
each class, ``[units, classes]``). Difference-in-means is linear in the outputs, so the influence
averaged over some targets equals the influence on the output averaged over those targets. Each
block of outputs ``[models, targets]`` is therefore reduced once to ``[models, classes + 1]``
(class means, then the overall mean), and every diagnostic except :func:`bootstrap_se` runs on
that small matrix.

Memory and time of :func:`diagnose` (``M`` models, ``U`` units, ``T`` targets, ``C`` target
classes, ``B`` replicates, ``K`` knockoff units, ``n`` models per block): one pass over the
models. Held at once: a block's outputs (``2 n T`` float64), knockoff masks ``n K`` bool, the
bootstrap sums ``B U (C + 2)`` float64 (peak about four times that while a convergence point is
evaluated) and a few ``U (C + 2)`` sums -- independent of ``M``: a peak of about 320 MiB at
``U = 1,000, C = 100, B = 100`` (measured). The bootstrap dominates the time, about
``2 B M U (C + 2)`` floating-point operations (1 s for 300 models at those sizes on one core).
Only the split-half assignment grows with ``M`` (a permutation and a flag per model, ``9 M``
bytes); no diagnostic holds the models' masks or outputs all at once. ``per_target_se=True``
adds :func:`bootstrap_se`: ``B`` more passes over the models and about ``6 U T`` float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np
from scipy.stats import false_discovery_control, hypergeom, spearmanr

from ..atomic import read_json, write_json
from ..errors import DataError, StoreError
from ..outputs import OutputVariant
from ..ranking import top_indices
from ..sweep.masks import subset_masks
from ..sweep.store import SweepStore
from .difference_in_means import DEFAULT_CHUNK_MODELS, DifferenceInMeans, check_masks_outputs

Side = Literal["helpful", "harmful", "abs"]
SIDES: tuple[Side, ...] = ("helpful", "harmful", "abs")

DEFAULT_REPLICATES = 100
DEFAULT_FRACTIONS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0)
# Added to `seed` for the default knockoff seed, so knockoff masks never reuse the (small) seed
# of a sweep's real masks.
KNOCKOFF_SEED_OFFSET = 0x6B6E6F63

# Verdict thresholds (see Diagnostics.verdict).
MIN_SPLIT_HALF = 0.5
MIN_SIGNAL_TO_NOISE = 3.0
MAX_FDR = 0.2
CAUTION_FDR = 0.1
MIN_LDS = 0.1
DIVERGENCE_FDR = 0.05  # Benjamini-Hochberg level at which divergence_association names units

_WEIGHT_BLOCK = 1024  # bootstrap weights are drawn for blocks of this many model indices
_BLOCK_ELEMENTS = 2**22  # bound (float64 elements) on one bootstrap product's right-hand side


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


# ----------------------------------------------------------------------------- split halves
def spearman_brown(r: float) -> float:
    """Reliability of a full-sample estimate from the correlation ``r`` between two half-sample
    estimates: ``2 r / (1 + r)`` (Spearman-Brown prophecy formula for doubling the sample).

    It assumes the halves are exchangeable (equal size, models drawn alike), as a random split
    of the models makes them; for rank correlations it is a standard approximation. NaN for
    ``r <= -1`` or NaN ``r``.
    """
    return 2.0 * r / (1.0 + r) if r > -1.0 else math.nan


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation over entries finite in both; NaN with fewer than 3 such entries or
    a constant side."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.ptp(a[keep]) == 0 or np.ptp(b[keep]) == 0:
        return math.nan
    return float(spearmanr(a[keep], b[keep]).statistic)


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN if none), without numpy's empty-slice warning."""
    finite = np.asarray(values)[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


@dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous
class SplitHalf:
    """Agreement between influence estimated on two disjoint random halves of the models.

    ``overall``: Spearman correlation, across units, of the two halves' overall scores.
    ``per_class``: float ``[classes]``, the same for each target class's scores (NaN for a
    class without target examples). ``half_sizes``: models in each half.
    """

    overall: float
    per_class: np.ndarray
    half_sizes: tuple[int, int]

    @property
    def mean_per_class(self) -> float:
        """Mean of ``per_class`` over the classes where it is defined."""
        return _nanmean(self.per_class)

    @property
    def overall_full_sample(self) -> float:
        """Spearman-Brown reliability of the full-sample overall scores."""
        return spearman_brown(self.overall)

    @property
    def mean_per_class_full_sample(self) -> float:
        """Spearman-Brown reliability of the full-sample per-class scores (class mean)."""
        return spearman_brown(self.mean_per_class)


class _SplitHalves:
    """Difference-in-means on two disjoint halves: a random permutation (``seed``) of the
    source's model positions puts ``floor(M / 2)`` models in the first half."""

    def __init__(self, num_models: int, seed: int) -> None:
        if num_models < 4:
            raise DataError(
                f"split-half agreement needs at least 4 completed models, got {num_models};"
                " train more models."
            )
        first = np.random.default_rng(seed).permutation(num_models)[: num_models // 2]
        self._first = np.zeros(num_models, dtype=bool)
        self._first[first] = True
        self.halves = (DifferenceInMeans(), DifferenceInMeans())

    def update(self, position: int, block: _Block, reduced: np.ndarray) -> None:
        first = self._first[position:position + block.indices.size]
        self.halves[0].update(block.masks[first], reduced[first])
        self.halves[1].update(block.masks[~first], reduced[~first])

    def result(self, reducer: _ClassMeans) -> SplitHalf:
        (overall_a, class_a), (overall_b, class_b) = (
            reducer.split(half.result()) for half in self.halves
        )
        per_class = np.array(
            [_spearman(class_a[:, c], class_b[:, c]) for c in range(reducer.num_classes)]
        )
        return SplitHalf(
            overall=_spearman(overall_a, overall_b), per_class=per_class,
            half_sizes=(self.halves[0].num_models, self.halves[1].num_models),
        )


def split_half_agreement(source: SweepSource, *, seed: int = 0) -> SplitHalf:
    """Split the models of ``source`` into two random halves (``seed``), estimate influence on
    each, and correlate the estimates (see :class:`SplitHalf`).

    One pass over the source; memory ``O(units x classes)`` plus one block of outputs.
    """
    reducer = _ClassMeans(source.target_labels, len(source.target_class_names))
    halves = _SplitHalves(source.num_models, seed)
    _stream(source, reducer, halves)
    return halves.result(reducer)


# ----------------------------------------------------------------------------- bootstrap
def _check_replicates(replicates: int, seed: int) -> None:
    if replicates < 2:
        raise DataError(
            f"the bootstrap needs at least 2 replicates (100 or more for a stable standard"
            f" error), got {replicates}."
        )
    if seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed}.")


class _PoissonBootstrap:
    """Weighted difference-in-means sums for several Poisson(1) bootstrap replicates at once.

    Replicate ``r`` weighs model ``i`` by ``w[r, i]``, entry ``i % W`` of
    ``default_rng([seed, r, i // W]).poisson(1, W)`` (``W = 1024``): a pure function of
    ``(seed, r, i)``, so replicates do not depend on block boundaries or on which other models
    are completed. The influence of unit ``u`` in replicate ``r`` is the weighted mean of the
    outputs over models keeping ``u`` minus that over models dropping it. Weights are integers,
    so this is the plain difference in means of a resample in which model ``i`` appears
    ``w[r, i]`` times.

    State: float64 ``[units, R (P + 1)]`` weighted sums of the outputs (``P`` columns) and of
    the weights (last column) over models keeping each unit, and ``[R (P + 1)]`` over all models.
    """

    def __init__(self, seed: int, replicates: np.ndarray) -> None:
        self._seed = seed
        self._replicates = np.asarray(replicates, dtype=np.int64)
        self._with: np.ndarray | None = None
        self._total: np.ndarray | None = None
        self._cache: tuple[int, np.ndarray] | None = None  # (block, draws [W, R])

    def _draws(self, block: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != block:
            draws = np.empty((_WEIGHT_BLOCK, self._replicates.size))
            for column, replicate in enumerate(self._replicates):
                rng = np.random.default_rng([self._seed, int(replicate), block])
                draws[:, column] = rng.poisson(1.0, _WEIGHT_BLOCK)
            self._cache = (block, draws)
        return self._cache[1]

    def weights(self, indices: np.ndarray) -> np.ndarray:
        """float64 ``[models, R]`` weights of the models ``indices``."""
        weights = np.empty((indices.size, self._replicates.size))
        blocks = indices // _WEIGHT_BLOCK
        for block in np.unique(blocks):
            rows = np.flatnonzero(blocks == block)
            weights[rows] = self._draws(int(block))[indices[rows] % _WEIGHT_BLOCK]
        return weights

    def update(self, indices: np.ndarray, masks: np.ndarray, values: np.ndarray) -> None:
        """Add models ``indices`` with masks ``[models, units]`` and values ``[models, P]``."""
        replicates, columns = self._replicates.size, values.shape[1] + 1
        if self._with is None:
            self._with = np.zeros((masks.shape[1], replicates * columns))
            self._total = np.zeros(replicates * columns)
        weights = self.weights(indices)
        step = max(1, _BLOCK_ELEMENTS // (replicates * columns))
        for start in range(0, indices.size, step):
            rows = slice(start, start + step)
            w = weights[rows]
            weighted = np.empty((w.shape[0], replicates, columns))
            np.multiply(w[:, :, None], values[rows, None, :], out=weighted[:, :, :-1])
            weighted[:, :, -1] = w
            weighted = weighted.reshape(w.shape[0], -1)
            self._with += masks[rows].T.astype(np.float64) @ weighted
            self._total += weighted.sum(axis=0)

    def influence(self) -> np.ndarray:
        """float64 ``[R, units, P]`` replicate influences; NaN for a unit whose replicate has no
        model keeping it or none dropping it."""
        units = self._with.shape[0]
        replicates = self._replicates.size
        with_sums = self._with.reshape(units, replicates, -1)
        totals = self._total.reshape(replicates, -1)
        n_with = with_sums[:, :, -1:]  # integer-valued, so the zero tests below are exact
        n_without = totals[None, :, -1:] - n_with
        with np.errstate(invalid="ignore", divide="ignore"):
            influence = with_sums[:, :, :-1] / n_with
            influence -= (totals[None, :, :-1] - with_sums[:, :, :-1]) / n_without
        influence[((n_with == 0) | (n_without == 0))[:, :, 0]] = np.nan
        return influence.transpose(1, 0, 2)


def _replicate_se(samples: np.ndarray) -> np.ndarray:
    """Standard deviation (ddof 1) over axis 0 of the finite entries; NaN where fewer than 2."""
    finite = np.isfinite(samples)
    count = finite.sum(axis=0)
    mean = np.where(finite, samples, 0.0).sum(axis=0) / np.maximum(count, 1)
    deviations = np.where(finite, samples - mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt((deviations**2).sum(axis=0) / (count - 1))
    se[count < 2] = np.nan
    return se


@dataclass(frozen=True, eq=False)
class ConvergenceCurve:
    """Mean bootstrap standard error against the number of models.

    ``num_models`` int ``[points]``: prefix sizes (the first ``m`` models of the source, in
    model order). ``mean_se_overall`` ``[points]``: standard error of the overall scores,
    averaged over units. ``mean_se_per_class`` ``[points]``: of the per-class scores, averaged
    over units and classes. ``slope``: least-squares slope of ``log(mean_se_per_class)`` against
    ``log(num_models)``; independent models give about ``-1/2`` (SE proportional to
    ``1/sqrt(m)``), so halving the standard error takes four times the models. NaN with fewer
    than two usable points.
    """

    num_models: np.ndarray
    mean_se_overall: np.ndarray
    mean_se_per_class: np.ndarray
    slope: float


@dataclass(frozen=True, eq=False)
class BootstrapSummary:
    """Poisson-bootstrap standard errors of the aggregate scores over all models.

    ``se_overall`` float ``[units]``; ``se_per_class`` ``[units, classes]`` (NaN for classes
    without target examples); ``curve`` shows how they shrink with the number of models.
    """

    replicates: int
    seed: int
    se_overall: np.ndarray
    se_per_class: np.ndarray
    curve: ConvergenceCurve


def _prefix_sizes(num_models: int, fractions: Sequence[float]) -> np.ndarray:
    """Sorted distinct prefix sizes ``round(f M)`` (at least 2) for ``fractions``, always
    including ``M``."""
    if any(not 0.0 < float(f) <= 1.0 for f in fractions):
        raise DataError(f"fractions must lie in (0, 1], got {list(fractions)}.")
    sizes = {max(2, round(float(f) * num_models)) for f in fractions} | {num_models}
    return np.array(sorted(s for s in sizes if s <= num_models), dtype=np.int64)


class _BootstrapCurve:
    """Bootstrap of the reduced outputs with standard errors evaluated at prefix sizes."""

    def __init__(
        self, reducer: _ClassMeans, num_models: int, replicates: int, seed: int,
        fractions: Sequence[float],
    ) -> None:
        self._reducer = reducer
        self._sizes = _prefix_sizes(num_models, fractions)
        self._sums = _PoissonBootstrap(seed, np.arange(replicates))
        self._points: list[tuple[float, float]] = []
        self.se: tuple[np.ndarray, np.ndarray] | None = None  # at all models

    def update(self, position: int, block: _Block, reduced: np.ndarray) -> None:
        start, end = 0, block.indices.size
        while start < end:
            # Split the block at the next prefix size, where the standard error is evaluated.
            size = self._sizes[len(self._points)]
            stop = min(end, start + size - position)
            rows = slice(start, stop)
            self._sums.update(block.indices[rows], block.masks[rows], reduced[rows])
            start, position = stop, position + (stop - start)
            if position == size:
                self._evaluate()

    def _evaluate(self) -> None:
        overall, per_class = self._reducer.split(_replicate_se(self._sums.influence()))
        self._points.append((_nanmean(overall), _nanmean(per_class)))
        self.se = (overall, per_class)

    def result(self, replicates: int, seed: int) -> BootstrapSummary:
        sizes = self._sizes[:len(self._points)]
        se_overall, se_per_class = np.array(self._points).T
        usable = np.isfinite(se_per_class) & (se_per_class > 0)
        slope = (float(np.polyfit(np.log(sizes[usable]), np.log(se_per_class[usable]), 1)[0])
                 if usable.sum() >= 2 else math.nan)
        return BootstrapSummary(
            replicates=replicates, seed=seed, se_overall=self.se[0], se_per_class=self.se[1],
            curve=ConvergenceCurve(sizes, se_overall, se_per_class, slope),
        )


def bootstrap_summary(
    source: SweepSource,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> BootstrapSummary:
    """Poisson-bootstrap standard errors of the overall and per-class scores, and their
    convergence curve over prefixes holding ``fractions`` of the models.

    One pass over the source, all ``replicates`` at once. Memory: ``replicates x units x
    (classes + 2)`` float64 sums, a peak of about four times that while a curve point is
    evaluated; time about ``2 x replicates x models x units x (classes + 2)`` flops.
    """
    _check_replicates(replicates, seed)
    reducer = _ClassMeans(source.target_labels, len(source.target_class_names))
    curve = _BootstrapCurve(reducer, source.num_models, replicates, seed, fractions)
    _stream(source, reducer, curve)
    return curve.result(replicates, seed)


def bootstrap_se(
    source: SweepSource, *, replicates: int = DEFAULT_REPLICATES, seed: int = 0
) -> np.ndarray:
    """float64 ``[units, targets]``: Poisson-bootstrap standard error of every influence value.

    The replicates are those of :func:`bootstrap_summary` with the same ``seed`` (same model
    weights), computed **one at a time**: each replicate is a full pass over the source, and
    its influence ``[units, targets]`` is folded into a running mean and sum of squared
    deviations (Welford), so memory stays at about ``6 x units x targets`` float64 plus one
    block of outputs (``chunk_models x targets``, twice) whatever ``replicates`` is -- about
    480 MiB at 1,000 units x 10,000 targets. Time: ``replicates`` passes, each about
    ``2 x models x units x targets`` flops (in float64) plus reading the source; a store is
    re-read every pass. A replicate that leaves a unit without a model keeping (or dropping)
    it is skipped for that unit; a unit with fewer than 2 usable replicates gets NaN.
    """
    _check_replicates(replicates, seed)
    count = np.zeros(source.num_units, dtype=np.int64)
    mean = squares = None
    for replicate in range(replicates):
        sums = _PoissonBootstrap(seed, np.array([replicate]))
        for block in source.blocks():
            sums.update(block.indices, block.masks, block.values)
        sample = sums.influence()[0]
        usable = np.isfinite(sample[:, :1])  # a unit's row is all finite or all NaN
        if mean is None:
            mean, squares = np.zeros_like(sample), np.zeros_like(sample)
        count += usable[:, 0]
        delta = np.where(usable, sample - mean, 0.0)
        mean += delta / np.maximum(count, 1)[:, None]
        delta *= np.where(usable, sample - mean, 0.0)
        squares += delta
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(squares / (count - 1)[:, None])
    se[count < 2] = np.nan
    return se


# ----------------------------------------------------------------------------- knockoffs
def _orient(scores: np.ndarray, side: Side) -> np.ndarray:
    """Scores oriented so that larger = listed first on ``side`` (``helpful``: as is,
    ``harmful``: negated, ``abs``: absolute value)."""
    scores = np.asarray(scores, dtype=np.float64)
    return {"helpful": scores, "harmful": -scores, "abs": np.abs(scores)}[side]


def _oriented(scores: np.ndarray, side: Side) -> np.ndarray:
    """:func:`_orient`, NaN scores dropped."""
    oriented = _orient(scores, side)
    return oriented[np.isfinite(oriented)]


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise DataError(f"side must be one of {', '.join(SIDES)}, got {side!r}.")


def estimate_fdr(
    real_scores: np.ndarray, knockoff_scores: np.ndarray, k: int, *, side: Side = "helpful"
) -> float:
    """Knockoff estimate of the false discovery rate of the top-``k`` real units.

    Scores are oriented by ``side`` (``helpful``: as is; ``harmful``: negated; ``abs``:
    absolute value) and NaN scores dropped. With ``tau`` the ``k``-th largest oriented real
    score, ``U`` real and ``K`` knockoff scores::

        FDR_hat = min(1, (U / K) * #{knockoffs >= tau} / max(1, #{real >= tau}))

    Why: knockoff scores are draws from the null distribution (units whose masks are
    independent of the outputs), so ``(U / K) #{knockoffs >= tau}`` estimates how many of
    ``U`` null units would reach ``tau``. Assumptions: (1) models are independent draws and the
    knockoff masks follow the real masks' distribution (same ``alpha``, exact-count draws);
    (2) a real unit without effect scores like a knockoff -- true up to a small shift of order
    (sum of the real effects) / units, because exact-count masks make a unit's inclusion
    slightly anti-correlated with the others'; (3) all ``U`` real units are counted as
    potential nulls (as in Storey's estimator with ``pi0 = 1``), which makes the estimate
    conservative when many units have real effects.
    """
    _check_side(side)
    real = _oriented(real_scores, side)
    knockoffs = _oriented(knockoff_scores, side)
    if not 1 <= k <= real.size:
        raise DataError(f"k must lie in [1, {real.size}] (units with a defined score), got {k}.")
    if knockoffs.size == 0:
        raise DataError("no knockoff scores are defined; use more knockoff units and models.")
    tau = np.sort(real)[-k]
    expected_false = real.size / knockoffs.size * np.count_nonzero(knockoffs >= tau)
    return float(min(1.0, expected_false / max(1, np.count_nonzero(real >= tau))))


def null_threshold(
    knockoff_scores: np.ndarray, num_real_units: int, k: int, *, side: Side = "helpful"
) -> float:
    """The oriented score the ``k``-th best of ``num_real_units`` pure-noise units typically
    reaches: the ``1 - k / num_real_units`` quantile of the oriented knockoff scores.

    A top-``k`` list whose ``k``-th oriented score does not exceed it is indistinguishable from
    what noise alone would put there.
    """
    _check_side(side)
    knockoffs = _oriented(knockoff_scores, side)
    if not 1 <= k <= num_real_units or knockoffs.size == 0:
        raise DataError(
            f"need 1 <= k <= num_real_units and some defined knockoff scores; got k={k},"
            f" num_real_units={num_real_units}, {knockoffs.size} knockoff scores."
        )
    return float(np.quantile(knockoffs, 1.0 - k / num_real_units))


@dataclass(frozen=True, eq=False)
class KnockoffFDR:
    """Knockoff estimates for the top-``k`` units on ``side`` (see :func:`estimate_fdr`).

    ``fdr_overall``: for the overall scores; ``fdr_per_class`` float ``[classes]``: for each
    target class's scores (NaN for classes without target examples). ``null_overall`` /
    ``null_per_class`` ``[classes]``: :func:`null_threshold` of the matching knockoff scores
    (oriented by ``side``). ``knockoff_overall`` ``[knockoff_units]``: the knockoffs' overall
    scores. ``alpha``: fraction of units each knockoff mask keeps (inferred from the real
    masks), ``knockoff_seed``: the seed of the knockoff masks.
    """

    k: int
    side: Side
    num_knockoff_units: int
    alpha: float
    knockoff_seed: int
    fdr_overall: float
    fdr_per_class: np.ndarray
    null_overall: float
    null_per_class: np.ndarray
    knockoff_overall: np.ndarray

    @property
    def mean_fdr_per_class(self) -> float:
        """Mean of ``fdr_per_class`` over the classes where it is defined."""
        return _nanmean(self.fdr_per_class)


def _default_knockoff_units(num_units: int) -> int:
    """A multiple of ``num_units`` (so ``alpha`` is kept exactly), at least 4x and 200."""
    return num_units * max(4, math.ceil(200 / num_units))


class _Knockoffs:
    """Difference-in-means of knockoff masks ``subset_masks(seed, model indices, K, alpha)``,
    with ``alpha`` = mean kept fraction of the first block's real masks unless given."""

    def __init__(self, num_units: int, seed: int, alpha: float | None) -> None:
        self.num_units = num_units
        self.seed = seed
        self.alpha = alpha
        self.sums = DifferenceInMeans()

    def update(self, position: int, block: _Block, reduced: np.ndarray) -> None:
        if self.alpha is None:
            self.alpha = float(block.masks.mean())
        if not 0.0 < self.alpha < 1.0:
            raise DataError(
                f"the masks keep a fraction {self.alpha:.3g} of the units; knockoffs (and"
                " influence) need masks that keep some units and drop others."
            )
        knockoffs = subset_masks(self.seed, block.indices, self.num_units, self.alpha)
        if knockoffs.shape == block.masks.shape and np.array_equal(knockoffs, block.masks):
            raise DataError(
                f"knockoff seed {self.seed} reproduces the real masks; pass a knockoff_seed"
                " different from the sweep's seed."
            )
        self.sums.update(knockoffs, reduced)

    def result(
        self, reducer: _ClassMeans, real: np.ndarray, k: int, side: Side
    ) -> KnockoffFDR:
        real_overall, real_class = reducer.split(real)
        knock_overall, knock_class = reducer.split(self.sums.result())
        units = real.shape[0]
        fdr_class = np.full(reducer.num_classes, np.nan)
        null_class = np.full(reducer.num_classes, np.nan)
        for c in reducer.present:
            fdr_class[c] = estimate_fdr(real_class[:, c], knock_class[:, c], k, side=side)
            null_class[c] = null_threshold(knock_class[:, c], units, k, side=side)
        return KnockoffFDR(
            k=k, side=side, num_knockoff_units=self.num_units, alpha=self.alpha,
            knockoff_seed=self.seed,
            fdr_overall=estimate_fdr(real_overall, knock_overall, k, side=side),
            fdr_per_class=fdr_class,
            null_overall=null_threshold(knock_overall, units, k, side=side),
            null_per_class=null_class, knockoff_overall=knock_overall,
        )


def _check_k(k: int, num_units: int) -> None:
    if not 1 <= k <= num_units:
        raise DataError(
            f"k (the length of the top list) must lie in [1, {num_units}], the number of"
            f" units; got {k}."
        )


def _knockoff_setup(
    source: SweepSource, k: int, side: Side, num_knockoff_units: int | None,
    knockoff_seed: int | None, alpha: float | None, seed: int,
) -> _Knockoffs:
    _check_k(k, source.num_units)
    _check_side(side)
    units = (_default_knockoff_units(source.num_units) if num_knockoff_units is None
             else int(num_knockoff_units))
    if units < 2:
        raise DataError(f"num_knockoff_units must be >= 2, got {num_knockoff_units}.")
    knock_seed = seed + KNOCKOFF_SEED_OFFSET if knockoff_seed is None else int(knockoff_seed)
    if knock_seed < 0:
        raise DataError(f"knockoff_seed must be a non-negative integer, got {knockoff_seed}.")
    return _Knockoffs(units, knock_seed, alpha)


def knockoff_fdr(
    source: SweepSource,
    *,
    k: int = 5,
    side: Side = "helpful",
    num_knockoff_units: int | None = None,
    knockoff_seed: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
) -> KnockoffFDR:
    """Knockoff FDR of the top-``k`` units, overall and per target class (see
    :func:`estimate_fdr` for the estimator and its assumptions).

    Knockoff masks are ``subset_masks(knockoff_seed, model_indices, num_knockoff_units,
    alpha)``: drawn like the real masks but with another seed (default ``seed +
    KNOCKOFF_SEED_OFFSET``) and independent of the outputs. ``alpha`` defaults to the fraction
    of units the real masks keep. ``num_knockoff_units`` defaults to a multiple of the real
    units, at least 4 times and 200, so the null is well sampled. One pass; memory
    ``chunk_models x num_knockoff_units`` bool plus ``O((units + knockoff units) x classes)``;
    drawing the knockoff masks costs one small permutation per model.
    """
    knockoffs = _knockoff_setup(source, k, side, num_knockoff_units, knockoff_seed, alpha, seed)
    reducer = _ClassMeans(source.target_labels, len(source.target_class_names))
    estimate = _Estimate()
    _stream(source, reducer, estimate, knockoffs)
    return knockoffs.result(reducer, estimate.sums.result(), k, side)


# ----------------------------------------------------------------------------- verdict
@dataclass(frozen=True, eq=False)
class Diagnostics:
    """How far to trust the influence estimate of a sweep (see the module docstring).

    ``overall`` float ``[units]`` and ``per_class`` ``[units, classes]``: the difference-in-
    means scores over all ``num_models`` models. ``influence_se`` ``[units, targets]``: the
    per-value bootstrap standard error, when requested (else None). ``k`` and ``side`` define
    the top list that the knockoff FDR and the verdict judge.
    """

    variant: str
    num_models: int
    k: int
    side: Side
    target_class_names: list[str]
    overall: np.ndarray
    per_class: np.ndarray
    split_half: SplitHalf
    bootstrap: BootstrapSummary
    knockoffs: KnockoffFDR
    influence_se: np.ndarray | None = None

    def top_units(self) -> np.ndarray:
        """int ``[k]``: the top-``k`` units by overall score on ``side`` (NaN never listed)."""
        return top_indices(_orient(self.overall, self.side), self.k)

    def signal_to_noise(self) -> float:
        """Smallest ``oriented overall score / bootstrap SE`` among the top-``k`` units: how
        many standard errors the weakest listed unit sits from zero (NaN if undefined)."""
        top = self.top_units()
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = _orient(self.overall[top], self.side) / self.bootstrap.se_overall[top]
        return float(np.min(ratios)) if top.size and np.isfinite(ratios).all() else math.nan

    def models_needed(self, ratio: float = MIN_SIGNAL_TO_NOISE) -> int | None:
        """Extra models for the weakest top-``k`` score to reach ``ratio`` standard errors, by
        the ``1/sqrt(m)`` law: ``ceil(m ((ratio / now)^2 - 1))``, at least 0. None when the
        current ratio is not positive (no extrapolation possible)."""
        now = self.signal_to_noise()
        if not now > 0:
            return None
        return max(0, math.ceil(self.num_models * ((ratio / now) ** 2 - 1.0)))

    def _problems(self, lds: float | None) -> list[str]:
        """Reasons to train more models (empty if none)."""
        problems = []
        split = self.split_half
        if not split.overall >= MIN_SPLIT_HALF:
            problems.append(
                f"the overall ranking does not reproduce across halves of the models (split-half"
                f" Spearman {split.overall:.2f} < {MIN_SPLIT_HALF})"
            )
        if not split.mean_per_class >= MIN_SPLIT_HALF:
            problems.append(
                f"the per-class rankings do not reproduce across halves (mean split-half"
                f" Spearman {split.mean_per_class:.2f} < {MIN_SPLIT_HALF})"
            )
        snr = self.signal_to_noise()
        if not snr >= MIN_SIGNAL_TO_NOISE:
            needed = self.models_needed()
            problems.append(
                f"the weakest of the top-{self.k} {self.side} scores is only {snr:.1f} bootstrap"
                f" standard errors from zero (want >= {MIN_SIGNAL_TO_NOISE:g}"
                + ("" if needed is None else
                   f"; if these scores are real, about {needed} more models get there")
                + ")"
            )
        if not self.knockoffs.fdr_overall <= MAX_FDR:
            problems.append(
                f"the knockoff FDR of the top-{self.k} is {self.knockoffs.fdr_overall:.2f}"
                f" (> {MAX_FDR}): noise units score as high"
            )
        if lds is not None and not lds >= MIN_LDS:
            problems.append(
                f"the held-out LDS is {lds:.2f}, near zero: the outputs look like noise with"
                " respect to the masks"
            )
        return problems

    def needs_more_models(self, lds: float | None = None) -> bool:
        """Whether :meth:`verdict` asks for more models."""
        return bool(self._problems(lds))

    def recommended_models(self, lds: float | None = None) -> int | None:
        """Total models :meth:`verdict` asks for (None when the current ones are enough):
        ``m +`` :meth:`models_needed` when only the signal-to-noise ratio falls short and can be
        extrapolated, else ``4 m``."""
        problems = self._problems(lds)
        if not problems:
            return None
        if self._snr_only(problems):
            return self.num_models + self.models_needed()
        return 4 * self.num_models

    def _snr_only(self, problems: list[str]) -> bool:
        """Whether the only problem is a signal-to-noise ratio that can be extrapolated."""
        return (len(problems) == 1 and self.signal_to_noise() < MIN_SIGNAL_TO_NOISE
                and self.models_needed() is not None)

    def verdict(self, lds: float | None = None) -> list[str]:
        """A short verdict in words: the first line says whether to train more models (and
        about how many), the others give the numbers behind it.

        More models are asked for when any of these holds (thresholds are module constants):
        split-half Spearman of the overall scores, or its mean over target classes, below
        ``MIN_SPLIT_HALF`` (0.5); the weakest top-``k`` score less than ``MIN_SIGNAL_TO_NOISE``
        (3) bootstrap standard errors from zero; knockoff FDR of the top-``k`` above ``MAX_FDR``
        (0.2); an externally computed held-out linear datamodeling score ``lds`` below
        ``MIN_LDS`` (0.1). How many: by the ``1/sqrt(m)`` law, the models for the weakest
        top-``k`` score to reach 3 standard errors (:meth:`models_needed`); when the ranking,
        the knockoffs or the LDS say the top list may be noise, at least ``3 m`` more (four
        times the models, halving every standard error), after which the diagnostics should
        be run again. An FDR between ``CAUTION_FDR`` (0.1) and 0.2 adds a caution line only.
        """
        m = self.num_models
        problems = self._problems(lds)
        if self._snr_only(problems):
            more = self.models_needed()
            summary = (
                f"Train more models: about {more} more ({m + more} in total) before trusting"
                f" the top-{self.k} {self.side} units: {problems[0]}."
            )
        elif problems:
            summary = (
                f"Train more models: at least {3 * m} more ({4 * m} in total, halving every"
                f" standard error), then rerun these diagnostics, before trusting the"
                f" top-{self.k} {self.side} units: " + "; ".join(problems) + "."
            )
        else:
            summary = (
                f"Enough models ({m}) for the top-{self.k} {self.side} units: they reproduce"
                " across halves, stand clear of the bootstrap noise and of the knockoffs."
            )
        lines = [summary]
        split = self.split_half
        lines.append(
            f"Split-half agreement ({split.half_sizes[0]} + {split.half_sizes[1]} models):"
            f" Spearman {split.overall:.2f} overall (full-sample reliability"
            f" {split.overall_full_sample:.2f} by Spearman-Brown), {split.mean_per_class:.2f}"
            " per target class on average."
        )
        curve = self.bootstrap.curve
        lines.append(
            f"Bootstrap ({self.bootstrap.replicates} replicates): the top-{self.k} scores are at"
            f" least {self.signal_to_noise():.1f} standard errors from zero; the mean standard"
            f" error falls as m^{curve.slope:.2f} from {curve.num_models[0]} to"
            f" {curve.num_models[-1]} models (1/sqrt(m) law: m^-0.50), so halving it takes"
            f" about {3 * m} more models."
        )
        knock = self.knockoffs
        kth = float(_orient(self.overall[self.top_units()[-1]], self.side))
        lines.append(
            f"Knockoffs ({knock.num_knockoff_units} noise units): estimated FDR of the"
            f" top-{self.k} is {knock.fdr_overall:.2f} overall and {knock.mean_fdr_per_class:.2f}"
            f" per target class on average; among {self.overall.size} pure-noise units, rank"
            f" {self.k} would typically score {knock.null_overall:.3g} ({self.side}), the real"
            f" rank-{self.k} score is {kth:.3g}"
            + (" -- indistinguishable from noise." if kth <= knock.null_overall else ".")
        )
        if CAUTION_FDR < knock.fdr_overall <= MAX_FDR:
            lines.append(
                f"Caution: a knockoff FDR of {knock.fdr_overall:.2f} means about one listed unit"
                f" in {max(1, round(1 / knock.fdr_overall))} may be noise."
            )
        if lds is not None:
            lines.append(
                f"Held-out linear datamodeling score (LDS): {lds:.2f}"
                + (" -- the outputs look like noise with respect to the masks." if lds < MIN_LDS
                   else ".")
            )
        return lines


def diagnose(
    source: SweepSource,
    *,
    k: int = 5,
    side: Side = "helpful",
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    num_knockoff_units: int | None = None,
    knockoff_seed: int | None = None,
    per_target_se: bool = False,
) -> Diagnostics:
    """Split-half agreement, bootstrap standard errors with their convergence curve, and the
    knockoff FDR of the top-``k`` units on ``side``, in one pass over ``source``.

    ``seed`` drives the split, the bootstrap weights and (offset by ``KNOCKOFF_SEED_OFFSET``)
    the knockoff masks unless ``knockoff_seed`` is given. ``per_target_se`` also computes
    :func:`bootstrap_se` (``replicates`` more passes). Memory and time: see the module
    docstring.
    """
    _check_replicates(replicates, seed)
    knockoffs = _knockoff_setup(source, k, side, num_knockoff_units, knockoff_seed, None, seed)
    reducer = _ClassMeans(source.target_labels, len(source.target_class_names))
    estimate = _Estimate()
    halves = _SplitHalves(source.num_models, seed)
    curve = _BootstrapCurve(reducer, source.num_models, replicates, seed, fractions)
    _stream(source, reducer, estimate, halves, curve, knockoffs)
    real = estimate.sums.result()
    overall, per_class = reducer.split(real)
    return Diagnostics(
        variant=source.variant, num_models=source.num_models, k=k, side=side,
        target_class_names=list(source.target_class_names), overall=overall,
        per_class=per_class, split_half=halves.result(reducer),
        bootstrap=curve.result(replicates, seed),
        knockoffs=knockoffs.result(reducer, real, k, side),
        influence_se=(bootstrap_se(source, replicates=replicates, seed=seed)
                      if per_target_se else None),
    )


def diagnose_store(
    store: SweepStore,
    variant: OutputVariant = "prob_correct",
    *,
    k: int = 5,
    side: Side = "helpful",
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    num_knockoff_units: int | None = None,
    knockoff_seed: int | None = None,
    per_target_se: bool = False,
    chunk_models: int = DEFAULT_CHUNK_MODELS,
) -> Diagnostics:
    """:func:`diagnose` on the models completed in ``store``, output ``variant``, streamed
    ``chunk_models`` at a time; raises :class:`StoreError` when no model is completed."""
    return diagnose(
        SweepSource.from_store(store, variant, chunk_models=chunk_models), k=k, side=side,
        replicates=replicates, seed=seed, fractions=fractions,
        num_knockoff_units=num_knockoff_units, knockoff_seed=knockoff_seed,
        per_target_se=per_target_se,
    )


@dataclass(frozen=True, eq=False)
class DivergenceAssociation:
    """Whether keeping each unit makes training diverge more often.

    ``diverged_with`` / ``kept`` ``[units]``: diverged models among the ``kept`` finished
    (completed or diverged) models that kept the unit; ``diverged_without`` / ``dropped`` the
    same among those that dropped it. ``p_value``: one-sided Fisher exact test that divergence is
    more likely with the unit; ``q_value``: Benjamini-Hochberg adjusted over the units.
    """

    unit_names: list[str]
    num_models: int
    num_diverged: int
    diverged_with: np.ndarray
    kept: np.ndarray
    diverged_without: np.ndarray
    dropped: np.ndarray
    p_value: np.ndarray
    q_value: np.ndarray

    def named(self, level: float = DIVERGENCE_FDR) -> list[str]:
        """Units whose presence makes divergence more likely (``q_value <= level``), most
        significant first."""
        hits = np.flatnonzero(self.q_value <= level)
        return [self.unit_names[u] for u in hits[np.argsort(self.p_value[hits], kind="stable")]]

    def describe(self, level: float = DIVERGENCE_FDR) -> list[str]:
        """One line per named unit: its divergence rate with and without it, and ``q``."""
        position = {name: u for u, name in enumerate(self.unit_names)}
        lines = []
        for name in self.named(level):
            u = position[name]
            lines.append(f"{name}: {self.diverged_with[u]}/{self.kept[u]} models diverged with"
                         f" it, {self.diverged_without[u]}/{self.dropped[u]} without"
                         f" (q = {self.q_value[u]:.2g})")
        return lines


def divergence_association(masks: np.ndarray, diverged: np.ndarray,
                           unit_names: Sequence[str]) -> DivergenceAssociation:
    """Test every unit for association with divergence over finished models ``masks``
    (``bool [models, units]``) of which ``diverged`` (``bool [models]``) diverged.

    The one-sided Fisher exact p-value is the hypergeometric tail ``P(X >= diverged_with)``
    for ``X`` the diverged models among ``kept`` drawn from all models, computed for all units at
    once (identical to :func:`scipy.stats.fisher_exact` with ``alternative="greater"``).
    """
    masks = np.asarray(masks, dtype=bool)
    diverged = np.asarray(diverged, dtype=bool)
    if masks.ndim != 2 or diverged.shape != (masks.shape[0],) or masks.shape[1] != len(unit_names):
        raise DataError(
            f"give masks [models, units], one diverged flag per model and one name per unit; got"
            f" masks {masks.shape}, {diverged.shape} flags and {len(unit_names)} names."
        )
    kept = masks.sum(axis=0).astype(np.int64)
    with_ = masks[diverged].sum(axis=0).astype(np.int64)
    total, bad = masks.shape[0], int(diverged.sum())
    p_value = hypergeom.sf(with_ - 1, total, bad, kept) if bad else np.ones(masks.shape[1])
    p_value = np.clip(np.asarray(p_value, dtype=np.float64), 0.0, 1.0)
    return DivergenceAssociation(
        unit_names=[str(n) for n in unit_names], num_models=total, num_diverged=bad,
        diverged_with=with_, kept=kept, diverged_without=bad - with_, dropped=total - kept,
        p_value=p_value, q_value=false_discovery_control(p_value),
    )


def divergence_association_store(store: SweepStore) -> DivergenceAssociation:
    """:func:`divergence_association` over the completed and diverged models of ``store``."""
    diverged = store.read_diverged()
    masks = np.concatenate([store.read_masks(), diverged.masks])
    flags = np.arange(masks.shape[0]) >= masks.shape[0] - diverged.indices.size
    return divergence_association(masks, flags, store.unit_names)


# ----------------------------------------------------------------------------- saved summary
@dataclass(frozen=True)
class DiagnosticsSummary:
    """What ``transfer-influence diagnose`` saves beside the store (JSON), for the report and
    for the standard errors shown next to ranked units.

    ``metrics``: named numbers (split-half agreement, knockoff FDR, signal-to-noise, slope of
    the convergence curve and, when it could be fitted, the held-out LDS of a ridge
    datamodel); ``convergence_models`` / ``convergence_mean_se``: the convergence curve of the
    per-class standard error; ``se_overall`` ``[units]`` and ``se_per_class``
    ``[units][classes]``: bootstrap standard errors of the difference-in-means scores.
    ``num_diverged``: diverged models excluded from all of it; ``divergence_units``: the units
    whose presence makes divergence more likely (:func:`divergence_association`).
    """

    variant: str
    num_models: int
    k: int
    side: str
    needs_more_models: bool
    verdict: list[str]
    metrics: dict[str, float]
    convergence_models: list[int]
    convergence_mean_se: list[float]
    se_overall: list[float]
    se_per_class: list[list[float]]
    num_diverged: int = 0
    divergence_units: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_diagnostics(cls, diagnostics: Diagnostics, lds: float | None = None,
                         divergence: DivergenceAssociation | None = None) -> DiagnosticsSummary:
        """Summarise ``diagnostics`` (and an optional held-out LDS and divergence association)
        for saving; the verdict then also says how many diverged models were excluded and
        names the units associated with divergence."""
        verdict = diagnostics.verdict(lds)
        if divergence is not None and divergence.num_diverged:
            verdict.append(
                f"{divergence.num_diverged} of {divergence.num_models} models diverged and are"
                " excluded from every estimate."
                + (" Units whose presence makes divergence more likely (Fisher exact,"
                   f" Benjamini-Hochberg q <= {DIVERGENCE_FDR}): "
                   + "; ".join(divergence.describe()) + "." if divergence.named() else
                   " No unit is significantly associated with divergence."))
        curve = diagnostics.bootstrap.curve
        metrics = {
            "split-half Spearman, overall": diagnostics.split_half.overall,
            "split-half Spearman, per class (mean)": diagnostics.split_half.mean_per_class,
            f"knockoff FDR of the top-{diagnostics.k}, overall": diagnostics.knockoffs.fdr_overall,
            f"knockoff FDR of the top-{diagnostics.k}, per class (mean)":
                diagnostics.knockoffs.mean_fdr_per_class,
            f"weakest top-{diagnostics.k} score / bootstrap SE": diagnostics.signal_to_noise(),
            "convergence slope (SE ~ m^slope)": curve.slope,
        }
        if lds is not None:
            metrics["held-out LDS (ridge datamodel)"] = lds
        return cls(
            variant=diagnostics.variant, num_models=diagnostics.num_models, k=diagnostics.k,
            side=diagnostics.side, needs_more_models=diagnostics.needs_more_models(lds),
            verdict=verdict,
            metrics={name: float(value) for name, value in metrics.items()},
            convergence_models=[int(m) for m in curve.num_models],
            convergence_mean_se=[float(v) for v in curve.mean_se_per_class],
            se_overall=[float(v) for v in diagnostics.bootstrap.se_overall],
            se_per_class=np.asarray(diagnostics.bootstrap.se_per_class, dtype=float).tolist(),
            num_diverged=0 if divergence is None else divergence.num_diverged,
            divergence_units=[] if divergence is None else divergence.named(),
        )

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (NaN written as null)."""
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DiagnosticsSummary:
        """Read a summary written by :meth:`save` (nulls back to NaN)."""
        def build(raw: dict) -> DiagnosticsSummary:
            def nan(v: float | None) -> float:
                return math.nan if v is None else v

            raw["metrics"] = {k: nan(v) for k, v in raw["metrics"].items()}
            for key in ("convergence_mean_se", "se_overall"):
                raw[key] = [nan(v) for v in raw[key]]
            raw["se_per_class"] = [[nan(v) for v in row] for row in raw["se_per_class"]]
            return cls(**raw)

        return read_json(path, build, what="diagnostics", command="diagnose")
