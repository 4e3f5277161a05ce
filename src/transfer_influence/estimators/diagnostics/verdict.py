"""The verdict: every diagnostic of a sweep in one pass (:func:`diagnose`), and what it says
in words about trusting the ranking and training more models (:class:`Diagnostics`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...outputs import OutputVariant
from ...ranking import top_indices
from ...sweep.store import SweepStore
from ..difference_in_means import DEFAULT_CHUNK_MODELS
from .source import Side, SweepSource, _ClassMeans, _Estimate, _stream
from .statistics import (
    DEFAULT_FRACTIONS,
    DEFAULT_REPLICATES,
    BootstrapSummary,
    KnockoffFDR,
    SplitHalf,
    _BootstrapCurve,
    _check_replicates,
    _knockoff_setup,
    _orient,
    _SplitHalves,
    bootstrap_se,
)

# Verdict thresholds (see Diagnostics.verdict).
MIN_SPLIT_HALF = 0.5
MIN_SIGNAL_TO_NOISE = 3.0
MAX_FDR = 0.2
CAUTION_FDR = 0.1
MIN_LDS = 0.1


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
        more = self._snr_only(problems)
        if more is not None:
            return self.num_models + more
        return 4 * self.num_models

    def _snr_only(self, problems: list[str]) -> int | None:
        """:meth:`models_needed` when the only problem is a signal-to-noise ratio that can be
        extrapolated, else None."""
        if len(problems) == 1 and self.signal_to_noise() < MIN_SIGNAL_TO_NOISE:
            return self.models_needed()
        return None

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
        more = self._snr_only(problems)
        if more is not None:
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
