"""A model defined outside transfer-influence, for ``examples/my_model.toml``.

``dropout_cnn`` is a small CNN with dropout before its features, a choice of activation and a
learned per-channel scale. It shows the three things a model of your own needs:

1. a builder ``builder(in_channels, image_size, num_classes, **options)`` returning a
   :class:`~transfer_influence.models.TransferModel` (feature ``backbone`` + linear ``head``);
   its keyword-only parameters are the TOML's ``[model.options]``, any JSON type, checked
   against their annotations;
2. every layer that owns parameters has ``reset_parameters()`` (all ``torch.nn`` layers do;
   ``ChannelScale`` below defines one), so each model of a sweep is initialised from its own
   seed;
3. nothing else: dropout draws are seeded per model by the trainer, which trains models with
   random layers one at a time (strategy ``loop``).

Name it in a TOML by import path, with this folder on ``PYTHONPATH``::

    PYTHONPATH=examples transfer-influence run examples/my_model.toml

or register it in Python: ``transfer_influence.register_model("dropout_cnn", dropout_cnn)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from transfer_influence.models import TransferModel


class ChannelScale(nn.Module):
    """Multiplies every channel by a learned scale, initialised near 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Scales drawn from N(1, 0.1^2); the trainer seeds this draw from the model's seed."""
        nn.init.normal_(self.scale, mean=1.0, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1)


def dropout_cnn(in_channels: int, image_size: int, num_classes: int, *, width: int = 16,
                dropout: float = 0.25, activation: Literal["relu", "gelu"] = "relu"
                ) -> TransferModel:
    """Two conv3x3 blocks (``width``, ``2 * width`` channels) with max-pooling between them,
    global average pooling, then dropout; features have ``2 * width`` dimensions."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]
    backbone = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), ChannelScale(width), act(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), act(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
    )
    return TransferModel(backbone, nn.Linear(2 * width, num_classes), 2 * width)
