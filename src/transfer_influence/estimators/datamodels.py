"""Linear datamodels: per target example, a linear model of its output from the subset mask.

For every target example ``t`` we fit ``f_t(mask) ~ mask . w_t + b_t`` over the models of a
sweep (Ilyas et al., 2022, "Datamodels"; Jain et al., 2022, appendix), where ``mask`` is the
bool ``[units]`` row saying which source units a model was trained on and ``f_t`` is an output
variant (e.g. probability of the correct class). ``w_t[c]`` is the predicted change of ``f_t``
when unit ``c`` is added with the other units held fixed -- same sign and scale convention as
difference-in-means influence (positive = helps), but conditional on the rest of the mask.

Every target shares the same design matrix (the masks), so all targets are solved together
with matrix products instead of one regression per target:

- **ridge** (:func:`fit_ridge`): one thin SVD of the centred fit design ``X = U S V^T`` gives
  ``W(lambda) = V diag(s / (s^2 + lambda)) U^T Y`` for a whole grid of ``lambda`` at the cost of
  a few products; identical to scikit-learn's ``Ridge(alpha=lambda, fit_intercept=True)``.
- **LASSO** (:func:`fit_lasso`): scikit-learn's objective
  ``(1 / (2 n)) ||y - X w - b||^2 + alpha ||w||_1`` solved along a path of decreasing ``alpha``
  with warm starts by FISTA, batched over a block of targets: every iteration is one product of
  the Gram matrix ``X^T X / n`` with the ``[units, targets]`` weights, restricted to the units
  that are non-zero for some target. Convergence is scikit-learn's duality-gap test, per target.
  Chosen over ``sklearn.linear_model.lasso_path`` run target by target (same alphas, Gram
  precomputed) because it measured faster at every shape tried: 6.2x at 7,540 models x 1,000
  units x 1,024 targets, about 3x at 2,000 x 1,000, 12-18x at 100 units (one BLAS thread
  each; ``benchmarks/datamodel_fitting.py``).

Both fits run with NumPy/SciPy on the CPU by default, or with torch on a given ``device`` (a
GPU, or ``mps`` in float32): ridge's SVD and products, and the LASSO's one solver, written once
over NumPy arrays or torch tensors.

Identifiability. When every model keeps the same number ``k`` of units (the default sweep),
adding a constant ``c`` to every weight of a target and ``-c k`` to its bias predicts exactly the
same outputs, so only differences between weights are determined by the data. Ridge returns the
minimum-norm solution (weights of each target sum to ~0); LASSO the minimum-L1 one, which need
not be unique once nearly all weights are non-zero (small alphas). Compare units, not the
absolute level of a weight, and compare datamodels through their predictions.

Held-out models (:func:`split_models`). A seeded random ``holdout_fraction`` of the models (or
explicit indices) is left out of the fit and split into two halves: the *selection* models
choose the regularisation **per target** (smallest squared error), the *scoring* models give the
held-out **linear datamodeling score** (LDS, :func:`linear_datamodeling_score`): per target, the
Spearman correlation between predicted and actual outputs. Scoring on the models that chose
the regularisation would flatter the fit: on pure-noise outputs (600 models, 30 units, 200
targets) the LASSO LDS then came out at +0.05 to +0.08 instead of 0 over four seeds, because
among alphas with different supports the selection keeps whichever happens to rank those very
models well. With disjoint halves the LDS is an out-of-sample score of the returned weights.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse.linalg
import scipy.stats
import torch

from ..devices import precise_dtype, resolve_device
from ..errors import DataError, StoreError
from ..outputs import OutputVariant
from ..sweep.store import SweepStore
from .difference_in_means import check_masks_outputs

logger = logging.getLogger(__name__)

DatamodelMethod = Literal["ridge", "lasso"]
DATAMODEL_METHODS: tuple[DatamodelMethod, ...] = ("ridge", "lasso")

DEFAULT_HOLDOUT_FRACTION = 0.1
MIN_MODELS_PER_PART = 3  # fewer fit, selection or scoring models make that step meaningless
DEFAULT_NUM_LAMBDAS = 22  # ridge grid: 3 values per decade over 1e-4 ... 1e3 (relative)
RIDGE_GRID_RANGE = (1e-4, 1e3)
DEFAULT_NUM_ALPHAS = 100  # LASSO grid, as scikit-learn
DEFAULT_EPS = 1e-3  # LASSO grid from alpha_max down to eps * alpha_max, as scikit-learn
DEFAULT_TARGET_BLOCK = 1024  # LASSO targets solved at once: bounds memory, not the result


@dataclasses.dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous
class Datamodels:
    """Linear datamodels of every target example, with their held-out score.

    - ``weights`` float64 ``[units, targets]``, ``bias`` float64 ``[targets]``: the prediction
      for a mask ``m`` (bool ``[units]``) is ``m @ weights + bias``.
    - ``method``: ``"ridge"`` or ``"lasso"``; ``regularization`` float64 ``[targets]``: the
      chosen ``lambda`` (ridge, scikit-learn's ``Ridge(alpha=lambda)``, unnormalised) or
      ``alpha`` (LASSO, scikit-learn's ``Lasso(alpha=alpha)``, per model) of each target.
    - ``selection_indices`` / ``heldout_indices`` int64: the held-out models (sweep indices
      when fitted from a store, else rows of the given masks) that chose the regularisation /
      that score the LDS (see :func:`split_models`); ``num_models`` models were used to fit
      ``weights`` (all of them when ``refit``).
    - ``lds_per_target`` float64 ``[targets]``: Spearman correlation of predicted and actual
      outputs on the ``heldout_indices`` models (NaN where those actual outputs are constant);
      ``lds`` is its mean over the ``targets - num_constant_targets`` defined values (NaN if
      there are none).

    With ``refit`` the weights were refitted on all models after the selection, while the LDS
    scores the fit on the non-held-out models (no held-out models are left to score a refit).
    """

    weights: np.ndarray
    bias: np.ndarray
    method: DatamodelMethod
    regularization: np.ndarray
    selection_indices: np.ndarray
    heldout_indices: np.ndarray
    lds_per_target: np.ndarray
    lds: float
    num_constant_targets: int
    num_models: int
    refit: bool

    def __post_init__(self) -> None:
        if np.ndim(self.weights) != 2:
            raise DataError(
                f"weights must be a [units, targets] matrix, got shape {np.shape(self.weights)}."
            )
        targets = np.shape(self.weights)[1]
        for name in ("bias", "regularization", "lds_per_target"):
            if np.shape(getattr(self, name)) != (targets,):
                raise DataError(
                    f"Datamodels.{name} has shape {np.shape(getattr(self, name))} but weights"
                    f" are {np.shape(self.weights)} [units, targets]; expected ({targets},)."
                )
        if self.method not in DATAMODEL_METHODS:
            raise DataError(
                f"unknown datamodel method {self.method!r}; choose one of"
                f" {', '.join(DATAMODEL_METHODS)}."
            )

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted outputs float64 ``[models, targets]`` of models with bool ``masks``
        ``[models, units]`` (e.g. the models of another sweep, for an unbiased LDS)."""
        masks = np.asarray(masks)
        units = np.shape(self.weights)[0]
        if masks.ndim != 2 or masks.shape[1] != units or masks.dtype != bool:
            raise DataError(
                f"masks must be bool [models, {units}] (models, units), got {masks.dtype}"
                f" {masks.shape}."
            )
        return masks @ self.weights + self.bias


# --------------------------------------------------------------------------- validation, split
def _check_data(masks: np.ndarray, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` bool ``[models, units]`` and ``outputs`` as finite float64
    ``[models, targets]``, or a :class:`DataError` saying what is wrong."""
    masks, outputs = check_masks_outputs(masks, outputs)
    if masks.shape[1] == 0 or outputs.shape[1] == 0:
        raise DataError(
            f"need at least one unit and one target, got masks {masks.shape} and outputs"
            f" {outputs.shape}."
        )
    if not (np.issubdtype(outputs.dtype, np.floating) or np.issubdtype(outputs.dtype, np.integer)
            or outputs.dtype == bool):
        raise DataError(f"outputs must be real numbers, got dtype {outputs.dtype}.")
    outputs = outputs.astype(np.float64, copy=False)
    finite = np.isfinite(outputs)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise DataError(
            f"outputs of {bad.size} model(s) (rows {bad[:10].tolist()}) contain NaN or inf;"
            " drop diverged models (or use a bounded output variant such as prob_correct)"
            " before fitting datamodels."
        )
    return masks, outputs


class ModelSplit(NamedTuple):
    """Sorted int64 row indices of the three disjoint parts of a sweep's models."""

    fit: np.ndarray  # models the datamodels are fitted on
    selection: np.ndarray  # held-out models that choose the regularisation
    scoring: np.ndarray  # held-out models that score the fit (LDS)


def split_models(
    num_models: int,
    *,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    heldout: np.ndarray | None = None,
    seed: int = 0,
) -> ModelSplit:
    """Partition ``range(num_models)`` into fit, selection and scoring models.

    The held-out models are ``heldout`` when given, else ``round(holdout_fraction *
    num_models)`` models drawn with ``numpy.random.default_rng(seed)``; the same generator then
    splits them into halves, selection first (the smaller half when their number is odd). Every
    part needs at least ``MIN_MODELS_PER_PART`` models.
    """
    rng = np.random.default_rng(seed)
    if heldout is None:
        if not 0.0 < float(holdout_fraction) < 1.0:
            raise DataError(
                f"holdout_fraction must lie strictly between 0 and 1, got {holdout_fraction}."
            )
        held = rng.choice(num_models, size=round(float(holdout_fraction) * num_models),
                          replace=False)
    else:
        held = np.asarray(heldout).reshape(-1)
        if not np.issubdtype(held.dtype, np.integer):
            raise DataError(f"heldout must be integer indices, got dtype {held.dtype}.")
        if np.unique(held).size != held.size or (
            held.size and (held.min() < 0 or held.max() >= num_models)
        ):
            raise DataError(
                f"heldout indices must be unique and lie in [0, {num_models}); got"
                f" {held[:20].tolist()}."
            )
        held = rng.permutation(held)
    held = held.astype(np.int64)
    half = held.size // 2
    selection, scoring = np.sort(held[:half]), np.sort(held[half:])
    fit = np.setdiff1d(np.arange(num_models, dtype=np.int64), held)
    if min(fit.size, selection.size, scoring.size) < MIN_MODELS_PER_PART:
        raise DataError(
            f"{num_models} models split into {fit.size} to fit, {selection.size} to choose the"
            f" regularisation and {scoring.size} to score the fit; each part needs at least"
            f" {MIN_MODELS_PER_PART}. Train more models or raise holdout_fraction (a few hundred"
            " held-out models give a stable choice and score)."
        )
    return ModelSplit(fit, selection, scoring)


def _centred(masks: np.ndarray, outputs: np.ndarray, rows: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Float64 copies of the ``rows`` (default: all) of ``masks`` and float64 ``outputs``,
    centred per column, and their column means: fitting the intercept by centring, as
    scikit-learn does. One copy of each, centred in place."""
    if rows is None:
        x, y = masks.astype(np.float64), outputs.copy()
    else:
        x, y = masks[rows].astype(np.float64), outputs.take(rows, axis=0)
    x_mean = x.mean(axis=0)
    x -= x_mean
    y_mean = y.mean(axis=0)
    y -= y_mean
    return x, y, x_mean, y_mean


def _on(array: npt.ArrayLike, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``array`` as a ``dtype`` tensor on ``device`` (sharing memory where nothing changes)."""
    return torch.as_tensor(array, dtype=dtype, device=device)


def _fit_device(device: str | torch.device | None) -> torch.device | None:
    """The torch device a datamodel fit runs on, or None for NumPy on the CPU; an unknown or
    unavailable device is a :class:`~transfer_influence.errors.ConfigError` (see
    :func:`~transfer_influence.devices.resolve_device`), not an error from deep inside torch."""
    return None if device is None else resolve_device(str(device))


def _as_numpy(array: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float64 NumPy array of a solver array (float64 NumPy arrays and CPU tensors without a
    copy)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)


# --------------------------------------------------------------------------- LDS
def linear_datamodeling_score(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Spearman rank correlation float64 ``[targets]`` between ``predicted`` and ``actual``
    outputs ``[models, targets]``, per target (column).

    Computed as Pearson correlation of average ranks (ties share their mean rank), which is
    exactly :func:`scipy.stats.spearmanr` per column, vectorised. Where the actual outputs are
    constant the correlation is undefined: NaN (exclude and count these targets). Where only the
    predictions are constant (e.g. a LASSO datamodel with no non-zero weight) the prediction
    carries no ranking information: 0, so such targets lower the mean instead of vanishing.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape or predicted.ndim != 2:
        raise DataError(
            f"predicted and actual must both be [models, targets]; got {predicted.shape} and"
            f" {actual.shape}."
        )
    rank_p = scipy.stats.rankdata(predicted, axis=0)
    rank_a = scipy.stats.rankdata(actual, axis=0)
    rank_p -= rank_p.mean(axis=0)
    rank_a -= rank_a.mean(axis=0)
    norm_p = np.sqrt(np.einsum("mt,mt->t", rank_p, rank_p))
    norm_a = np.sqrt(np.einsum("mt,mt->t", rank_a, rank_a))
    covariance = np.einsum("mt,mt->t", rank_p, rank_a)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = covariance / (norm_p * norm_a)
    score[norm_p == 0] = 0.0
    score[norm_a == 0] = np.nan  # ranks are exact, so "constant" is an exact test
    return score


def _result(
    weights: np.ndarray, bias: np.ndarray, method: DatamodelMethod, regularization: np.ndarray,
    split: ModelSplit, predicted: np.ndarray, actual: np.ndarray, num_models: int, refit: bool,
) -> Datamodels:
    """Assemble :class:`Datamodels`, scoring ``predicted`` against ``actual`` outputs of the
    scoring models."""
    lds_per_target = linear_datamodeling_score(predicted, actual)
    constant = int(np.isnan(lds_per_target).sum())
    lds = float(np.nanmean(lds_per_target)) if constant < lds_per_target.size else float("nan")
    if constant:
        logger.info("%d target(s) have constant held-out outputs; their LDS is undefined and"
                    " excluded from the mean.", constant)
    return Datamodels(
        weights=weights, bias=bias, method=method, regularization=regularization,
        selection_indices=split.selection, heldout_indices=split.scoring,
        lds_per_target=lds_per_target, lds=lds, num_constant_targets=constant,
        num_models=num_models, refit=refit,
    )


# --------------------------------------------------------------------------- ridge
class _RidgeSVD:
    """Thin SVD of a centred design, solving ridge for any ``lambda`` per target cheaply.

    ``X - mean = U diag(s) V^T`` with ``r = min(models, units)`` singular values, and
    ``A = U^T (Y - mean)`` ``[r, targets]``; then ``W = V diag(s / (s^2 + lambda)) A``. The SVD
    works whether units < models (class-level) or units > models (example-level), and
    directions with ``s = 0`` (e.g. the all-ones direction when every mask keeps the same number
    of units) correctly get zero weight.

    With ``device`` None the arrays are NumPy and the SVD is SciPy's ``gesdd``; with a torch
    ``device`` they are tensors there, in :func:`~transfer_influence.devices.precise_dtype`
    (float64, float32 on ``mps``), and the SVD is ``torch.linalg.svd``. The same products follow
    either way; results come back as float64 NumPy arrays.
    """

    def __init__(self, masks: np.ndarray, outputs: np.ndarray, rows: np.ndarray | None = None,
                 device: torch.device | None = None) -> None:
        x, y, x_mean, y_mean = _centred(masks, outputs, rows)
        if device is None:
            self._einsum: Callable[..., Any] = np.einsum
            self._dtype: Any = np.float64
            self._device = None
            u, self.s, self.vt = scipy.linalg.svd(x, full_matrices=False, overwrite_a=True,
                                                  check_finite=False, lapack_driver="gesdd")
            self.x_mean, self.y_mean = x_mean, y_mean
        else:
            self._einsum, self._dtype, self._device = torch.einsum, precise_dtype(device), device
            x, y, self.x_mean, self.y_mean = (self._put(a) for a in (x, y, x_mean, y_mean))
            u, self.s, self.vt = torch.linalg.svd(x, full_matrices=False)
        del x
        self.a = u.T @ y  # [r, targets]

    def _put(self, array: np.ndarray) -> Any:
        """``array`` as this solver's float array (NumPy, or a tensor on its device)."""
        if self._device is None:
            return np.asarray(array, dtype=np.float64)
        return _on(array, self._device, self._dtype)

    def singular_values(self) -> np.ndarray:
        """The ``r`` singular values, float64 NumPy."""
        return _as_numpy(self.s)

    def shrinkage(self, lambdas: np.ndarray) -> Any:
        """``s / (s^2 + lambda)`` as ``[r, len(lambdas)]`` (one column per target or grid value)."""
        s = self.s[:, None]
        return s / (s * s + self._put(lambdas)[None, :])

    def selection_errors(self, masks: np.ndarray, outputs: np.ndarray, grid: np.ndarray
                         ) -> np.ndarray:
        """Squared errors float64 ``[grid, targets]`` of the fit at every ``grid`` lambda on
        models with bool ``masks`` and ``outputs``: the prediction at grid value ``k`` is
        ``y_mean + P diag(shrinkage[:, k]) A`` with ``P = (masks - x_mean) V``."""
        projected = (self._put(masks) - self.x_mean) @ self.vt.T  # [models, r]
        residual_offset = self.y_mean - self._put(outputs)  # [models, targets]
        errors = np.empty((grid.size, outputs.shape[1]))
        for k, shrink in enumerate(self.shrinkage(grid).T):
            residual = projected @ (shrink[:, None] * self.a)
            residual += residual_offset
            errors[k] = _as_numpy(self._einsum("mt,mt->t", residual, residual))
        return errors

    def weights(self, lambdas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(weights [units, targets], bias [targets])`` with ``lambdas`` ``[targets]``."""
        weights = self.vt.T @ (self.shrinkage(lambdas) * self.a)
        return _as_numpy(weights), _as_numpy(self.y_mean - self.x_mean @ weights)


def _ridge_grid(lambdas: int | np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    """The ridge ``lambda`` grid, increasing: explicit positive values, or ``lambdas`` values
    geometric over ``RIDGE_GRID_RANGE`` times the mean squared singular value of the centred fit
    design (the typical eigenvalue of ``X^T X``), so the grid spans almost no to almost full
    shrinkage whatever the number of models and units."""
    if np.ndim(lambdas) == 0:
        if int(lambdas) < 1:
            raise DataError(f"the number of ridge lambdas must be >= 1, got {lambdas}.")
        scale = float(np.mean(singular_values**2))
        if scale == 0.0:
            raise DataError(
                "every fit model has the same mask, so the outputs cannot be attributed to units;"
                " use a sweep whose masks differ."
            )
        return np.geomspace(*RIDGE_GRID_RANGE, int(lambdas)) * scale
    grid = np.sort(np.asarray(lambdas, dtype=np.float64).reshape(-1))
    if grid.size == 0 or not (np.isfinite(grid).all() and (grid > 0).all()):
        raise DataError(f"ridge lambdas must be finite and > 0, got {np.asarray(lambdas)}.")
    return grid


def fit_ridge(
    masks: np.ndarray,
    outputs: np.ndarray,
    *,
    lambdas: int | np.ndarray = DEFAULT_NUM_LAMBDAS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    heldout: np.ndarray | None = None,
    seed: int = 0,
    refit: bool = False,
    device: str | torch.device | None = None,
) -> Datamodels:
    """Ridge datamodels of every target, ``lambda`` chosen per target on held-out models.

    ``masks`` bool ``[models, units]``, ``outputs`` float ``[models, targets]``. ``lambdas`` is
    a grid (scikit-learn's ``Ridge(alpha=...)`` scale: the penalty ``lambda ||w||^2`` is added
    to the *unnormalised* squared error) or the number of values of the default grid (see
    :func:`_ridge_grid`). Models are split by :func:`split_models`; for each target the grid
    value with the smallest squared error on the selection models wins (the larger on ties) and
    the scoring models give the LDS. The weights are those fitted on the fit models, exactly
    ``Ridge(alpha=lambda, fit_intercept=True)`` on them; with ``refit`` they are refitted on all
    models with the same ``lambda`` (the LDS still scores the fit-model fit).

    Cost: one thin SVD of the ``[fit models, units]`` design, ``O(models x r x targets)`` for
    ``U^T Y`` and ``O(selection x r x targets)`` per grid value, ``r = min(models, units)``.
    Memory: the inputs, plus a float64 copy of the fit models (``8 x models x (units +
    targets)`` bytes), the SVD and ``U^T Y`` (``8 x r x (models + units + targets)``) and the
    weights (``8 x units x targets``): 715 MiB measured on top of the 582 MiB of inputs at
    7,540 models x 1,000 units x 10,000 targets (6.8 s on 2 cores).

    ``device`` None (the default) fits with NumPy/SciPy. A torch device (``"cpu"``, ``"cuda"``,
    ``"cuda:N"``, ``"mps"``) does the same SVD and products with torch there, in float64
    (float32 on ``mps``, which has no float64); the regularisation grid, the selection and the
    LDS are unchanged, and the masks and outputs are copied to the device (the memory above,
    there). In float64 the weights agree with the NumPy fit to rounding; see
    :func:`~transfer_influence.devices.precise_dtype` for float32.
    """
    masks, outputs = _check_data(masks, outputs)
    split = split_models(
        masks.shape[0], holdout_fraction=holdout_fraction, heldout=heldout, seed=seed
    )
    device = _fit_device(device)
    solver = _RidgeSVD(masks, outputs, split.fit, device)
    grid = _ridge_grid(lambdas, solver.singular_values())
    errors = solver.selection_errors(masks[split.selection], outputs[split.selection], grid)
    # Ties (e.g. constant targets) go to the larger lambda: reversed argmin keeps the last.
    chosen = grid[grid.size - 1 - np.argmin(errors[::-1], axis=0)]
    edge = float(np.mean(chosen == grid[-1]))
    if edge > 0.5:
        logger.info("%.0f%% of targets chose the largest ridge lambda: their outputs look like"
                    " noise at this number of models, or the grid should extend further.",
                    100 * edge)
    weights, bias = solver.weights(chosen)
    predicted = masks[split.scoring] @ weights + bias
    if refit:
        weights, bias = _RidgeSVD(masks, outputs, device=device).weights(chosen)
    return _result(weights, bias, "ridge", chosen, split, predicted, outputs[split.scoring],
                   masks.shape[0] if refit else split.fit.size, refit)


# --------------------------------------------------------------------------- LASSO
Array = Any  # a float NumPy array or a torch tensor: the LASSO solver's arrays (see _ArrayOps)


class _ArrayOps(NamedTuple):
    """The array operations of the LASSO solver, on NumPy arrays or on torch tensors: one
    solver, written once, runs on either. ``xp`` is the ``numpy`` or ``torch`` module, for the
    functions both spell alike (``where``, ``sqrt``, ``clip``, ``amax``, ``zeros_like``,
    ``ones_like``); the others differ between the two libraries.

    NumPy is the CPU default because it measured faster there: torch's CPU kernels took
    1.1-2.0x NumPy's time on the same path (``benchmarks/datamodel_fitting.py --quick``, one
    thread, busy machine), mostly in the many small element-wise steps and, at 1,000 units, a
    slower matrix product.
    """

    xp: Any
    column_dot: Callable[[Array, Array], Array]  # sum over axis 0 of a * b, per column
    indices: Callable[[Array], Array]  # positions of the True entries of a bool vector
    take: Callable[[Array, Array], Array]  # entries at indices along the last axis
    nonzero_rows: Callable[[Array], Array]  # rows with a non-zero entry in some column
    arange: Callable[[int, Array], Array]  # 0 .. n - 1 as indices beside an array
    like: Callable[[npt.ArrayLike, Array], Array]  # a NumPy array as an array beside another
    copy: Callable[[Array], Array]


_NUMPY = _ArrayOps(
    xp=np,
    column_dot=partial(np.einsum, "ut,ut->t"),
    indices=np.flatnonzero,
    take=partial(np.take, axis=-1),
    nonzero_rows=lambda w: np.flatnonzero(np.any(w != 0, axis=1)),
    arange=lambda n, like: np.arange(n),
    like=lambda array, like: np.asarray(array, dtype=np.float64),
    copy=np.copy,
)
_TORCH = _ArrayOps(
    xp=torch,
    column_dot=partial(torch.linalg.vecdot, dim=0),
    indices=lambda mask: torch.nonzero(mask).squeeze(1),
    take=lambda array, indices: array.index_select(-1, indices),
    nonzero_rows=lambda w: torch.nonzero(w.abs().amax(dim=1)).squeeze(1),  # 4x ne().any()
    arange=lambda n, like: torch.arange(n, device=like.device),
    like=lambda array, like: _on(array, like.device, like.dtype),
    copy=torch.clone,
)


class _Gram:
    """Products with ``G = X^T X / n`` of a centred design ``X`` ``[n, units]`` (a NumPy array,
    or a tensor: the products stay on its device and dtype).

    Holds ``G`` itself (``8 x units^2`` bytes) when ``units <= 2 n``, where one product with
    ``[units, targets]`` weights costs ``units^2 x targets``; otherwise (example-level sweeps,
    units >> models) multiplies through ``X``: ``X^T (X W) / n``, ``2 n x units x targets``.
    Products skip the units whose weights are zero for every target, which makes the sparse
    start of a LASSO path cheap. ``lipschitz`` is the largest eigenvalue of ``G``, computed by
    SciPy in float64 on the CPU (one eigenvalue of ``G``, or a few Lanczos products with ``X``).
    """

    def __init__(self, x: Array, ops: _ArrayOps) -> None:
        n, units = x.shape
        self._n, self._ops = n, ops
        if units <= 2 * n:
            self._gram: Array | None = (x.T @ x) / n
            self._x = None
            top = scipy.linalg.eigh(_as_numpy(self._gram), eigvals_only=True,
                                    subset_by_index=[units - 1, units - 1])[0]
        else:  # Lanczos: a few products with x instead of forming an [n, n] or [units, units] Gram
            self._gram, self._x = None, x
            x_cpu = _as_numpy(x)
            top = (scipy.sparse.linalg.svds(x_cpu, k=1, tol=1e-10, return_singular_vectors=False,
                                            random_state=0)[0] if n > 1
                   else np.linalg.norm(x_cpu)) ** 2 / n
        self.lipschitz = float(top) * (1 + 1e-9)  # a hair larger than the eigenvalue is safe

    def matmul(self, weights: Array) -> Array:
        """``G @ weights`` ``[units, targets]``."""
        rows = self._ops.nonzero_rows(weights)
        if self._gram is not None:
            if len(rows) * 2 > weights.shape[0]:
                return self._gram @ weights
            return self._gram[:, rows] @ weights[rows]
        assert self._x is not None  # set exactly when the Gram matrix is not
        return self._x.T @ (self._x[:, rows] @ weights[rows]) / self._n


class _LassoProblem(NamedTuple):
    """The sufficient statistics of a LASSO on a centred design ``X`` ``[n, units]`` and
    outputs ``Y`` ``[n, targets]``, all NumPy or all tensors on one device: products with
    ``G = X^T X / n``, ``xty = X^T Y / n`` ``[units, targets]`` and ``yy = ||Y||^2 / n`` per
    target, and the array operations ``ops`` that go with them."""

    gram: _Gram
    xty: Array
    yy: Array
    ops: _ArrayOps

    @classmethod
    def of(cls, x: Array, y: Array, device: torch.device | None) -> _LassoProblem:
        """The statistics of float64 ``x`` and ``y``: with NumPy for ``device`` None, else with
        torch on ``device`` in :func:`~transfer_influence.devices.precise_dtype` (float64,
        float32 on ``mps``; on the CPU the tensors share the arrays' memory)."""
        ops = _NUMPY if device is None else _TORCH
        if device is not None:
            x, y = _on(x, device, precise_dtype(device)), _on(y, device, precise_dtype(device))
        return cls(_Gram(x, ops), x.T @ y / x.shape[0], ops.column_dot(y, y) / x.shape[0], ops)

    def path(self, alphas: np.ndarray, block: slice, tol: float, max_iter: int
             ) -> Iterator[Array]:
        """:func:`_lasso_path_steps` of the targets in ``block`` at their columns of the alpha
        table ``alphas`` ``[n_alphas, targets]``."""
        return _lasso_path_steps(self, block, self.ops.like(alphas[:, block], self.xty), tol,
                                 max_iter)


def _soft_threshold(ops: _ArrayOps, values: Array, threshold: Array) -> Array:
    """``sign(v) * max(|v| - threshold, 0)`` with ``threshold`` per column, in two passes."""
    return values - ops.xp.clip(values, -threshold, threshold)


def _duality_gap(ops: _ArrayOps, weights: Array, gram_weights: Array, xty: Array, yy: Array,
                 alpha: Array) -> Array:
    """Duality gap ``[targets]`` of the LASSO, as scikit-learn's coordinate descent computes it
    (divided by ``n``): ``xty = X^T y / n``, ``yy = ||y||^2 / n``, ``gram_weights = G w``."""
    wxty = ops.column_dot(weights, xty)
    residual_sq = yy - 2 * wxty + ops.column_dot(weights, gram_weights)  # ||R||^2 / n
    residual_y = yy - wxty  # R^T y / n
    dual_norm = ops.xp.amax(abs(xty - gram_weights), 0)  # ||X^T R||_inf / n
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = ops.xp.where(dual_norm > alpha, alpha / dual_norm, 1.0)
    return (0.5 * residual_sq * (1 + scale**2) + alpha * abs(weights).sum(0)
            - scale * residual_y)


def _lasso_path_steps(problem: _LassoProblem, block: slice, alphas: Array, tol: float,
                      max_iter: int) -> Iterator[Array]:
    """Yield the LASSO weights ``[units, targets]`` of the ``block`` targets of ``problem`` at
    each row of ``alphas`` ``[n_alphas, targets]`` (decreasing), warm-starting each from the
    previous one.

    FISTA (step ``1 / lipschitz``) with gradient-based adaptive restart (O'Donoghue & Candes,
    2015), per target. The products ``G w`` of the iterates are kept, so the momentum point's
    gradient is a linear combination and each iteration costs one product with ``G``. A target
    stops once its duality gap is ``<= tol * ||y||^2 / n`` (scikit-learn's criterion) and drops
    out of the products. ``max_iter`` iterations per alpha at most; unconverged targets warn.

    Each alpha starts from the previous two solutions extrapolated linearly in alpha (the path
    is piecewise linear), which cut the iterations by 1.5-1.8x against a plain warm start in
    our measurements (2,000 models x 400 or 1,000 units).
    """
    ops, gram, xty, yy = problem.ops, problem.gram, problem.xty[:, block], problem.yy[block]
    xp = ops.xp
    step = 1.0 / gram.lipschitz
    weights = xp.zeros_like(xty)
    gram_weights = xp.zeros_like(xty)
    before: tuple[Array, Array, Array] | None = None  # w, G w and alpha at the alpha before
    last_alpha = alphas[0]
    unconverged = 0
    for alpha in alphas:
        # Work arrays hold the still-active targets only; results go back by column.
        active = ops.arange(xty.shape[1], xty)
        w, gw, c, ycol, a = ops.copy(weights), ops.copy(gram_weights), xty, yy, alpha
        z, gz = w, gw
        if before is not None:
            w_before, gw_before, alpha_before = before
            with np.errstate(invalid="ignore", divide="ignore"):
                gamma = xp.where(alpha_before > last_alpha,
                                 (last_alpha - alpha) / (alpha_before - last_alpha), 0.0)
            z, gz = w + gamma * (w - w_before), gw + gamma * (gw - gw_before)
        before, last_alpha = (w, gw, last_alpha), alpha
        momentum = xp.ones_like(yy)
        for _ in range(max_iter):
            w_new = _soft_threshold(ops, z - step * (gz - c), step * a)
            gw_new = gram.matmul(w_new)
            done = _duality_gap(ops, w_new, gw_new, c, ycol, a) <= tol * ycol
            if done.any():
                # Indices, not bool masks: one nonzero() instead of one per array (torch).
                finished, kept = ops.indices(done), ops.indices(~done)
                columns = active[finished]
                weights[:, columns] = ops.take(w_new, finished)
                gram_weights[:, columns] = ops.take(gw_new, finished)
                if len(kept) == 0:
                    break
                # Every work array has the targets on its last axis.
                active, w, gw, w_new, gw_new, z, gz, c, ycol, a, momentum = (
                    ops.take(array, kept)
                    for array in (active, w, gw, w_new, gw_new, z, gz, c, ycol, a, momentum))
            next_momentum = 0.5 * (1 + xp.sqrt(1 + 4 * momentum**2))
            beta = (momentum - 1) / next_momentum
            restart = ops.column_dot(z - w_new, w_new - w) > 0
            beta = xp.where(restart, 0.0, beta)
            next_momentum = xp.where(restart, 1.0, next_momentum)
            z, gz = w_new + beta * (w_new - w), gw_new + beta * (gw_new - gw)
            w, gw, momentum = w_new, gw_new, next_momentum
        else:
            weights[:, active], gram_weights[:, active] = w, gw
            unconverged += len(active)
        yield ops.copy(weights)
    if unconverged:
        warnings.warn(
            f"LASSO did not reach tol={tol} within max_iter={max_iter} iterations for"
            f" {unconverged} (target, alpha) pair(s); raise max_iter or tol.",
            RuntimeWarning,
            stacklevel=3,
        )


def _check_lasso_options(tol: float, max_iter: int) -> None:
    if not tol > 0 or max_iter < 1:
        raise DataError(f"need tol > 0 and max_iter >= 1, got tol={tol}, max_iter={max_iter}.")


def _alpha_table(alphas: npt.ArrayLike, targets: int) -> np.ndarray:
    """Explicit ``alphas`` ``[n_alphas]`` or ``[n_alphas, targets]`` as a decreasing
    ``[n_alphas, targets]`` table."""
    table = np.asarray(alphas, dtype=np.float64)
    if table.ndim == 1:
        table = np.repeat(table[:, None], targets, axis=1)
    if table.ndim != 2 or table.shape[1] != targets or table.shape[0] == 0:
        raise DataError(
            f"alphas must be [n_alphas] or [n_alphas, {targets}] (targets); got shape"
            f" {np.shape(alphas)}."
        )
    if not (np.isfinite(table).all() and (table >= 0).all()):
        raise DataError("LASSO alphas must be finite and >= 0.")
    return -np.sort(-table, axis=0)  # decreasing, as warm starts need (and scikit-learn does)


def batched_lasso_path(
    x: np.ndarray, y: np.ndarray, alphas: np.ndarray, *, tol: float = 1e-4, max_iter: int = 1000,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """LASSO weights ``[n_alphas, units, targets]`` of every target along a path of alphas.

    Same problem and return order as ``sklearn.linear_model.lasso_path(x, y[:, t],
    alphas=...)`` for each target ``t``: minimise ``(1 / (2 n)) ||y_t - x w||^2 + alpha ||w||_1``
    with *no intercept* (centre ``x`` and ``y`` first for one). ``x`` float ``[n, units]``,
    ``y`` float ``[n, targets]``, ``alphas`` ``[n_alphas]`` or ``[n_alphas, targets]``, solved in
    decreasing order. Solved with NumPy, or with torch on ``device`` (see :func:`fit_lasso`);
    the result is a float64 NumPy array. Memory: the result plus about ten ``[units, targets]``
    arrays (and ``[units, units]`` when ``units <= 2 n``).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DataError(f"x must be [n, units] and y [n, targets]; got {x.shape} and {y.shape}.")
    _check_lasso_options(tol, max_iter)
    table = _alpha_table(alphas, y.shape[1])
    problem = _LassoProblem.of(x, y, _fit_device(device))
    return np.stack([_as_numpy(w) for w in problem.path(table, slice(None), tol, max_iter)])


def fit_lasso(
    masks: np.ndarray,
    outputs: np.ndarray,
    *,
    alphas: int | np.ndarray = DEFAULT_NUM_ALPHAS,
    eps: float = DEFAULT_EPS,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    heldout: np.ndarray | None = None,
    seed: int = 0,
    refit: bool = False,
    tol: float = 1e-4,
    max_iter: int = 1000,
    target_block: int = DEFAULT_TARGET_BLOCK,
    device: str | torch.device | None = None,
) -> Datamodels:
    """LASSO datamodels of every target, ``alpha`` chosen per target on held-out models.

    ``masks`` bool ``[models, units]``, ``outputs`` float ``[models, targets]``. The objective
    is scikit-learn's ``Lasso(alpha, fit_intercept=True)``:
    ``(1 / (2 n)) ||y - X w - b||^2 + alpha ||w||_1`` over the ``n`` fit models. By
    default each target gets scikit-learn's grid: ``alphas`` values geometric from its
    ``alpha_max = max |X^T y| / n`` (all weights zero) down to ``eps * alpha_max``; an explicit
    ``[n_alphas]`` or ``[n_alphas, targets]`` array is used as given. The path is solved with
    warm starts (:func:`batched_lasso_path`'s solver, ``tol`` and ``max_iter`` as in
    scikit-learn), the alpha with the smallest squared error on the selection models wins (the
    larger on ties) and the scoring models give the LDS (see :func:`split_models`). With
    ``refit`` the path is solved again on all models down to each target's chosen alpha (the
    LDS still scores the fit-model fit). ``alphas=30`` ran 2-2.6x faster than the default 100
    at 2,000-7,540 models x 1,000 units with the same held-out LDS (to 1e-3).

    Memory: the inputs, a float64 copy of the fit models while ``X^T Y`` is formed
    (``8 x models x (units + targets)`` bytes), ``8 x units^2`` for the Gram matrix when
    ``units <= 2 x models``, ``X^T Y / n`` and the weights (``16 x units x targets``) and about
    twelve ``[units, target_block]`` float64 work arrays (``target_block`` targets are solved at
    once; it changes memory and speed, not results): 659 MiB measured on top of the 582 MiB of
    inputs at 7,540 models x 1,000 units x 10,000 targets, which took about 6 minutes on 2
    busy cores.

    ``device`` None (the default) fits with NumPy on the CPU. A torch device (``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, ``"mps"``) runs the same solver, written once for both (see
    :class:`_ArrayOps`), with torch there, as :func:`fit_ridge` does: the same alphas, warm
    starts, stopping rule and choice, the masks and outputs copied to the device (the memory
    above, there), in float64 (float32 on ``mps``, which has no float64). In float64 the
    weights agree with the NumPy fit to rounding (1e-13 measured on the CPU); see
    :func:`~transfer_influence.devices.precise_dtype` for float32. On the CPU torch took
    1.1-2.0x NumPy's time (``benchmarks/datamodel_fitting.py``), so NumPy stays the CPU default;
    no GPU was available to time or test the GPU path.
    """
    masks, outputs = _check_data(masks, outputs)
    _check_lasso_options(tol, max_iter)
    if target_block < 1:
        raise DataError(f"target_block must be >= 1, got {target_block}.")
    if not 0.0 < eps < 1.0:
        raise DataError(f"eps must lie strictly between 0 and 1, got {eps}.")
    split = split_models(
        masks.shape[0], holdout_fraction=holdout_fraction, heldout=heldout, seed=seed
    )
    device = _fit_device(device)
    x, y, x_mean, y_mean = _centred(masks, outputs, split.fit)
    targets = y.shape[1]
    problem = _LassoProblem.of(x, y, device)
    ops = problem.ops
    del x, y
    if np.ndim(alphas) == 0:
        if int(alphas) < 1:
            raise DataError(f"the number of LASSO alphas must be >= 1, got {alphas}.")
        alpha_max = _as_numpy(ops.xp.amax(abs(problem.xty), 0))
        table = alpha_max[None, :] * np.geomspace(1.0, eps, int(alphas))[:, None]
    else:
        table = _alpha_table(alphas, targets)
    selection_x = ops.like(masks[split.selection] - x_mean, problem.xty)
    offset = ops.like(y_mean - outputs[split.selection], problem.xty)
    weights = np.empty((masks.shape[1], targets))
    chosen = np.empty(targets, dtype=np.int64)
    for start in range(0, targets, target_block):
        block = slice(start, min(start + target_block, targets))
        for k, w in enumerate(problem.path(table, block, tol, max_iter)):
            residual = selection_x @ w
            residual += offset[:, block]
            error = ops.column_dot(residual, residual)
            if k == 0:
                best, best_k, best_w = error, ops.xp.zeros_like(error), w
                continue
            better = error < best  # strict: ties keep the earlier, larger alpha
            best = ops.xp.where(better, error, best)
            best_k = ops.xp.where(better, k, best_k)  # float: exact for these integers
            best_w = ops.xp.where(better, w, best_w)
        chosen[block], weights[:, block] = _as_numpy(best_k), _as_numpy(best_w)
    regularization = table[chosen, np.arange(targets)]
    bias = y_mean - x_mean @ weights
    predicted = masks[split.scoring] @ weights + bias
    if refit:
        weights, bias = _lasso_refit(masks, outputs, table, chosen, tol, max_iter, target_block,
                                     device)
    return _result(weights, bias, "lasso", regularization, split, predicted,
                   outputs[split.scoring], masks.shape[0] if refit else split.fit.size, refit)


def _lasso_refit(
    masks: np.ndarray, outputs: np.ndarray, table: np.ndarray, chosen: np.ndarray, tol: float,
    max_iter: int, target_block: int, device: torch.device | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``[units, targets]`` and bias ``[targets]`` on all models, each target at its
    ``chosen`` row of the alpha ``table``, reached along the same warm-started path."""
    x, y, x_mean, y_mean = _centred(masks, outputs)
    targets = y.shape[1]
    problem = _LassoProblem.of(x, y, device)
    del x, y
    weights = np.empty((masks.shape[1], targets))
    for start in range(0, targets, target_block):
        block = slice(start, min(start + target_block, targets))
        stop = int(chosen[block].max()) + 1  # no target of the block needs smaller alphas
        for k, w in enumerate(problem.path(table[:stop], block, tol, max_iter)):
            here = chosen[block] == k
            if here.any():
                weights[:, block][:, here] = _as_numpy(w)[:, here]
    return weights, y_mean - x_mean @ weights


# --------------------------------------------------------------------------- from a store
def completed_models(store: SweepStore, variant: OutputVariant
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every completed model of ``store``, in index order: sweep indices int64 ``[models]``,
    masks bool ``[models, units]`` and the output ``variant`` float64 ``[models, targets]``."""
    indices, masks, outputs = [], [], []
    for chunk in store.iter_completed_chunks():
        indices.append(chunk.indices)
        masks.append(chunk.masks)
        outputs.append(chunk.outputs.variant(variant))
    if not indices:
        raise StoreError(
            f"no completed models in {store.path}; run (or resume) the sweep before estimating."
        )
    return np.concatenate(indices), np.concatenate(masks), np.concatenate(outputs)


def fit_datamodels(
    store: SweepStore,
    variant: OutputVariant = "prob_correct",
    method: DatamodelMethod = "ridge",
    *,
    regularization: int | np.ndarray | None = None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    heldout: np.ndarray | None = None,
    seed: int = 0,
    refit: bool = False,
    device: str | torch.device | None = None,
) -> Datamodels:
    """Datamodels of every target example of ``store`` from its completed models.

    ``method`` ``"ridge"`` (:func:`fit_ridge`) or ``"lasso"`` (:func:`fit_lasso`);
    ``regularization`` is its grid (``lambdas`` or ``alphas``: a count or explicit values;
    default: that function's default). ``heldout`` are *sweep* model indices (all completed);
    without it a seeded ``holdout_fraction`` of the completed models is held out (split into
    selection and scoring halves by :func:`split_models`). The result's ``selection_indices``
    and ``heldout_indices`` are sweep model indices too. ``device`` is where the fit runs (None:
    NumPy on the CPU; see :func:`fit_ridge` and :func:`fit_lasso`).

    Unlike :func:`estimate_influence`, this holds every completed model in memory: the masks
    bool ``[models, units]`` and the outputs float64 ``[models, targets]`` (``models x (units +
    16 x targets)`` bytes at the peak of reading, e.g. 1.2 GB at 7,540 models x 10,000
    targets), plus the solver's memory (see :func:`fit_ridge` / :func:`fit_lasso`).
    """
    if method not in DATAMODEL_METHODS:
        raise DataError(
            f"unknown datamodel method {method!r}; choose one of {', '.join(DATAMODEL_METHODS)}."
        )
    model_indices, masks_all, outputs_all = completed_models(store, variant)
    rows = None
    if heldout is not None:
        wanted = np.asarray(heldout, dtype=np.int64).reshape(-1)
        found = np.isin(wanted, model_indices)
        if not found.all():
            raise DataError(
                f"heldout models {wanted[~found][:20].tolist()} are not completed in"
                f" {store.path}; hold out completed models only."
            )
        rows = np.searchsorted(model_indices, wanted)  # chunks come in increasing index order
    if method == "ridge":
        fit = partial(fit_ridge, lambdas=DEFAULT_NUM_LAMBDAS if regularization is None
                      else regularization)
    else:
        fit = partial(fit_lasso, alphas=DEFAULT_NUM_ALPHAS if regularization is None
                      else regularization)
    result = fit(masks_all, outputs_all, holdout_fraction=holdout_fraction, heldout=rows,
                 seed=seed, refit=refit, device=device)
    return dataclasses.replace(result, selection_indices=model_indices[result.selection_indices],
                               heldout_indices=model_indices[result.heldout_indices])
