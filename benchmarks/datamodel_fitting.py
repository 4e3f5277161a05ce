"""Fitting time of ridge and LASSO datamodels against scikit-learn fitting each target separately.

For every shape (models x units x targets) both sides solve the same problem in the same run:

- **ridge**: ours is :func:`fit_ridge` (one thin SVD shared by all targets, whole lambda grid
  from it); the baseline fits ``sklearn.linear_model.Ridge(alpha=lambda)`` target by target for
  every lambda of the same grid on the fit models and keeps the lambda with the smallest
  squared error on the selection models -- the same held-out selection. A second, stronger
  scikit-learn reference fits ``Ridge`` once per lambda on all targets at once (a 2-D ``y``).
  Beside ours in NumPy/SciPy (the CPU default), the same fit with torch's linear algebra on
  ``--device`` (``fit_ridge(..., device=...)``; default ``cpu``, so torch-CPU against NumPy
  side by side, with the largest weight difference between the two).
- **LASSO**: ours is :func:`fit_lasso` (batched FISTA over all targets); the baseline runs
  ``sklearn.linear_model.lasso_path`` target by target at the same per-target alphas, with the
  Gram matrix ``X^T X`` precomputed once and shared (its fastest set-up at these shapes), then
  the same held-out selection. Same ``tol`` (scikit-learn's relative duality gap, 1e-4). As for
  ridge, the same solver in torch on ``--device`` (``fit_lasso(..., device=...)``) runs beside
  the NumPy one, with the ratio of their times and the largest weight difference.

Targets cost the same on average, so the per-target baselines run on the first
``--sklearn-targets`` targets and are **extrapolated** linearly to all targets (the table marks
them ``*``). The sanity columns compare both sides on those targets: largest weight difference
(ridge) and how many targets chose the same alpha (LASSO; near-ties on the path may differ).

Data: masks keep exactly half the units (like a sweep), outputs are ``masks @ w + noise`` with a
few units per target mattering (held-out LDS around 0.5), float64.

Threads: BLAS (and torch's CPU kernels) run with ``--threads`` threads (default 1) on all
sides. scikit-learn's
coordinate descent is single-threaded anyway, so one thread compares per-core efficiency; and on
a machine shared with other jobs, multi-threaded BLAS can slow down many-fold while its threads
wait for each other (we saw a 100 x 100 by 100 x 256 product take 60x longer with 2 threads
than with 1 on a busy 2-core machine).

Usage: ``python benchmarks/datamodel_fitting.py [--quick] [--threads N] [--device D]``. The last line printed
is one JSON object with the headline figures (the largest shape of each method).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import Ridge, lasso_path
from threadpoolctl import threadpool_limits

from transfer_influence.estimators.datamodels import (
    DEFAULT_EPS,
    DEFAULT_NUM_ALPHAS,
    DEFAULT_NUM_LAMBDAS,
    RIDGE_GRID_RANGE,
    fit_lasso,
    fit_ridge,
    split_models,
)

SEED = 0
Shape = tuple[int, int, int]


def make_data(models: int, units: int, targets: int, seed: int = SEED
              ) -> tuple[np.ndarray, np.ndarray]:
    """Masks bool ``[models, units]`` keeping exactly half the units, and float64 outputs
    ``[models, targets]``: ``masks @ w + noise`` with about 5% of the units mattering per target."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((models, units), dtype=bool)
    masks[:, : units // 2] = True
    rng.permuted(masks, axis=1, out=masks)
    weights = rng.normal(size=(units, targets)) * (rng.random((units, targets)) < 0.05)
    noise = rng.normal(size=(models, targets)) * np.sqrt(max(1.0, 0.0125 * units))
    return masks, masks @ weights + noise


def timed(function: Callable[[], object]) -> tuple[float, object]:
    """Wall-clock seconds of one call, and its result."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def _fit_design(masks: np.ndarray, outputs: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit-model design and outputs, selection-model design and outputs (default split)."""
    split = split_models(masks.shape[0], seed=SEED)
    return (masks[split.fit].astype(np.float64), outputs[split.fit],
            masks[split.selection].astype(np.float64), outputs[split.selection])


def ridge_grid(masks: np.ndarray) -> np.ndarray:
    """The default ridge grid of :func:`fit_ridge`: geometric over ``RIDGE_GRID_RANGE`` times
    the mean squared singular value of the centred fit design, ``||X_c||_F^2 / min(n, units)``."""
    x = masks[split_models(masks.shape[0], seed=SEED).fit].astype(np.float64)
    x -= x.mean(axis=0)
    return np.geomspace(*RIDGE_GRID_RANGE, DEFAULT_NUM_LAMBDAS) * (
        np.einsum("ij,ij->", x, x) / min(x.shape))


def sklearn_ridge_per_target(masks: np.ndarray, outputs: np.ndarray, grid: np.ndarray,
                             targets: int) -> np.ndarray:
    """Weights ``[units, targets]`` of the first ``targets`` targets: per target and lambda a
    scikit-learn ``Ridge`` fit, the lambda with the smallest selection-model error kept."""
    x_fit, y_fit, x_sel, y_sel = _fit_design(masks, outputs)
    weights = np.empty((masks.shape[1], targets))
    for t in range(targets):
        best = np.inf
        for lam in grid:
            model = Ridge(alpha=lam).fit(x_fit, y_fit[:, t])
            error = ((model.predict(x_sel) - y_sel[:, t]) ** 2).sum()
            if error < best:
                best, weights[:, t] = error, model.coef_
    return weights


def sklearn_ridge_all_targets(masks: np.ndarray, outputs: np.ndarray, grid: np.ndarray) -> None:
    """The stronger reference: one multi-target scikit-learn ``Ridge`` fit per lambda."""
    x_fit, y_fit, x_sel, y_sel = _fit_design(masks, outputs)
    for lam in grid:
        ((Ridge(alpha=lam).fit(x_fit, y_fit).predict(x_sel) - y_sel) ** 2).sum(axis=0)


def sklearn_lasso_per_target(masks: np.ndarray, outputs: np.ndarray, targets: int
                             ) -> np.ndarray:
    """Chosen alphas ``[targets]`` of the first ``targets`` targets: per target scikit-learn's
    ``lasso_path`` at :func:`fit_lasso`'s default alphas (Gram precomputed once), then the alpha
    with the smallest selection-model error."""
    x_fit, y_fit, x_sel, y_sel = _fit_design(masks, outputs)
    x_mean, y_mean = x_fit.mean(axis=0), y_fit.mean(axis=0)
    x = np.asfortranarray(x_fit - x_mean)
    gram = x.T @ x
    chosen = np.empty(targets)
    for t in range(targets):
        y = y_fit[:, t] - y_mean[t]
        xy = x.T @ y
        alphas = np.abs(xy).max() / len(y) * np.geomspace(1.0, DEFAULT_EPS, DEFAULT_NUM_ALPHAS)
        alphas, coefs, _ = lasso_path(x, y, alphas=alphas, precompute=gram, Xy=xy, tol=1e-4,
                                      max_iter=1000)
        errors = ((((x_sel - x_mean) @ coefs).T + y_mean[t] - y_sel[:, t]) ** 2).sum(axis=1)
        chosen[t] = alphas[np.argmin(errors)]
    return chosen


def bench_ridge(shape: Shape, sample: int, device: str) -> dict[str, float | int | list[int]]:
    masks, outputs = make_data(*shape)
    grid = ridge_grid(masks)
    ours_s, ours = timed(lambda: fit_ridge(masks, outputs, lambdas=grid))
    torch_s, on_torch = timed(lambda: fit_ridge(masks, outputs, lambdas=grid, device=device))
    sample = min(sample, shape[2])
    sk_s, sk_weights = timed(lambda: sklearn_ridge_per_target(masks, outputs, grid, sample))
    multi_s, _ = timed(lambda: sklearn_ridge_all_targets(masks, outputs, grid))
    return {
        "shape": list(shape), "seconds": ours_s, "torch_seconds": torch_s,
        "torch_max_weight_difference": float(np.abs(on_torch.weights - ours.weights).max()),
        "sklearn_seconds_extrapolated": sk_s * shape[2] / sample, "sklearn_targets_timed": sample,
        "sklearn_multitarget_seconds": multi_s,
        "max_weight_difference": float(np.abs(ours.weights[:, :sample] - sk_weights).max()),
        "lds": ours.lds,
    }


def bench_lasso(shape: Shape, sample: int, device: str) -> dict[str, float | int | list[int]]:
    masks, outputs = make_data(*shape)
    ours_s, ours = timed(lambda: fit_lasso(masks, outputs))
    torch_s, on_torch = timed(lambda: fit_lasso(masks, outputs, device=device))
    sample = min(sample, shape[2])
    sk_s, sk_alphas = timed(lambda: sklearn_lasso_per_target(masks, outputs, sample))
    same = np.isclose(ours.regularization[:sample], sk_alphas, rtol=1e-9)
    return {
        "shape": list(shape), "seconds": ours_s, "torch_seconds": torch_s,
        "torch_max_weight_difference": float(np.abs(on_torch.weights - ours.weights).max()),
        "sklearn_seconds_extrapolated": sk_s * shape[2] / sample, "sklearn_targets_timed": sample,
        "same_alpha_fraction": float(same.mean()), "lds": ours.lds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, about a minute")
    parser.add_argument("--sklearn-targets", type=int, default=None,
                        help="targets the per-target scikit-learn baselines are timed on")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads for both sides")
    parser.add_argument("--device", default="cpu",
                        help="torch device of the torch fits (cpu, cuda, cuda:N, mps)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        ridge_shapes: list[Shape] = [(1000, 100, 1000), (2000, 400, 1000), (2000, 1000, 2000),
                                     (400, 4000, 1000)]
        lasso_shapes: list[Shape] = [(1000, 100, 256), (2000, 400, 256), (2000, 1000, 256)]
        sample = args.sklearn_targets or 3
    else:  # ImageNet study of Jain et al.: 7,540 models x 1,000 classes x 10,000 targets
        ridge_shapes = [(2000, 1000, 2000), (7540, 1000, 2000), (7540, 1000, 10000),
                        (1000, 20000, 1000)]
        lasso_shapes = [(2000, 1000, 512), (7540, 1000, 1024)]
        sample = args.sklearn_targets or 4

    with threadpool_limits(args.threads):
        rows = [("ridge", bench_ridge(shape, sample, args.device)) for shape in ridge_shapes]
        rows += [("lasso", bench_lasso(shape, sample, args.device)) for shape in lasso_shapes]

    print(f"{'method':<7}{'models x units x targets':>26}{'ours s':>9}{'sklearn s*':>12}"
          f"{'speedup':>9}{'sk multi s':>12}{'LDS':>7}  sanity")
    for method, row in rows:
        speedup = row["sklearn_seconds_extrapolated"] / row["seconds"]
        multi = row.get("sklearn_multitarget_seconds")
        sanity = (f"max |dW| {row['max_weight_difference']:.1e}" if method == "ridge"
                  else f"same alpha {row['same_alpha_fraction']:.0%}")
        print(f"{method:<7}{' x '.join(map(str, row['shape'])):>26}{row['seconds']:>9.2f}"
              f"{row['sklearn_seconds_extrapolated']:>12.1f}{speedup:>9.1f}"
              f"{'-' if multi is None else f'{multi:.1f}':>12}{row['lds']:>7.2f}  {sanity}")
    print(f"* scikit-learn per target: timed on the first {sample} targets of each shape and"
          " extrapolated linearly to all targets.")
    print(f"\nNumPy/SciPy against torch on {args.device} (same grid, same selection):")
    print(f"{'method':<7}{'models x units x targets':>26}{'NumPy s':>9}{'torch s':>9}"
          f"{'torch/NumPy':>13}{'max |dW|':>10}")
    for method, row in rows:
        print(f"{method:<7}{' x '.join(map(str, row['shape'])):>26}{row['seconds']:>9.2f}"
              f"{row['torch_seconds']:>9.2f}{row['torch_seconds'] / row['seconds']:>13.2f}"
              f"{row['torch_max_weight_difference']:>10.1e}")

    def headline(method: str) -> dict[str, object]:
        row = max((r for m, r in rows if m == method), key=lambda r: np.prod(r["shape"]))
        return row | {"speedup": row["sklearn_seconds_extrapolated"] / row["seconds"]}

    ridge, lasso = headline("ridge"), headline("lasso")
    print(json.dumps({
        "ridge_speedup_vs_sklearn": round(ridge["speedup"], 1),
        "lasso_speedup_vs_sklearn": round(lasso["speedup"], 1),
        "ridge_shape": ridge["shape"],
        "ridge_seconds": round(ridge["seconds"], 3),
        "ridge_sklearn_seconds_extrapolated": round(ridge["sklearn_seconds_extrapolated"], 1),
        "ridge_sklearn_multitarget_seconds": round(ridge["sklearn_multitarget_seconds"], 2),
        "torch_device": args.device,
        "ridge_torch_seconds": round(ridge["torch_seconds"], 3),
        "ridge_torch_over_numpy": round(ridge["torch_seconds"] / ridge["seconds"], 2),
        "ridge_torch_max_weight_difference": ridge["torch_max_weight_difference"],
        "lasso_shape": lasso["shape"],
        "lasso_seconds": round(lasso["seconds"], 3),
        "lasso_sklearn_seconds_extrapolated": round(lasso["sklearn_seconds_extrapolated"], 1),
        "lasso_torch_seconds": round(lasso["torch_seconds"], 3),
        "lasso_torch_over_numpy": round(lasso["torch_seconds"] / lasso["seconds"], 2),
        "lasso_torch_max_weight_difference": lasso["torch_max_weight_difference"],
        "sklearn_extrapolated_from_targets": sample,
        "num_lambdas": DEFAULT_NUM_LAMBDAS,
        "num_alphas": DEFAULT_NUM_ALPHAS,
        "blas_threads": args.threads,
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work skews the timings
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
