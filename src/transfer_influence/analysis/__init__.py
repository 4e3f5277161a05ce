"""Uses of the influence estimates: label projection, failure debugging, leakage."""

from .failures import FailureDebug, debug_failures, load_failures, pick_failures, save_failures
from .projection import LabelProjection, consensus_predictions, default_examples, project_labels

__all__ = [
    "FailureDebug",
    "LabelProjection",
    "consensus_predictions",
    "debug_failures",
    "default_examples",
    "load_failures",
    "pick_failures",
    "project_labels",
    "save_failures",
]
