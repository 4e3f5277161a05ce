"""Validation against reality (Chen et al. 2020, Fig. 2/3): really remove pretraining examples,
retrain both stages to convergence, and compare the true change of the summed test loss with the
predicted one (``-I / m``), next to the identity-Hessian ablation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.func import grad

from ..atomic import write_json
from .hessian import InfluenceError
from .multistage import MultiStageProblem, SolverOptions
from .optimize import TrainingNotConvergedError, minimize

OUT_OF_REGIME_RATIO = 2.0
"""A removal is *outside the first-order regime* when its retrained pretraining optimum moved more
than this many times the first-order distance ``||H_G^-1 grad g(z)|| / m``
(:meth:`~.multistage.MultiStageProblem.removal_shift`). Inside the regime the two agree up to
second-order terms (ratio near 1); at twice the predicted distance the linearisation misses at
least as much movement as it describes, which is what a jump to another basin of a non-convex
loss looks like, and what influence functions cannot predict by construction. With damping > 0
the predicted distance is the damped solve's (shorter in flat directions), so the ratio then also
measures what the damping leaves out."""


@dataclass(frozen=True)
class Removal:
    """One leave-one-out retraining: the true change of the summed test loss, and how far each
    stage's optimum moved: ``||theta_-z - theta*||`` (pretraining) and ``||phi_-z - phi*||``
    (fine-tuning, all fine-tuned parameters). NaN distances: measured before they were recorded
    (a checkpoint entry of an older version holds only the change)."""

    change: float
    pretrain_shift: float = math.nan
    finetune_shift: float = math.nan

    @classmethod
    def from_checkpoint(cls, entry: float | dict) -> Removal:
        """A checkpoint entry: a record, or a bare change (older checkpoints)."""
        if isinstance(entry, dict):
            return cls(*(math.nan if entry.get(k) is None else float(entry[k])
                         for k in ("change", "pretrain_shift", "finetune_shift")))
        return cls(float(entry))


def leave_one_out(problem: MultiStageProblem, index: int, x_test: torch.Tensor,
                  y_test: torch.Tensor, *, tol: float = 1e-8, max_iter: int = 2000) -> Removal:
    """True change of the summed test loss when pretraining example ``index`` is removed
    (weight 0, normalisation kept: ``eps = -1/m``): pretraining retrained warm-started from its
    optimum to ``||grad|| <= tol``, then fine-tuning redone the same way; with the distances
    both optima moved."""
    weights = torch.ones(problem.m, dtype=problem.theta.dtype)
    weights[index] = 0.0
    moved = torch.linalg.vector_norm(grad(problem.pretrain_objective)(problem.theta, weights))
    if moved <= tol:
        raise InfluenceError(
            f"removing pretraining example {index} leaves the gradient norm at {float(moved):.3g},"
            f" already within tol {tol:g}: retraining would not move, and its 'true change' would"
            " be 0. Train to a tighter tolerance (the training tol) to measure leave-one-out"
            " changes.")
    theta = minimize(lambda t: problem.pretrain_objective(t, weights), problem.theta, tol=tol,
                     max_iter=max_iter)
    phi = problem.refit(theta, tol=tol, max_iter=max_iter)
    after = problem.test_loss(phi, x_test, y_test)
    return Removal(float(after - problem.test_loss(problem.phi, x_test, y_test)),
                   float(torch.linalg.vector_norm(theta - problem.theta)),
                   float(torch.linalg.vector_norm(phi - problem.phi)))


def _correlation(method: Callable, x: Sequence[float], y: Sequence[float]) -> float:
    """``method``'s (Pearson's or Spearman's) r, NaN with fewer than 3 pairs."""
    return float(method(x, y)[0]) if len(x) >= 3 else math.nan


