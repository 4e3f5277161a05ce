"""How large multi-stage influences are, across experiments: Chen et al. 2020's task-similarity
(section 4.3) and fine-tuning-size (section 4.4) observations, over several pretrained models.

Runs ``transfer-influence influence-function`` (the same computation, with the same solver
options) on each CONFIG once per pretraining seed ``s`` (``[sweep] seed = s``, saved in the
store ``<store>-seed<s>.zarr``, so reruns reuse the results), and prints for each config the mean
``|influence|`` of a pretraining example on the summed target test loss: its mean over seeds
with a 95% t-interval, and its ratio to the FIRST config, paired by seed (configs with the same
source and pretraining recipe share seed ``s``'s pretrained model).

    PYTHONPATH=src python examples/influence_observations.py \\
        examples/mnist_influence_function.toml examples/mnist_influence_fashion.toml --seeds 5

The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from transfer_influence.config import load_config
from transfer_influence.counterfactual.experiment import mean_interval
from transfer_influence.influence_functions.experiment import (
    InfluenceArgs,
    run_influence_function,
)


def mean_abs_influence(path: str, seed: int, solver: dict) -> float:
    """Mean |influence| on the summed test loss of CONFIG ``path`` pretrained with ``seed``."""
    config = load_config(path)
    store = Path(config.sweep.store)
    config = config.model_copy(update={"sweep": config.sweep.model_copy(update={
        "seed": seed, "store": str(store.with_name(f"{store.stem}-seed{seed}{store.suffix}"))})})
    result = run_influence_function(config, InfluenceArgs(config.config_hash(), **solver))
    return float(np.abs(result.total).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="experiment TOMLs; ratios are to the first")
    parser.add_argument("--seeds", type=int, default=5, help="pretraining seeds 0..seeds-1")
    parser.add_argument("--tests", type=int, default=2)
    parser.add_argument("--damping", type=float, default=1e-3)
    parser.add_argument("--cg-tol", type=float, default=1e-4)
    parser.add_argument("--train-tol", type=float, default=3e-3)
    options = parser.parse_args()
    solver = {"tests": options.tests, "damping": options.damping, "cg_tol": options.cg_tol,
              "train_tol": options.train_tol}
    values = np.array([[mean_abs_influence(path, seed, solver) for seed in range(options.seeds)]
                       for path in options.configs])
    summary = {}
    print(f"mean |influence| on the summed test loss, {options.seeds} pretraining seeds, 95% CI")
    for path, row in zip(options.configs, values):
        mean, low, high = mean_interval(row)
        ratio, ratio_low, ratio_high = mean_interval(row / values[0])
        print(f"{path}: {mean:.3g} [{low:.3g}, {high:.3g}]; ratio to the first"
              f" {ratio:.3g} [{ratio_low:.3g}, {ratio_high:.3g}]")
        summary[Path(path).stem] = {"per_seed": row.tolist(), "mean": mean, "ci": [low, high],
                                    "ratio": ratio, "ratio_ci": [ratio_low, ratio_high]}
    print(json.dumps({"solver": solver, "seeds": options.seeds, "configs": summary}))


if __name__ == "__main__":
    main()
