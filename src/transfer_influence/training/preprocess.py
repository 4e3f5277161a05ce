"""Turning uint8 image batches into model inputs, the same way in training and in transfer."""

from __future__ import annotations

import torch

from ..data.transforms import normalize, to_float
from ..recipe import Normalization


def to_inputs(images: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 in ``[0, 1]``, then ``(x - mean) / std`` per channel."""
    x = to_float(images)
    return x if normalization is None else normalize(x, normalization.mean, normalization.std)
