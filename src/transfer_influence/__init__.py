"""transfer-influence: which source (pretraining) data helps or hurts a downstream task."""

from .errors import (
    ConfigError,
    DataError,
    ModelError,
    StoreError,
    TrainingError,
    TransferInfluenceError,
)
from .outputs import OUTPUT_VARIANTS, TargetOutputs, output_variant

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "OUTPUT_VARIANTS",
    "StoreError",
    "TargetOutputs",
    "TrainingError",
    "TransferInfluenceError",
    "output_variant",
]
