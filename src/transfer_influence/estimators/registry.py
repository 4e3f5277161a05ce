"""Estimators by name: ``dim``, ``ridge``, ``lasso`` and any added with
:func:`register_estimator`, all with one contract.

An *estimator* is a function ``estimator(masks, outputs, *, seed, device) -> Estimate``:
``masks`` bool ``[models, units]`` (which source units each model was trained on), ``outputs``
float64 ``[models, targets]`` (one output variant of each model on each target example),
``seed`` for any random choice it makes (e.g. which models to hold out) and ``device`` the
torch device the config's ``device`` names, or None for the CPU (an estimator may ignore it;
``ridge`` and ``lasso`` fit there, ``dim`` runs in NumPy on the CPU). Its :class:`Estimate`
holds the influence ``[units, targets]`` (positive = the unit helps, on the variant's scale)
and, when the estimator scores itself on held-out models, their linear datamodeling score.
:func:`~transfer_influence.estimators.estimate_influence` (``--method`` on the command line)
reads a store's completed models and wraps the estimate in an
:class:`~transfer_influence.estimators.InfluenceResult` with the store's names and counts.

As for models and objectives, a registered name lives in the process that registered it; the
command line knows the built-ins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..errors import DataError
from ..registry import Registry
from .datamodels import Datamodels, fit_lasso, fit_ridge
from .difference_in_means import difference_in_means


@dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous
class Estimate:
    """An estimator's answer: ``influence`` float ``[units, targets]`` and, for estimators that
    hold models out, the held-out linear datamodeling score ``heldout_lds`` (else None)."""

    influence: np.ndarray
    heldout_lds: float | None = None


class Estimator(Protocol):
    """``estimator(masks, outputs, *, seed, device) -> Estimate`` (see module docstring)."""

    def __call__(self, masks: np.ndarray, outputs: np.ndarray, *, seed: int,
                 device: torch.device | None) -> Estimate: ...


_ESTIMATORS: Registry[Estimator] = Registry("estimation method", DataError, "register_estimator")


def register_estimator(name: str, estimator: Estimator, *, replace: bool = False) -> None:
    """Make ``estimator`` available as method ``name`` (in this process). Registering another
    estimator under a taken name needs ``replace=True``."""
    _ESTIMATORS.register(name, estimator, replace=replace)


def estimator_names() -> tuple[str, ...]:
    """The registered methods: the built-ins, then any added in this process, in order."""
    return _ESTIMATORS.names()


def get_estimator(name: str) -> Estimator:
    """The estimator registered as ``name``."""
    return _ESTIMATORS.get(name)


def _dim(masks: np.ndarray, outputs: np.ndarray, *, seed: int,
         device: torch.device | None) -> Estimate:
    """Difference in means (``seed`` unused: it makes no random choice; NumPy on the CPU)."""
    return Estimate(difference_in_means(masks, outputs))


def _from_datamodels(fitted: Datamodels) -> Estimate:
    return Estimate(fitted.weights, None if np.isnan(fitted.lds) else float(fitted.lds))


def _ridge(masks: np.ndarray, outputs: np.ndarray, *, seed: int,
           device: torch.device | None) -> Estimate:
    """Ridge datamodel weights with the defaults of :func:`fit_ridge`, fitted on ``device``."""
    return _from_datamodels(fit_ridge(masks, outputs, seed=seed, device=device))


def _lasso(masks: np.ndarray, outputs: np.ndarray, *, seed: int,
           device: torch.device | None) -> Estimate:
    """LASSO datamodel weights with the defaults of :func:`fit_lasso`, fitted on ``device``."""
    return _from_datamodels(fit_lasso(masks, outputs, seed=seed, device=device))


register_estimator("dim", _dim)
register_estimator("ridge", _ridge)
register_estimator("lasso", _lasso)
