"""Cost of multi-stage influence functions against the leave-one-out retraining they replace.

Problem: a small CNN (``small_cnn``, width 4, float64) pretrained on random 1x14x14 images of 4
classes (``--quick``: 200 examples; full: 1,000), fixed-feature transfer to 6 classes (60
examples), 60 test examples; both stages driven to their optima first. Measured, one run each:

- ``seconds_per_test_vector``: one test-side vector (two CG inverse-Hessian-vector products on
  ``H^2 + damping I``);
- ``pretrain_examples_per_second``: the scoring pass (per-example gradients with ``vmap`` and
  one dot product each);
- ``cg_vs_exact_rel_error``: CG against the materialised exact solve on a head-sized problem;
- EK-FAC against CG for the pretraining Hessian ``H_G``, on a second problem where that Hessian
  matters (above, the fine-tuning side vector lies where ``H_G`` is almost its weight decay
  times the identity, so any solver agrees): images are class means plus noise and the weight
  decay is 1e-3. ``ekfac_vs_cg_pearson`` correlates the influences of all pretraining examples
  on the summed test loss, with ``pretrain_identity_vs_cg_pearson`` (``H_G`` replaced by the
  identity) as the floor; ``ekfac_seconds_per_solve`` and ``cg_seconds_per_solve`` time the
  ``H_G`` solve of one test vector side by side (``ekfac_fit_seconds``: fitting the factors,
  once);
- ``loo_retrain_seconds``: one leave-one-out retraining (warm-started, to the same tolerance),
  which the influence of one example replaces.

Usage: ``python benchmarks/influence_function_cost.py [--quick]``; the last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from transfer_influence.influence_functions import (
    FixedFeature,
    MultiStageProblem,
    SolverOptions,
    hvp,
)
from transfer_influence.influence_functions.validate import leave_one_out
from transfer_influence.models import build_model


def problem(m: int, seed: int = 0, *, decay: float = 1e-2, class_means: bool = False
            ) -> tuple[MultiStageProblem, torch.Tensor, torch.Tensor]:
    """A converged two-stage problem on seeded random data (see module docstring): noise
    images, plus one random mean image per class (4 source, 6 target) if ``class_means``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    means = (torch.randn(10, 1, 14, 14, generator=g, dtype=torch.float64) if class_means
             else torch.zeros(10, 1, 14, 14, dtype=torch.float64))

    def data(n: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        offset = 0 if k == 4 else 4
        return torch.randn(n, 1, 14, 14, generator=g, dtype=torch.float64) + means[
            y + offset], y

    pretrained = build_model("small_cnn", in_channels=1, image_size=14, num_classes=4,
                             width=4).double()
    finetuned = copy.deepcopy(pretrained)
    finetuned.replace_head(6, g)
    finetuned.double()
    xs, ys = data(m, 4)
    xt, yt = data(60, 6)
    x_test, y_test = data(60, 6)
    result = MultiStageProblem(pretrained, finetuned, xs, ys, xt, yt, FixedFeature(l2=1e-2),
                               pretrain_decay=decay)
    result.converge(tol=1e-3)
    return result, x_test, y_test


def ekfac_against_cg(m: int, options: SolverOptions) -> dict[str, float]:
    """EK-FAC and CG (``options``) for ``H_G`` side by side (see module docstring)."""
    built, x_test, y_test = problem(m, decay=1e-3, class_means=True)
    side = built.fine_tuning_side(x_test, y_test, options)
    start = time.perf_counter()
    built.ekfac()
    fit = time.perf_counter() - start
    seconds, scores = {}, {}
    for solver in ("cg", "ekfac"):
        start = time.perf_counter()
        vector = built.pretrain_solve(side, SolverOptions(
            solver, options.damping, options.tol, options.max_iter))  # type: ignore[arg-type]
        seconds[solver] = time.perf_counter() - start
        scores[solver] = built.scores(vector).numpy()
    identity = built.scores(side).numpy()
    return {"ekfac_vs_cg_pearson": float(np.corrcoef(scores["cg"], scores["ekfac"])[0, 1]),
            "pretrain_identity_vs_cg_pearson": float(np.corrcoef(scores["cg"], identity)[0, 1]),
            "ekfac_seconds_per_solve": seconds["ekfac"], "cg_seconds_per_solve": seconds["cg"],
            "ekfac_fit_seconds": fit}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 pretraining examples")
    args = parser.parse_args()
    m = 200 if args.quick else 1000
    built, x_test, y_test = problem(m)
    options = SolverOptions("cg", damping=1e-3, tol=1e-4, max_iter=2000)

    start = time.perf_counter()
    vector = built.test_vector(x_test, y_test, options)
    per_vector = time.perf_counter() - start

    start = time.perf_counter()
    built.scores(vector)
    per_example = m / (time.perf_counter() - start)

    w = built.w_size
    phi = built.phi
    gradient = torch.func.grad(built.test_loss)(phi, x_test, y_test)[w:]

    def hvp_head(v: torch.Tensor) -> torch.Tensor:  # the head block is small: materialisable
        return hvp(lambda h: built.finetune_objective(torch.cat([phi[:w], h])), phi[w:], v)

    exact = SolverOptions("exact", damping=1e-6).solve(hvp_head, gradient)
    cg = SolverOptions("cg", damping=1e-6, tol=1e-10, max_iter=5000).solve(hvp_head, gradient)
    rel_error = float(torch.linalg.vector_norm(cg - exact) / torch.linalg.vector_norm(exact))

    start = time.perf_counter()
    leave_one_out(built, 0, x_test, y_test, tol=1e-3)
    loo = time.perf_counter() - start

    ekfac = ekfac_against_cg(m, options)

    print(f"{m} pretraining examples, {built.theta.numel()} pretrained parameters")
    print(f"test vector: {per_vector:.2f} s; scoring: {per_example:.0f} examples/s;"
          f" one leave-one-out retraining: {loo:.2f} s")
    print(f"influence of all {m} examples: {per_vector + m / per_example:.2f} s vs"
          f" {m * loo:.0f} s of leave-one-out retraining"
          f" ({m * loo / (per_vector + m / per_example):.0f}x)")
    print(f"EK-FAC for H_G: fit {ekfac['ekfac_fit_seconds']:.2f} s once, then"
          f" {ekfac['ekfac_seconds_per_solve']:.4f} s per solve vs CG's"
          f" {ekfac['cg_seconds_per_solve']:.2f} s; influences vs CG's: Pearson"
          f" {ekfac['ekfac_vs_cg_pearson']:.3f} (H_G = identity:"
          f" {ekfac['pretrain_identity_vs_cg_pearson']:.3f})")
    print(json.dumps({"seconds_per_test_vector": per_vector,
                      "pretrain_examples_per_second": per_example,
                      "cg_vs_exact_rel_error": rel_error, "loo_retrain_seconds": loo,
                      **ekfac}))


if __name__ == "__main__":
    main()
