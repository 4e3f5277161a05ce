"""Training: the ensemble trainer (many models per call), pretraining and transfer."""

from .linear_heads import fit_linear_heads
from .objectives import Objective, cross_entropy_objective
from .recipe import Normalization, Schedule, TrainRecipe
from .trainer import (
    DivergenceLog,
    Strategy,
    Unit,
    choose_strategy,
    fit_models,
    model_generator,
    pretrain_group,
    subset_indices,
    train_group,
)
from .transfer import (
    extract_features,
    finetune_group,
    predict_logits,
    transfer_fixed_feature,
)

__all__ = [
    "DivergenceLog",
    "Normalization",
    "Objective",
    "Schedule",
    "Strategy",
    "TrainRecipe",
    "Unit",
    "choose_strategy",
    "cross_entropy_objective",
    "extract_features",
    "finetune_group",
    "fit_linear_heads",
    "fit_models",
    "model_generator",
    "predict_logits",
    "pretrain_group",
    "subset_indices",
    "train_group",
    "transfer_fixed_feature",
]
