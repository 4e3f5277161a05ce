"""The paper's check of an influence estimate, on the planted problem, through the product path:
sweep -> difference-in-means -> remove the most harmful / most helpful class -> retrain over
seeds. Removing the planted harmful class must raise accuracy on its target class and removing
the planted helpful class must lower it, with 95% intervals excluding zero."""

import pytest
import torch

from transfer_influence.config import parse_config
from transfer_influence.counterfactual import run_counterfactual
from transfer_influence.data import planted_transfer_problem
from transfer_influence.estimators import estimate_influence
from transfer_influence.sweep.plan import SweepPlan
from transfer_influence.sweep.runners import run_local

SEEDS = 10


@pytest.fixture(scope="module")
def planted_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planted")
    config = parse_config({
        "name": "planted-counterfactual",
        "data": {"suite": "planted", "seed": 0},
        "model": {"name": "mlp", "options": {"width": 16, "depth": 1}},
        "pretrain": {"epochs": 40, "lr": 0.05, "batch_size": 64},
        "transfer": {"l2": 1e-2},
        "sweep": {"num_models": 64, "group_size": 32, "seed": 5, "store": "sweep.zarr"},
    }, base_dir=folder)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread overhead dominates
    try:
        store = run_local(config, quiet=True)
        plan = SweepPlan.from_config(config)
        influence = estimate_influence(store)
        _, truth = planted_transfer_problem(0)
        results = {strategy: run_counterfactual(plan, strategy, [1], SEEDS, influence=influence,
                                                target_class=truth.target_class_name, quiet=True)
                   for strategy in ("bottom", "top")}
    finally:
        torch.set_num_threads(threads)
    return results, truth


def test_removing_the_most_harmful_class_raises_accuracy(planted_sweep):
    results, truth = planted_sweep
    arm = results["bottom"].arms[0]
    assert arm.removed[0] == [truth.harmful_source_name]  # the estimate found the planted class
    print(f"remove {arm.removed[0]}: {results['bottom'].baseline.mean:.3f} -> {arm.mean:.3f},"
          f" difference {arm.diff_mean:+.3f} [{arm.diff_low:+.3f}, {arm.diff_high:+.3f}]")
    assert arm.diff_low > 0


def test_removing_the_most_helpful_class_lowers_accuracy(planted_sweep):
    results, truth = planted_sweep
    arm = results["top"].arms[0]
    assert arm.removed[0] == [truth.helpful_source_name]
    print(f"remove {arm.removed[0]}: {results['top'].baseline.mean:.3f} -> {arm.mean:.3f},"
          f" difference {arm.diff_mean:+.3f} [{arm.diff_low:+.3f}, {arm.diff_high:+.3f}]")
    assert arm.diff_high < 0
    # Both strategies share the same baseline models (content-addressed stores).
    assert results["top"].baseline.accuracies == results["bottom"].baseline.accuracies
