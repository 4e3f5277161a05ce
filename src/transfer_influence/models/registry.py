"""Models by name: the built-in ones, those added with :func:`register_model`, and any builder
given by import path, ``"package.module:builder"``.

A *builder* is a function ``builder(in_channels, image_size, num_classes, **options)`` that
returns a :class:`~transfer_influence.models.TransferModel`. Its keyword-only parameters are its
options (``[model.options]`` in the TOML, any JSON type). An option the builder does not declare
is rejected, unless the builder takes ``**options``; an option whose parameter is annotated is
checked against the annotation with pydantic in strict mode (no ``"3"`` for ``3``), so a builder
states its own constraints: the built-ins declare ``width: PositiveInt``, a user's builder may
declare ``dropout: float`` or ``activation: Literal["relu", "gelu"]``.

A registered name lives in the process that registered it; Ray workers and array-job shards
start fresh, so experiments that run there name their model by import path (the module must be
importable: installed, or its folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import ModelError
from ..registry import Registry
from .base import TransferModel

ModelBuilder = Callable[..., TransferModel]
"""``builder(in_channels, image_size, num_classes, **options) -> TransferModel``."""

_MODELS: Registry[ModelBuilder] = Registry("model", ModelError, "register_model",
                                        import_paths="builder")


def register_model(name: str, builder: ModelBuilder, *, replace: bool = False) -> None:
    """Make ``builder`` available as model ``name`` (in this process; see module docstring).

    Registering another builder under a taken name needs ``replace=True``, so a typo cannot
    silently shadow a built-in model.
    """
    _MODELS.register(name, builder, replace=replace)


def registered_models() -> list[str]:
    """Names of the registered models (the built-ins and any added in this process), sorted."""
    return sorted(_MODELS.names())


def model_builder(name: str) -> ModelBuilder:
    """The builder of model ``name``: a registered name or an import path."""
    return _MODELS.get(name)


def _signature(builder: ModelBuilder) -> inspect.Signature:
    """The builder's signature with string annotations evaluated where possible (an annotation
    that cannot be evaluated stays a string and is not checked)."""
    try:
        return inspect.signature(builder, eval_str=True)
    except (NameError, AttributeError, SyntaxError, TypeError):
        return inspect.signature(builder)


def model_options(name: str) -> dict[str, Any]:
    """The options (keyword-only parameters) of model ``name`` with their defaults
    (``inspect.Parameter.empty`` for a required option)."""
    params = _signature(model_builder(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _checked_options(name: str, builder: ModelBuilder, options: dict[str, Any]
                     ) -> dict[str, Any]:
    """``options`` validated against the builder's keyword-only parameters (see module doc)."""
    params = _signature(builder).parameters.values()
    declared = {p.name: p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    unknown = sorted(set(options) - set(declared))
    if unknown and not takes_any:
        listed = ", ".join(f"{k} (default {p.default!r})" for k, p in declared.items()) or "none"
        raise ModelError(f"model {name!r} has no option(s) {', '.join(unknown)}; valid: {listed}.")
    checked = dict(options)
    for key, value in options.items():
        annotation = declared[key].annotation if key in declared else inspect.Parameter.empty
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            continue
        try:
            checked[key] = TypeAdapter(annotation).validate_python(value, strict=True)
        except ValidationError as error:
            reason = "; ".join(item["msg"] for item in error.errors())
            raise ModelError(f"model {name!r}: option {key} = {value!r} is invalid: {reason}."
                             ) from None
    return checked


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int,
                **options: Any) -> TransferModel:
    """Build model ``name`` (a registered name or ``package.module:builder``) for
    ``[in_channels, image_size, image_size]`` images and ``num_classes`` outputs; ``options`` are
    the builder's keyword-only parameters (see :func:`model_options`). Parameters come from
    PyTorch's global RNG; the trainer re-initialises them from each model's own seed
    (:func:`~transfer_influence.models.reset_parameters`)."""
    builder = model_builder(name)
    for key, value in (("in_channels", in_channels), ("image_size", image_size),
                       ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"model {name!r}: {key} must be a positive integer, got {value!r}.")
    checked = _checked_options(name, builder, options)
    model = builder(in_channels, image_size, num_classes, **checked)
    if not isinstance(model, TransferModel):
        raise ModelError(
            f"model {name!r}: the builder returned {type(model).__name__!r}, not a TransferModel;"
            " return TransferModel(backbone, nn.Linear(feature_dim, num_classes), feature_dim)."
        )
    return model
