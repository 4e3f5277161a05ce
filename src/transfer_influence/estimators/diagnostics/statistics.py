"""The statistics of the diagnostics: split-half agreement, Poisson-bootstrap standard errors
and their convergence, knockoff false discovery rates, and the association of units with
divergence (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import false_discovery_control, hypergeom, spearmanr

from ...errors import DataError
from ...sweep.masks import subset_masks
from ...sweep.store import SweepStore
from ..difference_in_means import DifferenceInMeans
from .source import SIDES, Side, SweepSource, _Block, _ClassMeans, _Estimate, _stream

DEFAULT_REPLICATES = 100
DEFAULT_FRACTIONS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0)
# Added to `seed` for the default knockoff seed, so knockoff masks never reuse the (small) seed
# of a sweep's real masks.
KNOCKOFF_SEED_OFFSET = 0x6B6E6F63

DIVERGENCE_FDR = 0.05  # Benjamini-Hochberg level at which divergence_association names units

_WEIGHT_BLOCK = 1024  # bootstrap weights are drawn for blocks of this many model indices
_BLOCK_ELEMENTS = 2**22  # bound (float64 elements) on one bootstrap product's right-hand side


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
        assert self._with is not None and self._total is not None  # callers update() first
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
        assert self.se is not None  # the last prefix size is all models, evaluated last
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
    assert squares is not None  # replicates >= 2 (checked), each a pass over the source
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
    return float(min(1.0, expected_false / max(1, int(np.count_nonzero(real >= tau)))))


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
        assert self.alpha is not None  # set by the first update()
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