@dataclass(frozen=True)
class Validation:
    """Predicted (``-I / m``) and true changes of the summed test loss per removed example,
    and the identity-Hessian ablation's predictions, with their correlations. Removals whose
    retraining did not reach the tolerance are listed in ``not_converged`` and left out.

    Per removal too: the measured distances the pretrained and fine-tuned optima moved
    (``pretrain_shift``, ``finetune_shift``; NaN when unknown, see :class:`Removal`) and the
    first-order prediction of the first (``predicted_shift``). Their ratio
    (:attr:`shift_ratio`) flags the removals outside the first-order regime
    (:data:`OUT_OF_REGIME_RATIO`); :attr:`pearson` and :attr:`spearman` stay over all removals,
    :attr:`in_regime_pearson` and :attr:`in_regime_spearman` leave the flagged ones out.
    Validations saved before these fields existed load with them unknown (NaN).
    """

    indices: list[int]
    predicted: list[float]
    actual: list[float]
    ablation: list[float]
    not_converged: list[int] = field(default_factory=list)
    pretrain_shift: list[float] = field(default_factory=list)
    finetune_shift: list[float] = field(default_factory=list)
    predicted_shift: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("pretrain_shift", "finetune_shift", "predicted_shift"):
            values = getattr(self, name)
            if not values:
                values = [math.nan] * len(self.indices)
            object.__setattr__(self, name, [math.nan if v is None else float(v)
                                            for v in values])

    @property
    def pearson(self) -> float:
        """Pearson r between predicted and true changes."""
        return float(stats.pearsonr(self.predicted, self.actual)[0])

    @property
    def spearman(self) -> float:
        """Spearman rank correlation between predicted and true changes."""
        return float(stats.spearmanr(self.predicted, self.actual)[0])

    @property
    def ablation_pearson(self) -> float:
        """Pearson r of the identity-Hessian predictions with the true changes."""
        return float(stats.pearsonr(self.ablation, self.actual)[0])

    @property
    def ablation_spearman(self) -> float:
        """Spearman rank correlation of the identity-Hessian predictions."""
        return float(stats.spearmanr(self.ablation, self.actual)[0])

    @property
    def shift_ratio(self) -> list[float]:
        """Measured over first-order distance of the pretrained optimum, per removal (NaN:
        unknown)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.asarray(self.pretrain_shift) / np.asarray(self.predicted_shift)).tolist()

    @property
    def out_of_regime(self) -> list[int]:
        """The removed examples whose :attr:`shift_ratio` is above
        :data:`OUT_OF_REGIME_RATIO` (unknown ratios are not flagged)."""
        return [i for i, ratio in zip(self.indices, self.shift_ratio)
                if ratio > OUT_OF_REGIME_RATIO]

    def _in_regime(self) -> tuple[list[float], list[float]]:
        flagged = set(self.out_of_regime)
        kept = [j for j, i in enumerate(self.indices) if i not in flagged]
        return [self.predicted[j] for j in kept], [self.actual[j] for j in kept]

    @property
    def unknown_shifts(self) -> int:
        """Removals whose ratio is unknown (measured by an older version, see :class:`Removal`)."""
        return int(np.isnan(self.shift_ratio).sum())

    @property
    def in_regime_pearson(self) -> float:
        """Pearson r without the :attr:`out_of_regime` removals (NaN below 3 left)."""
        return _correlation(stats.pearsonr, *self._in_regime())

    @property
    def in_regime_spearman(self) -> float:
        """Spearman rank correlation without the :attr:`out_of_regime` removals."""
        return _correlation(stats.spearmanr, *self._in_regime())

    def regime_note(self) -> str:
        """One line on the first-order regime: how many removals left it, and the correlations
        without them (labelled as such), or why the ratios are unknown."""
        flagged = self.out_of_regime
        note = (f"{len(flagged)} of {len(self.indices)} removals moved the pretrained optimum more"
                f" than {OUT_OF_REGIME_RATIO:g}x the first-order distance")
        if flagged:
            note += (f" (examples {flagged}); without them: Pearson {self.in_regime_pearson:.3f},"
                     f" Spearman {self.in_regime_spearman:.3f}")
        if self.unknown_shifts:
            note += (f"; distance unknown for {self.unknown_shifts} removals measured by an"
                     " older version (delete the validation checkpoint to remeasure them)")
        return note

    def summary(self) -> dict:
        """Everything, with the correlations and the regime diagnostic, as a JSON-ready dict."""
        return {**asdict(self), "pearson": self.pearson, "spearman": self.spearman,
                "ablation_pearson": self.ablation_pearson,
                "ablation_spearman": self.ablation_spearman,
                "shift_ratio": self.shift_ratio, "out_of_regime_ratio": OUT_OF_REGIME_RATIO,
                "out_of_regime": self.out_of_regime,
                "in_regime_pearson": self.in_regime_pearson,
                "in_regime_spearman": self.in_regime_spearman}

    @classmethod
    def from_summary(cls, summary: dict) -> Validation:
        """The validation :meth:`summary` saved (older summaries lack the distances)."""
        return cls(**{f.name: summary[f.name] for f in fields(cls) if f.name in summary})


def validate(problem: MultiStageProblem, x_test: torch.Tensor, y_test: torch.Tensor,
             indices: Sequence[int] | np.ndarray, *, options: SolverOptions | None = None,
             tol: float = 1e-8, max_iter: int = 2000, checkpoint: str | Path | None = None
             ) -> Validation:
    """Compare predicted and true leave-one-out changes of the summed test loss for the
    pretraining examples ``indices``.

    With ``checkpoint`` (a JSON file), every finished retraining is saved at once (atomically)
    and a rerun with the same file skips the examples already done, so a killed validation
    resumes. A removal whose retraining does not reach ``tol`` is reported in
    ``not_converged`` rather than measured at an unconverged point or stopping the others.
    Each entry is a :class:`Removal` record; an older checkpoint's bare change is kept, with
    its distances unknown rather than retrained (that would cost the whole validation again:
    delete the checkpoint to pay it). The first-order distances are computed here, by the
    influences' solver (one inverse-Hessian-vector product per removal; the exact solver
    materialises ``H_G`` once for all).
    """
    indices = [int(i) for i in indices]
    options = options or SolverOptions()
    path = None if checkpoint is None else Path(checkpoint)
    done: dict[int, Removal | None] = {}  # None: the retraining did not converge
    if path is not None and path.exists():
        done = {int(k): None if v is None else Removal.from_checkpoint(v)
                for k, v in json.loads(path.read_text()).items()}
    for index in indices:
        if index not in done:
            try:
                done[index] = leave_one_out(problem, index, x_test, y_test, tol=tol,
                                            max_iter=max_iter)
            except TrainingNotConvergedError:
                done[index] = None  # recorded, so a rerun with this tolerance skips it
            if path is not None:
                write_json(path, {str(k): None if v is None else asdict(v)
                                  for k, v in done.items()})
    measured = {i: removal for i in indices if (removal := done[i]) is not None}
    chosen = np.asarray(list(measured), dtype=np.int64)
    solved = problem.scores(problem.test_vector(x_test, y_test, options), chosen)
    identity = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("identity")),
                              chosen)
    removals = list(measured.values())
    return Validation(list(measured), problem.removal_effect(solved).tolist(),
                      [r.change for r in removals], problem.removal_effect(identity).tolist(),
                      [i for i in indices if done[i] is None],
                      [r.pretrain_shift for r in removals], [r.finetune_shift for r in removals],
                      problem.removal_shift(chosen, options).tolist())
