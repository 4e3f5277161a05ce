"""Scaling of the difference-in-means estimator: time and peak memory at the paper's shape.

Shapes: the ImageNet study of Jain et al. (2022), m = 7,540 models x K = 1,000 source classes x
n = 10,000 target examples, and 4x the models. Reference: one float32 matrix product
``masks.T @ outputs`` over the whole store at the same shape (the estimator's floor: "without"
sums are column totals minus "with" sums, so it needs just that one product). Baseline: a naive
per-class Python loop (mean of outputs with the class minus mean without it) on a smaller shape,
with the fast estimator on that same shape for the speedup; and the loop timed on its first
``LOOP_SAMPLE_UNITS`` classes at the ImageNet shape, extrapolated linearly (every class costs the
same) since the full loop would take minutes.

Peak memory. tracemalloc only sees allocations made through Python's allocator and misses BLAS
work buffers, so each measurement runs in a fresh subprocess that first generates its data
(allocated once, in place, without large temporaries) and then reports the rise of
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the kernel's high-water mark of resident memory,
everything included) across the estimator call. That rise is the estimator's own working memory
on top of the input data; it should not grow with the number of models.

Usage: ``python benchmarks/estimator_scaling.py [--quick]``. The last line printed is one JSON
object with the headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from transfer_influence.estimators import difference_in_means

IMAGENET_SHAPE = (7540, 1000, 10000)  # models, units (source classes), targets


def make_data(models: int, units: int, targets: int, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Masks bool ``[models, units]`` keeping exactly half the units of each model, and
    float32 outputs ``[models, targets]`` in [0, 1) (like probabilities), each allocated once."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((models, units), dtype=bool)
    masks[:, : units // 2] = True
    rng.permuted(masks, axis=1, out=masks)
    return masks, rng.random((models, targets), dtype=np.float32)


def naive_loop(masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The definition as a per-unit Python loop: the baseline to beat."""
    influence = np.empty((masks.shape[1], outputs.shape[1]))
    for unit in range(masks.shape[1]):
        kept = masks[:, unit]
        influence[unit] = outputs[kept].mean(axis=0) - outputs[~kept].mean(axis=0)
    return influence


def one_matmul(masks: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """A single float32 product over the whole store: the floor the estimator aims for."""
    return masks.T.astype(np.float32) @ outputs


LOOP_SAMPLE_UNITS = 10  # the loop's cost is the same for every unit, so a sample extrapolates

METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "fast": difference_in_means,
    "loop": naive_loop,
    "loop_sample": lambda masks, outputs: naive_loop(masks[:, :LOOP_SAMPLE_UNITS], outputs),
    "matmul": one_matmul,
}


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_here(methods: list[str], shape: tuple[int, int, int], repeats: int
                 ) -> dict[str, dict[str, float | None]]:
    """Best-of-``repeats`` seconds of each method, timed alternately in this process so that
    they see the same machine load, and the max-RSS rise of the first method's first run (the
    high-water mark only rises, so later methods' peaks would be hidden)."""
    masks, outputs = make_data(*shape)
    # Start BLAS's threads and buffers first so one-off set-up is not billed to small shapes.
    np.ones((256, 256), dtype=np.float32) @ np.ones((256, 256), dtype=np.float32)
    before = _max_rss_mib()
    seconds: dict[str, list[float]] = {method: [] for method in methods}
    peak: float | None = None
    for _ in range(repeats):
        for method in methods:
            start = time.perf_counter()
            METHODS[method](masks, outputs)
            seconds[method].append(time.perf_counter() - start)
            if method == methods[0] and len(seconds[method]) == 1:
                peak = _max_rss_mib() - before
    input_mib = (masks.nbytes + outputs.nbytes) / 2**20
    return {
        method: {"seconds": min(times), "peak_mib": peak if method == methods[0] else None,
                 "input_mib": input_mib}
        for method, times in seconds.items()
    }


