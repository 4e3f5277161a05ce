"""Uses of the influence estimates: label projection, failure debugging, leakage, and the
agreement between the methods."""

from .agreement import Agreement, AgreementTable, experiment_agreement, rank_agreement
from .failures import FailureDebug, debug_failures, load_failures, pick_failures, save_failures
from .leakage import (
    LeakageCandidate,
    TargetLeakage,
    find_leakage,
    pixel_similarity,
    recall_at_k,
)
from .projection import LabelProjection, consensus_predictions, default_examples, project_labels

__all__ = [
    "Agreement",
    "AgreementTable",
    "FailureDebug",
    "LabelProjection",
    "LeakageCandidate",
    "TargetLeakage",
    "consensus_predictions",
    "debug_failures",
    "default_examples",
    "experiment_agreement",
    "find_leakage",
    "load_failures",
    "pick_failures",
    "pixel_similarity",
    "project_labels",
    "rank_agreement",
    "recall_at_k",
    "save_failures",
]
