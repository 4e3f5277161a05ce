"""Training objectives as functions, so the trainer is not tied to supervised cross-entropy.

An objective receives the model as two callables, ``features(x) -> [B, D]`` and
``head(features) -> [B, classes]``, plus a batch ``x`` and labels ``y``, and returns a scalar loss.
Under the ``loop`` strategy the callables are ``model.backbone`` and ``model.head``; under
``vmap`` they are ``torch.func.functional_call`` closures over one model's slice of the stacked
parameters. An objective must therefore be a pure function of its arguments (no in-place updates
of module state, no random draws: ``vmap`` rejects them); a self-supervised objective simply
ignores ``head`` and ``y`` (its two views can be built deterministically from ``x``, or the
augmentation done per model before the objective).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

Features = Callable[[torch.Tensor], torch.Tensor]
Head = Callable[[torch.Tensor], torch.Tensor]


class Objective(Protocol):
    """``objective(features, head, x, y) -> scalar loss`` (see module docstring)."""

    def __call__(self, features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                 ) -> torch.Tensor: ...


def cross_entropy_objective(label_smoothing: float = 0.0) -> Objective:
    """Mean cross-entropy of ``head(features(x))`` against ``y`` with optional label smoothing."""

    def objective(features: Features, head: Head, x: torch.Tensor, y: torch.Tensor
                  ) -> torch.Tensor:
        return F.cross_entropy(head(features(x)), y, label_smoothing=label_smoothing)

    return objective
