"""Training: the ensemble trainer (many models per call), pretraining and transfer."""

from ..recipe import Normalization, ObjectiveName, Schedule, TrainRecipe
from .linear_heads import fit_linear_heads
from .objectives import (
    Objective,
    ObjectiveFactory,
    SimCLRObjective,
    cross_entropy_objective,
    nt_xent,
    objective_factory,
    objective_views,
    recipe_objective,
    register_objective,
    registered_objectives,
)
from .trainer import (
    DivergenceLog,
    Observer,
    Strategy,
    Unit,
    choose_strategy,
    fit_models,
    model_generator,
    pretrain_group,
    random_layers,
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
    "ObjectiveFactory",
    "ObjectiveName",
    "Observer",
    "Schedule",
    "SimCLRObjective",
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
    "nt_xent",
    "objective_factory",
    "objective_views",
    "predict_logits",
    "pretrain_group",
    "random_layers",
    "recipe_objective",
    "register_objective",
    "registered_objectives",
    "subset_indices",
    "train_group",
    "transfer_fixed_feature",
]
