"""Models: every model is a :class:`TransferModel` = feature ``backbone`` + linear ``head``."""

from .base import TransferModel, reset_parameters
from .zoo import MODEL_BUILDERS, build_model, model_options

__all__ = [
    "MODEL_BUILDERS",
    "TransferModel",
    "build_model",
    "model_options",
    "reset_parameters",
]
