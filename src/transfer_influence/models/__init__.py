"""Models: every model is a :class:`TransferModel` = feature ``backbone`` + linear ``head``.

Built-in models are registered by name in :mod:`.zoo`; add your own with :func:`register_model`
or name a builder by import path (see :mod:`.registry`).
"""

from . import zoo  # noqa: F401 - registers the built-in models
from .base import TransferModel, reset_parameters
from .registry import (
    ModelBuilder,
    build_model,
    model_builder,
    model_options,
    register_model,
    registered_models,
)

__all__ = [
    "ModelBuilder",
    "TransferModel",
    "build_model",
    "model_builder",
    "model_options",
    "register_model",
    "registered_models",
    "reset_parameters",
]
