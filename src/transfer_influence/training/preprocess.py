"""Turning uint8 image batches into model inputs: scaling, normalisation, seeded augmentation.

Everything random draws from an explicit ``torch.Generator`` (one per model), so a model's
augmentations depend only on its own seed, never on the global RNG or on other models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError
from .recipe import Normalization


def to_inputs(images: torch.Tensor, normalization: Normalization | None) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 in ``[0, 1]``, then ``(x - mean) / std`` per channel."""
    x = images.to(torch.float32).div_(255.0)
    if normalization is None:
        return x
    channels = x.shape[1]
    if len(normalization.mean) != channels:
        raise DataError(
            f"normalization has {len(normalization.mean)} channels but images have {channels};"
            " give one mean/std value per image channel."
        )
    mean = torch.tensor(normalization.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def augment(x: torch.Tensor, *, crop_padding: int, hflip: bool, generator: torch.Generator
            ) -> torch.Tensor:
    """Random crop after zero-padding by ``crop_padding`` pixels (zeros in normalised space,
    i.e. mean-coloured borders) and random horizontal flips with probability 1/2, drawn per
    example from ``generator`` (a CPU generator; offsets are moved to ``x``'s device)."""
    b, _, h, w = x.shape
    if crop_padding > 0:
        p = crop_padding
        padded = F.pad(x, (p, p, p, p))
        offsets = torch.randint(0, 2 * p + 1, (b, 2), generator=generator).to(x.device)
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(b, 1, h, 1)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(b, 1, 1, w)
        batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[batch, channel, rows, cols]
    if hflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(x.device).view(b, 1, 1, 1)
        x = torch.where(flip, x.flip(3), x)
    return x
