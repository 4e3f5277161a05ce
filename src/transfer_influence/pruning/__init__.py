"""Dataset pruning for transfer (DP4TL, Zhang et al. 2023): per-unit scores, then keep the top."""

from .baselines import (
    ForgettingCounter,
    ScoreTraining,
    class_mean_scores,
    class_median_distances,
    el2n_scores,
    forgetting_scores,
    gradient_norms,
    grand_scores,
    moderate_scores,
    train_score_models,
)

__all__ = [
    "ForgettingCounter",
    "ScoreTraining",
    "class_mean_scores",
    "class_median_distances",
    "el2n_scores",
    "forgetting_scores",
    "gradient_norms",
    "grand_scores",
    "moderate_scores",
    "train_score_models",
]
