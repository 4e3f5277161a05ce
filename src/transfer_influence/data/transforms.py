"""Batch-wise image transforms in torch, for ``[B, C, H, W]`` tensors.

Random transforms draw from an explicit :class:`torch.Generator`, never from global state, so a
training run is reproducible from its seed. Everything is vectorised over the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .images import LabeledImages

_STATS_BATCH = 8192


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` images 0..255 -> ``float32`` in [0, 1] (same shape)."""
    if images.dtype != torch.uint8:
        raise DataError(
            f"to_float() expects uint8 images, got {images.dtype}; images that are already "
            "floats need no conversion."
        )
    return images.to(torch.float32).div_(255.0)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for ``[B, C, H, W]`` float images."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    if mean_t.shape[1] != x.shape[1] or std_t.shape[1] != x.shape[1]:
        raise DataError(
            f"normalize(): images have {x.shape[1]} channels but mean/std have "
            f"{mean_t.shape[1]}/{std_t.shape[1]} entries; give one value per channel."
        )
    if (std_t <= 0).any():
        raise DataError("normalize(): std must be positive in every channel.")
    return (x - mean_t) / std_t


def _uniform_ints(high: int, size: int, generator: torch.Generator, device) -> torch.Tensor:
    draws = torch.randint(0, high, (size,), generator=generator, device=generator.device)
    return draws.to(device)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels, then crop each image back to its size at a random offset.

    One offset per example, drawn from ``generator``; gathered with advanced indexing, no
    Python loop over examples. ``padding=0`` returns ``x`` unchanged.
    """
    if padding < 0:
        raise DataError(f"random_crop(): padding must be >= 0, got {padding}.")
    if padding == 0:
        return x
    batch, _, height, width = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = _uniform_ints(2 * padding + 1, batch, generator, x.device)
    dx = _uniform_ints(2 * padding + 1, batch, generator, x.device)
    rows = (dy[:, None] + torch.arange(height, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, :]  # [B, 1, W]
    examples = torch.arange(batch, device=x.device)[:, None, None]
    # advanced indices around a slice put their broadcast dims first: [B, H, W, C]
    return padded[examples, :, rows, cols].permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (decided per example by ``generator``)."""
    flip = _uniform_ints(2, x.shape[0], generator, x.device).bool()
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with zero padding, then random horizontal flip.

    ``Augment()`` is the identity. Digits and characters should not be flipped (``hflip=False``);
    natural images (CIFAR) usually use ``Augment(crop_padding=4, hflip=True)``.
    """

    crop_padding: int = 0
    hflip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a ``[B, C, H, W]`` batch with randomness from ``generator``."""
        x = random_crop(x, self.crop_padding, generator)
        return random_hflip(x, generator) if self.hflip else x


def channel_stats(ds: LabeledImages) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std)`` of the pixels in [0, 1] scale, ``float64 [C]`` each.

    Use them with :func:`normalize`; computed from the source data, never the target test set.
    """
    channels = ds.image_shape[0]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(ds), _STATS_BATCH):
        batch = ds.images[start : start + _STATS_BATCH].astype(np.float64) / 255.0
        total += batch.sum(axis=(0, 2, 3))
        total_sq += np.square(batch).sum(axis=(0, 2, 3))
    count = len(ds) * ds.image_shape[1] * ds.image_shape[2]
    mean = total / count
    return mean, np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
