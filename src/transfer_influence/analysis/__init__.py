"""Uses of the influence estimates: label projection, failure debugging, leakage."""

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
    "FailureDebug",
    "LabelProjection",
    "LeakageCandidate",
    "TargetLeakage",
    "consensus_predictions",
    "debug_failures",
    "default_examples",
    "find_leakage",
    "load_failures",
    "pick_failures",
    "pixel_similarity",
    "project_labels",
    "recall_at_k",
    "save_failures",
]
