"""What dataset pruning costs, against the influence sweep it replaces, and which k-means to use.

Measured in one run on one experiment (default ``examples/split_fashion.toml``, its store moved
to a temporary folder so nothing is reused):

- ``surrogate_seconds``: training the surrogate once on the whole source;
- ``lm_seconds``: the label-mapping score (the surrogate's predictions on the target training set);
- ``sweep_seconds``: the influence sweep of the same experiment at ``--sweep-models`` models
  (default 2,000, the size at which the retraining-based estimates of the shipped experiments
  are trustworthy), extrapolated from the measured time of one group of its models trained the
  way the sweep trains them;
- ``speedup_vs_sweep``: ``sweep_seconds / (surrogate_seconds + lm_seconds)``;
- ``kmeans_seconds_sklearn`` / ``kmeans_seconds_sklearn_minibatch`` / ``kmeans_seconds_faiss``:
  feature mapping's k-means at K = 2,000 on 50,000 surrogate features (Fashion-MNIST training
  images through the surrogate's backbone), each run for the same number of Lloyd iterations
  (``--kmeans-iterations``; scikit-learn starts from k-means++, faiss keeps the best of
  ``FAISS_RESTARTS`` random starts; faiss only if ``faiss-cpu`` is installed, else its key is
  null), with its quality: the mean squared distance of every point to its nearest centroid
  (``kmeans_inertia_*``, lower is better). Feature mapping uses the fastest at equal quality:
  scikit-learn's ``KMeans`` (measured numbers in ``pruning/scores.py: fit_kmeans``).

Usage: ``python benchmarks/pruning_cost.py [--quick]``. ``--quick`` runs fewer k-means iterations
and a smaller group of sweep models. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin

from transfer_influence.config import load_config
from transfer_influence.data import load_dataset
from transfer_influence.pruning import score_source, train_surrogate
from transfer_influence.pruning.scores import KMEANS_ITERATIONS

FAISS_RESTARTS = 3  # random starts, best kept: one start can merge two true clusters
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.training import extract_features

ROOT = Path(__file__).resolve().parent.parent


def timed(work: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def kmeans_implementations(clusters: int, iterations: int, seed: int
                           ) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each k-means as ``features -> centroids``, all with one initialisation and the same
    number of iterations."""
    def sklearn_full(x: np.ndarray) -> np.ndarray:
        return KMeans(clusters, n_init=1, max_iter=iterations, tol=0.0,
                      random_state=seed).fit(x).cluster_centers_

    def sklearn_minibatch(x: np.ndarray) -> np.ndarray:
        return MiniBatchKMeans(clusters, n_init=1, max_iter=iterations, batch_size=4096,
                               random_state=seed, max_no_improvement=None).fit(x).cluster_centers_

    implementations = {"sklearn": sklearn_full, "sklearn_minibatch": sklearn_minibatch}
    try:
        import faiss  # not a dependency: `pip install faiss-cpu` to compare it
    except ImportError:
        return implementations

    def faiss_kmeans(x: np.ndarray) -> np.ndarray:
        kmeans = faiss.Kmeans(x.shape[1], clusters, niter=iterations, seed=seed,
                              nredo=FAISS_RESTARTS, max_points_per_centroid=-(-len(x) // clusters),
                              min_points_per_centroid=1)
        kmeans.train(np.ascontiguousarray(x, dtype=np.float32))
        return kmeans.centroids

    implementations["faiss"] = faiss_kmeans
    return implementations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "split_fashion.toml")
    parser.add_argument("--sweep-models", type=int, default=2000)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--kmeans-points", type=int, default=50_000)
    parser.add_argument("--kmeans-iterations", type=int, default=None)
    args = parser.parse_args()
    iterations = args.kmeans_iterations or (10 if args.quick else KMEANS_ITERATIONS)

    config = load_config(args.config)
    with tempfile.TemporaryDirectory() as folder:
        config = config.model_copy(update={"sweep": config.sweep.model_copy(
            update={"store": str(Path(folder) / "sweep.zarr")})})
        plan = SweepPlan.from_config(config)
        surrogate_seconds, surrogate = timed(lambda: train_surrogate(plan))
        lm_seconds, _ = timed(lambda: score_source(plan, "lm", surrogate))
        group = plan.groups()[0][: 2 if args.quick else None]
        group_seconds, _ = timed(lambda: plan.train_group(group))
        sweep_seconds = group_seconds / len(group) * args.sweep_models

        images = load_dataset("fashion-mnist", "train", seed=0)
        images = images.take(np.arange(min(args.kmeans_points, len(images))))
        features = extract_features([surrogate.model], images,
                                    normalization=surrogate.recipe.normalization)[0].numpy()
    kmeans = {}
    for name, fit in kmeans_implementations(args.clusters, iterations, 0).items():
        seconds, centroids = timed(lambda fit=fit: fit(features))
        nearest = pairwise_distances_argmin(features, centroids)
        inertia = float(((features - centroids[nearest]) ** 2).sum(axis=1).mean())
        kmeans[name] = (seconds, inertia)

    print(f"experiment {config.name}: surrogate {surrogate_seconds:.1f} s, LM {lm_seconds:.2f} s,"
          f" sweep {group_seconds / len(group):.2f} s/model -> {sweep_seconds / 60:.1f} min for"
          f" {args.sweep_models} models")
    print(f"k-means, K={args.clusters}, {len(features)} x {features.shape[1]} features,"
          f" {iterations} iterations:")
    for name, (seconds, inertia) in kmeans.items():
        print(f"  {name:<18} {seconds:8.1f} s   mean squared distance {inertia:.4f}")
    print(json.dumps({
        "surrogate_seconds": round(surrogate_seconds, 2),
        "lm_seconds": round(lm_seconds, 3),
        "sweep_seconds": round(sweep_seconds, 1),
        "sweep_models": args.sweep_models,
        "speedup_vs_sweep": round(sweep_seconds / (surrogate_seconds + lm_seconds), 1),
        **{f"kmeans_seconds_{name}": round(seconds, 2) for name, (seconds, _) in kmeans.items()},
        **{f"kmeans_inertia_{name}": round(inertia, 5) for name, (_, inertia) in kmeans.items()},
        **({} if "faiss" in kmeans else {"kmeans_seconds_faiss": None}),
        "kmeans_points": len(features), "clusters": args.clusters, "iterations": iterations,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "quick": args.quick,
    }))


if __name__ == "__main__":
    main()
