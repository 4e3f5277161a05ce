"""Counterfactual retraining: remove source units, pretrain on the rest, measure the target."""

from .arms import (
    STRATEGIES,
    Arm,
    baseline_arm,
    group_arm,
    named_arm,
    random_arms,
    ranked_arms,
    retrain_seed,
)
from .experiment import (
    ArmResult,
    CounterfactualResult,
    build_arms,
    correct_per_seed,
    mean_interval,
    paired_seeds,
    ranking_scores,
    run_counterfactual,
    target_selection,
)
from .retrain import arm_store_path, open_arm_store, retrain

__all__ = [
    "STRATEGIES",
    "Arm",
    "ArmResult",
    "CounterfactualResult",
    "arm_store_path",
    "baseline_arm",
    "build_arms",
    "correct_per_seed",
    "group_arm",
    "mean_interval",
    "named_arm",
    "open_arm_store",
    "paired_seeds",
    "random_arms",
    "ranked_arms",
    "ranking_scores",
    "retrain",
    "retrain_seed",
    "run_counterfactual",
    "target_selection",
]
