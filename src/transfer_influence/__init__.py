"""transfer-influence: which source (pretraining) data helps or hurts a downstream task.

The public API, stage by stage (see docs/architecture.md):

- config: :func:`load_config`, :class:`ExperimentConfig`
- data: :class:`LabeledImages`, :func:`as_labeled_images`, :func:`load_dataset`,
  :class:`TransferData` and the suites
- models: :func:`build_model`, :func:`register_model`, :class:`TransferModel`
- training: :class:`TrainRecipe`, :func:`pretrain_group`, :func:`transfer_fixed_feature`,
  :func:`finetune_group`, :class:`SimCLRObjective` (``pretrain.objective = "simclr"``),
  :func:`register_objective`
- sweeps: :func:`subset_masks`, :class:`SweepStore`, :func:`run_local`, :func:`run_ray`,
  :func:`run_shard`
- estimators: :func:`difference_in_means`, :func:`estimate_influence`, :class:`InfluenceResult`,
  :func:`fit_ridge`, :func:`fit_lasso`, :func:`diagnose_store`, :func:`register_estimator`
  (:class:`Estimate`), :func:`register_output_variant`
- analyses: :func:`run_counterfactual`, :func:`project_labels`, :func:`debug_failures`,
  :func:`find_leakage`
- pruning: :func:`train_surrogate`, :func:`score_source`, :func:`run_pruning`,
  :class:`PruningResult`
- report: :func:`build_report`, :func:`write_experiment_report`
- influence functions (method 3): :class:`MultiStageProblem`, :class:`FixedFeature`,
  :class:`Proximal`, :class:`SolverOptions`, :func:`validate_influence`,
  :func:`run_influence_function`, :func:`saved_influences`
"""

from .analysis import debug_failures, find_leakage, project_labels
from .config import ExperimentConfig, load_config, parse_config
from .counterfactual import run_counterfactual
from .data import (
    LabeledImages,
    TransferData,
    as_labeled_images,
    fashion_digits_suite,
    load_dataset,
    many_class_suite,
    planted_transfer_problem,
    split_fashion_suite,
)
from .errors import (
    ConfigError,
    DataError,
    ModelError,
    StoreError,
    TrainingError,
    TransferInfluenceError,
)
from .estimators import (
    Estimate,
    InfluenceResult,
    diagnose_store,
    difference_in_means,
    divergence_association_store,
    estimate_influence,
    fit_lasso,
    fit_ridge,
    register_estimator,
)
from .influence_functions import (
    CGNotConvergedError,
    FixedFeature,
    InfluenceError,
    MultiStageProblem,
    Proximal,
    SolverOptions,
)
from .influence_functions.experiment import (
    InfluenceArgs,
    run_influence_function,
    saved_influences,
)
from .influence_functions.validate import validate as validate_influence
from .models import TransferModel, build_model, register_model
from .outputs import OUTPUT_VARIANTS, TargetOutputs, output_variant, register_output_variant
from .pruning import PruningResult, run_pruning, score_source, train_surrogate
from .report import build_report, write_experiment_report
from .sweep import SweepPlan, SweepStore, run_local, run_ray, run_shard, subset_masks
from .training import (
    DivergenceLog,
    SimCLRObjective,
    TrainRecipe,
    finetune_group,
    pretrain_group,
    register_objective,
    transfer_fixed_feature,
)

__version__ = "0.1.0"

__all__ = [
    "OUTPUT_VARIANTS",
    "CGNotConvergedError",
    "ConfigError",
    "DataError",
    "DivergenceLog",
    "Estimate",
    "ExperimentConfig",
    "FixedFeature",
    "InfluenceArgs",
    "InfluenceError",
    "InfluenceResult",
    "LabeledImages",
    "ModelError",
    "MultiStageProblem",
    "Proximal",
    "PruningResult",
    "SimCLRObjective",
    "SolverOptions",
    "StoreError",
    "SweepPlan",
    "SweepStore",
    "TargetOutputs",
    "TrainRecipe",
    "TrainingError",
    "TransferData",
    "TransferInfluenceError",
    "TransferModel",
    "as_labeled_images",
    "build_model",
    "build_report",
    "debug_failures",
    "diagnose_store",
    "difference_in_means",
    "divergence_association_store",
    "estimate_influence",
    "fashion_digits_suite",
    "find_leakage",
    "finetune_group",
    "fit_lasso",
    "fit_ridge",
    "load_config",
    "load_dataset",
    "many_class_suite",
    "output_variant",
    "parse_config",
    "planted_transfer_problem",
    "pretrain_group",
    "project_labels",
    "register_estimator",
    "register_model",
    "register_objective",
    "register_output_variant",
    "run_counterfactual",
    "run_influence_function",
    "run_local",
    "run_pruning",
    "run_ray",
    "run_shard",
    "saved_influences",
    "score_source",
    "split_fashion_suite",
    "subset_masks",
    "train_surrogate",
    "transfer_fixed_feature",
    "validate_influence",
    "write_experiment_report",
]
