"""Dataset pruning for transfer (DP4TL, Zhang et al. 2023): score the source from one cheap
surrogate (or with a classic data-pruning baseline), prune a ratio of it, and check by
retraining what the pruned source is worth."""

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
from .experiment import Accuracy, PruningResult, RatioRow, run_pruning
from .masks import check_ratios, pruned_units, pruning_order
from .scores import (
    PRUNING_METHODS,
    FeatureClusters,
    MethodScores,
    feature_mapping_scores,
    label_mapping_scores,
    multi_target_scores,
    score_source,
)
from .surrogate import Surrogate, train_surrogate

__all__ = [
    "PRUNING_METHODS",
    "Accuracy",
    "FeatureClusters",
    "ForgettingCounter",
    "MethodScores",
    "PruningResult",
    "RatioRow",
    "ScoreTraining",
    "Surrogate",
    "check_ratios",
    "class_mean_scores",
    "class_median_distances",
    "el2n_scores",
    "feature_mapping_scores",
    "forgetting_scores",
    "gradient_norms",
    "grand_scores",
    "label_mapping_scores",
    "moderate_scores",
    "multi_target_scores",
    "pruned_units",
    "pruning_order",
    "run_pruning",
    "score_source",
    "train_score_models",
    "train_surrogate",
]
