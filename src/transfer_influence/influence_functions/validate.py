"""Validation against reality (Chen et al. 2020, Fig. 2/3): really remove pretraining examples,
retrain both stages to convergence, and compare the true change of the summed test loss with the
predicted one (``-I / m``), next to the identity-Hessian ablation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.func import grad

from ..atomic import write_json
from .hessian import InfluenceError
from .multistage import MultiStageProblem, SolverOptions
from .optimize import TrainingNotConvergedError, minimize


def leave_one_out(problem: MultiStageProblem, index: int, x_test: torch.Tensor,
                  y_test: torch.Tensor, *, tol: float = 1e-8, max_iter: int = 2000) -> float:
    """True change of the summed test loss when pretraining example ``index`` is removed
    (weight 0, normalisation kept: ``eps = -1/m``): pretraining retrained warm-started from its
    optimum to ``||grad|| <= tol``, then fine-tuning redone the same way."""
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
    return float(after - problem.test_loss(problem.phi, x_test, y_test))


@dataclass(frozen=True)
class Validation:
    """Predicted (``-I / m``) and true changes of the summed test loss per removed example,
    and the identity-Hessian ablation's predictions, with their correlations. Removals whose
    retraining did not reach the tolerance are listed in ``not_converged`` and left out."""

    indices: list[int]
    predicted: list[float]
    actual: list[float]
    ablation: list[float]
    not_converged: list[int] = field(default_factory=list)

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

    def summary(self) -> dict:
        """Everything, with the four correlations, as a JSON-ready dict."""
        return {**asdict(self), "pearson": self.pearson, "spearman": self.spearman,
                "ablation_pearson": self.ablation_pearson,
                "ablation_spearman": self.ablation_spearman}


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
    """
    indices = [int(i) for i in indices]
    options = options or SolverOptions()
    path = None if checkpoint is None else Path(checkpoint)
    done: dict[int, float | None] = {}  # None: the retraining did not converge
    if path is not None and path.exists():
        done = {int(k): None if v is None else float(v)
                for k, v in json.loads(path.read_text()).items()}
    for index in indices:
        if index not in done:
            try:
                done[index] = leave_one_out(problem, index, x_test, y_test, tol=tol,
                                            max_iter=max_iter)
            except TrainingNotConvergedError:
                done[index] = None  # recorded, so a rerun with this tolerance skips it
            if path is not None:
                write_json(path, {str(k): v for k, v in done.items()})
    measured = {i: change for i in indices if (change := done[i]) is not None}
    chosen = np.asarray(list(measured), dtype=np.int64)
    solved = problem.scores(problem.test_vector(x_test, y_test, options), chosen)
    identity = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("identity")),
                              chosen)
    return Validation(list(measured), problem.removal_effect(solved).tolist(),
                      list(measured.values()), problem.removal_effect(identity).tolist(),
                      [i for i in indices if done[i] is None])
