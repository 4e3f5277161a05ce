"""Dataset pruning for transfer (DP4TL, Zhang et al. 2023): score the source from one cheap
surrogate, prune a ratio of it, and check by retraining what the pruned source is worth."""

from .experiment import Accuracy, PruningResult, RatioRow, run_pruning
from .masks import check_ratios, pruned_units, pruning_order
from .scores import (
    PRUNING_METHODS,
    FeatureClusters,
    MethodScores,
    feature_mapping_scores,
    label_mapping_scores,
    multi_target_scores,
    nearest_centroid,
    score_source,
)
from .surrogate import Surrogate, train_surrogate

__all__ = [
    "PRUNING_METHODS",
    "Accuracy",
    "FeatureClusters",
    "MethodScores",
    "PruningResult",
    "RatioRow",
    "Surrogate",
    "check_ratios",
    "feature_mapping_scores",
    "label_mapping_scores",
    "multi_target_scores",
    "nearest_centroid",
    "pruned_units",
    "pruning_order",
    "run_pruning",
    "score_source",
    "train_surrogate",
]
