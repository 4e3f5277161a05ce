"""How to train: optimiser, schedule, augmentation and normalisation as one frozen pydantic model.

The experiment config embeds :class:`TrainRecipe` (once for pretraining, once for fine-tuning), so
its fields are validated up front and its hash identifies a training run.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Schedule = Literal["cosine", "triangular", "constant"]
ObjectiveName = str
"""A registered objective (built-in: ``cross_entropy``, ``simclr``) or ``package.module:factory``
(see ``training.objectives``); resolved when training starts, like model names."""


class Normalization(BaseModel):
    """Per-channel ``(x - mean) / std`` applied after scaling uint8 pixels to ``[0, 1]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: tuple[float, ...] = Field(min_length=1)
    std: tuple[float, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Normalization:
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"normalization mean has {len(self.mean)} channels but std has {len(self.std)};"
                " give one value per image channel in both."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError("normalization std values must all be > 0.")
        return self


class TrainRecipe(BaseModel):
    """SGD with momentum and weight decay, linear warm-up then a cosine / triangular / constant
    learning-rate schedule, optional label smoothing and crop/flip augmentation.

    ``warmup_epochs`` may be fractional. The learning rate ramps linearly from ``lr / warmup_steps``
    to ``lr`` over the warm-up steps, then decays over the remaining ``k`` steps as
    ``lr * (1 - i / k)`` (``triangular``) or ``lr * (1 + cos(pi * i / k)) / 2`` (``cosine``) for
    ``i = 0 .. k-1``, so no step is wasted at learning rate 0; ``constant`` stays at ``lr``.
    Epochs count passes over each model's *own* subset, so step counts follow subset sizes.

    ``objective`` is the loss: ``cross_entropy`` on the labels (the default), ``simclr``,
    self-supervised contrastive learning that ignores the labels (NT-Xent at ``temperature``
    between two augmented views of every example), or one of your own, registered with
    ``register_objective`` or given as ``package.module:factory`` (see ``training.objectives``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: float = Field(gt=0, description="passes over each model's own subset")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    schedule: Schedule = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    crop_padding: int = Field(0, ge=0, description="random crop after zero padding; 0 = off")
    hflip: bool = False
    normalization: Normalization | None = None
    objective: ObjectiveName = Field("cross_entropy", min_length=1)
    temperature: float = Field(0.5, gt=0, description="contrastive temperature (not for"
                               " cross_entropy)")

    @model_validator(mode="after")
    def _check(self) -> TrainRecipe:
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) exceeds epochs ({self.epochs});"
                " shorten the warm-up or train longer."
            )
        default_temperature = type(self).model_fields["temperature"].default
        if self.objective == "cross_entropy" and self.temperature != default_temperature:
            raise ValueError("temperature only applies to contrastive objectives such as 'simclr';"
                             " remove it or set the objective.")
        if self.objective == "simclr" and self.label_smoothing:
            raise ValueError("label_smoothing only applies to objective = 'cross_entropy' (simclr"
                             " uses no labels); remove it.")
        return self

    def total_steps(self, num_examples: int) -> int:
        """Optimizer steps for a model whose subset has ``num_examples`` examples:
        ``ceil(epochs * num_examples / batch_size)`` (every batch is full-size, see trainer)."""
        return max(1, math.ceil(self.epochs * num_examples / self.batch_size))

    def warmup_steps(self, num_examples: int) -> int:
        """Warm-up steps for a subset of ``num_examples`` examples."""
        return min(self.total_steps(num_examples),
                   round(self.warmup_epochs * num_examples / self.batch_size))

    def learning_rate(self, step: int, num_examples: int) -> float:
        """Learning rate at optimizer step ``step`` (0-based) for a subset of ``num_examples``."""
        total, warmup = self.total_steps(num_examples), self.warmup_steps(num_examples)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "constant":
            return self.lr
        decay_steps = total - warmup
        progress = (step - warmup) / decay_steps
        if self.schedule == "triangular":
            return self.lr * (1.0 - progress)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