def measure(methods: list[str], shape: tuple[int, int, int], repeats: int
            ) -> dict[str, dict[str, float | None]]:
    """:func:`measure_here` in a fresh subprocess, so its max-RSS starts clean."""
    request = json.dumps({"methods": methods, "shape": shape, "repeats": repeats})
    done = subprocess.run(
        [sys.executable, __file__, "--worker", request], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def float32_error(shape: tuple[int, int, int]) -> dict[str, float]:
    """Largest deviation of the float32-product estimator from a float64 computation, next to
    the spread of the influences themselves (the scale that matters)."""
    masks, outputs = make_data(*shape, seed=1)
    masks64, outputs64 = masks.astype(np.float64), outputs.astype(np.float64)
    n_with = masks64.sum(axis=0)[:, None]
    with_sum = masks64.T @ outputs64
    reference = with_sum / n_with - (outputs64.sum(axis=0) - with_sum) / (len(masks) - n_with)
    error = np.abs(difference_in_means(masks, outputs) - reference).max()
    return {"max_abs_error_vs_float64": float(error), "influence_std": float(reference.std())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller baselines")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        request = json.loads(args.worker)
        print(json.dumps(measure_here(request["methods"], tuple(request["shape"]),
                                      request["repeats"])))
        return

    repeats = 2 if args.quick else 3
    models, units, targets = IMAGENET_SHAPE
    big_shape = (4 * models, units, targets)
    # The loop costs the same per unit, so the small shape keeps many units and shrinks the rest.
    small_shape = (1000, 500, 1000) if args.quick else (2000, units, 2000)
    accuracy_shape = (models, units, 200 if args.quick else 1000)

    at_imagenet = measure(["fast", "matmul", "loop_sample"], IMAGENET_SHAPE, repeats)
    imagenet, reference, loop_imagenet = (at_imagenet[m] for m in ("fast", "matmul",
                                                                   "loop_sample"))
    loop_imagenet["seconds"] *= units / LOOP_SAMPLE_UNITS
    big = measure(["fast"], big_shape, max(1, repeats - 1))["fast"]
    at_small = measure(["fast", "loop"], small_shape, repeats)
    fast_small, loop = at_small["fast"], at_small["loop"]
    accuracy = float32_error(accuracy_shape)

    rows = [
        ("one float32 matmul", IMAGENET_SHAPE, reference),
        ("difference_in_means", IMAGENET_SHAPE, imagenet),
        ("difference_in_means", big_shape, big),
        ("naive loop (extrapol.)", IMAGENET_SHAPE, loop_imagenet),
        ("naive per-class loop", small_shape, loop),
        ("difference_in_means", small_shape, fast_small),
    ]
    print(f"{'method':<22}{'models x units x targets':>28}{'seconds':>10}{'peak MiB':>10}"
          f"{'input MiB':>11}")
    for name, shape, row in rows:
        peak = "-" if row["peak_mib"] is None else f"{row['peak_mib']:.0f}"
        print(f"{name:<22}{' x '.join(map(str, shape)):>28}{row['seconds']:>10.2f}"
              f"{peak:>10}{row['input_mib']:>11.0f}")
    print(f"float32 products vs float64 at {accuracy_shape}: max abs error"
          f" {accuracy['max_abs_error_vs_float64']:.2e} (influence std"
          f" {accuracy['influence_std']:.2e})")
    print(json.dumps({
        "seconds_imagenet_shape": round(imagenet["seconds"], 3),
        "peak_mib_imagenet_shape": round(imagenet["peak_mib"], 1),
        "speedup_vs_loop": round(loop["seconds"] / fast_small["seconds"], 1),
        "speedup_vs_loop_imagenet_extrapolated": round(
            loop_imagenet["seconds"] / imagenet["seconds"], 1),
        "seconds_one_matmul_imagenet_shape": round(reference["seconds"], 3),
        "ratio_to_one_matmul": round(imagenet["seconds"] / reference["seconds"], 2),
        "seconds_4x_models": round(big["seconds"], 3),
        "peak_mib_4x_models": round(big["peak_mib"], 1),
        "input_mib_imagenet_shape": round(imagenet["input_mib"], 1),
        "loop_shape": list(small_shape),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work skews the timings
        **{key: float(f"{value:.3g}") for key, value in accuracy.items()},
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
