"""Models: every model is a :class:`TransferModel` = feature ``backbone`` + linear ``head``."""

from .base import TransferModel, has_convolutions, reset_parameters
from .zoo import MODEL_BUILDERS, build_model, model_options

__all__ = [
    "MODEL_BUILDERS",
    "TransferModel",
    "build_model",
    "has_convolutions",
    "model_options",
    "reset_parameters",
]
