"""Per-(model, target example) outputs and the output variants computed from them.

The store keeps four numbers per model and target example (see docs/architecture.md, "The store
format"): the correct-class logit, the largest other logit, the log-sum-exp of all logits and the
predicted class. Every output variant of Jain et al. (2022) follows exactly from these four
numbers, so the full logits never need to be kept.

Variants by name: the four built-ins and any added with :func:`register_output_variant`, a
function ``variant(outputs: TargetOutputs) -> float64 [models, targets]`` of those four numbers.
A registered name lives in the process that registered it; the command line knows the built-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError
from .registry import Registry

OutputVariant = str
"""The name of an output variant: a built-in (:data:`OUTPUT_VARIANTS`) or a registered one."""
OUTPUT_VARIANTS: tuple[OutputVariant, ...] = (
    "prob_correct",
    "is_correct",
    "margin",
    "softmax_margin",
)
"""The built-in variants (:func:`output_variants` adds those registered in this process)."""


@dataclass(frozen=True)
class TargetOutputs:
    """The four stored numbers for a block of models and target examples.

    All arrays have shape ``[models, targets]``: ``correct_logit``, ``max_other_logit`` and
    ``logsumexp`` are float32, ``predicted`` is int64.
    """

    correct_logit: np.ndarray
    max_other_logit: np.ndarray
    logsumexp: np.ndarray
    predicted: np.ndarray

    def __post_init__(self) -> None:
        shape = self.correct_logit.shape
        for name in ("max_other_logit", "logsumexp", "predicted"):
            if getattr(self, name).shape != shape:
                raise DataError(
                    f"TargetOutputs.{name} has shape {getattr(self, name).shape}, expected {shape}"
                    " like correct_logit; all four arrays must be [models, targets]."
                )

    @property
    def shape(self) -> tuple[int, ...]:
        """``(models, targets)``."""
        return self.correct_logit.shape

    @classmethod
    def from_logits(cls, logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray
                    ) -> TargetOutputs:
        """Reduce full logits ``[models, targets, classes]`` with labels ``[targets]``."""
        logits_t = torch.as_tensor(logits, dtype=torch.float32)
        labels_t = torch.as_tensor(labels, dtype=torch.int64)
        if logits_t.ndim == 2:
            logits_t = logits_t.unsqueeze(0)
        if logits_t.ndim != 3 or logits_t.shape[1] != labels_t.shape[0]:
            raise DataError(
                f"logits of shape {tuple(logits_t.shape)} do not match {labels_t.shape[0]} labels;"
                " expected [models, targets, classes]."
            )
        num_classes = logits_t.shape[2]
        if num_classes < 2:
            raise DataError("outputs need at least two classes to define a 'largest other' logit.")
        if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() >= num_classes):
            raise DataError(f"labels must lie in [0, {num_classes}) to index {num_classes} logits.")
        index = labels_t.view(1, -1, 1).expand(logits_t.shape[0], -1, 1)
        correct = logits_t.gather(2, index).squeeze(2)
        others = logits_t.scatter(2, index, float("-inf"))
        return cls(
            correct_logit=correct.numpy().astype(np.float32),
            max_other_logit=others.max(dim=2).values.numpy().astype(np.float32),
            logsumexp=torch.logsumexp(logits_t, dim=2).numpy().astype(np.float32),
            predicted=logits_t.argmax(dim=2).numpy().astype(np.int64),
        )

    def take(self, models: np.ndarray | slice) -> TargetOutputs:
        """The rows ``models`` (indices, bool mask or slice) of every array."""
        return TargetOutputs(self.correct_logit[models], self.max_other_logit[models],
                             self.logsumexp[models], self.predicted[models])

    def variant(self, name: OutputVariant) -> np.ndarray:
        """The output variant ``name`` as float64 ``[models, targets]``."""
        return output_variant(
            name, self.correct_logit, self.max_other_logit, self.logsumexp, self.predicted
        )


VariantFunction = Callable[[TargetOutputs], np.ndarray]
"""``variant(outputs) -> float64 [models, targets]`` from the four stored numbers."""


def _as64(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def _prob_correct(o: TargetOutputs) -> np.ndarray:
    """Softmax probability of the correct class, ``exp(z_y - lse)``."""
    return np.exp(_as64(o.correct_logit) - _as64(o.logsumexp))


def _is_correct(o: TargetOutputs) -> np.ndarray:
    """1.0 when the correct logit beats every other logit, else 0.0."""
    return (_as64(o.correct_logit) > _as64(o.max_other_logit)).astype(np.float64)


def _margin(o: TargetOutputs) -> np.ndarray:
    """Raw logit margin ``z_y - max_{j != y} z_j``."""
    return _as64(o.correct_logit) - _as64(o.max_other_logit)


def _softmax_margin(o: TargetOutputs) -> np.ndarray:
    """``log p_y - log(1 - p_y)``, computed stably from ``z_y - lse``."""
    log_p = _as64(o.correct_logit) - _as64(o.logsumexp)
    # log(1 - p) = log1p(-exp(log_p)), clamped so p == 1 in float32 stays finite.
    return log_p - np.log1p(-np.minimum(np.exp(log_p), 1.0 - 1e-12))


_VARIANTS: Registry[VariantFunction] = Registry("output variant", DataError,
                                               "register_output_variant")
_VARIANTS.register("prob_correct", _prob_correct)
_VARIANTS.register("is_correct", _is_correct)
_VARIANTS.register("margin", _margin)
_VARIANTS.register("softmax_margin", _softmax_margin)


def register_output_variant(name: str, function: VariantFunction, *, replace: bool = False
                            ) -> None:
    """Make ``function`` available as output variant ``name`` (in this process). Registering
    another function under a taken name needs ``replace=True``."""
    _VARIANTS.register(name, function, replace=replace)


def output_variants() -> tuple[str, ...]:
    """The variants known in this process: the built-ins, then registered ones, in order."""
    return _VARIANTS.names()


def output_variant(
    name: OutputVariant,
    correct_logit: np.ndarray,
    max_other_logit: np.ndarray,
    logsumexp: np.ndarray,
    predicted: np.ndarray,
) -> np.ndarray:
    """Compute output variant ``name`` from the four stored numbers, float64 ``[models,
    targets]``. The built-ins:

    - ``prob_correct``: softmax probability of the correct class, ``exp(z_y - lse)``.
    - ``is_correct``: 1.0 when the correct logit beats every other logit, else 0.0.
    - ``margin``: raw logit margin ``z_y - max_{j != y} z_j``.
    - ``softmax_margin``: ``log p_y - log(1 - p_y)``, computed stably as
      ``z_y - log(exp(lse) - exp(z_y))``.
    """
    variant = _VARIANTS.get(name)
    return variant(TargetOutputs(np.asarray(correct_logit), np.asarray(max_other_logit),
                                 np.asarray(logsumexp), np.asarray(predicted)))
