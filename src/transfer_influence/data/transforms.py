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


def _uniform(low: float, high: float, size: int, generator: torch.Generator, device
             ) -> torch.Tensor:
    draws = torch.rand((size,), generator=generator, device=generator.device)
    return (low + (high - low) * draws).to(device)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], generator: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Crop a random box of each image and resize it back to the image size (bilinear).

    Per example: the box covers a fraction of the image area drawn uniformly from ``scale`` and
    has an aspect ratio (width / height) drawn log-uniformly from ``ratio``, each side clipped to
    the image; its position is uniform over the places it fits. The boxes are applied as affine
    sampling grids (``F.affine_grid`` + ``F.grid_sample``), one call for the whole batch.
    """
    low, high = scale
    if not 0 < low <= high <= 1:
        raise DataError(f"random_resized_crop(): scale must satisfy 0 < low <= high <= 1, got"
                        f" {scale}.")
    batch = x.shape[0]
    area = _uniform(low, high, batch, generator, x.device)
    aspect = torch.exp(_uniform(np.log(ratio[0]), np.log(ratio[1]), batch, generator, x.device))
    # box sides as fractions of the image's width / height
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    # box centres in [-1, 1] grid coordinates, anywhere the box stays inside the image
    centre_x = (2 * _uniform(0.0, 1.0, batch, generator, x.device) - 1) * (1 - width)
    centre_y = (2 * _uniform(0.0, 1.0, batch, generator, x.device) - 1) * (1 - height)
    theta = torch.zeros(batch, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = width, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_jitter(x: torch.Tensor, brightness: float, contrast: float, noise: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Brightness and contrast jitter, then Gaussian pixel noise, all relative to each image's own
    pixel standard deviation ``s`` (so the strength does not depend on the normalisation):
    ``x' = m + c (x - m) + b s + noise * s * N(0, 1)`` per pixel, with ``m`` the image's mean,
    ``c ~ U(1 - contrast, 1 + contrast)`` and ``b ~ U(-brightness, brightness)`` per example."""
    if min(brightness, contrast, noise) < 0 or contrast >= 1:
        raise DataError(f"random_jitter(): brightness, contrast and noise must be >= 0 and"
                        f" contrast < 1, got {brightness}, {contrast}, {noise}.")
    batch = x.shape[0]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    spread = x.std(dim=(1, 2, 3), keepdim=True)
    c = _uniform(1 - contrast, 1 + contrast, batch, generator, x.device).view(-1, 1, 1, 1)
    b = _uniform(-brightness, brightness, batch, generator, x.device).view(-1, 1, 1, 1)
    pixels = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    return mean + c * (x - mean) + spread * (b + noise * pixels)


@dataclass(frozen=True)
class ContrastiveViews:
    """The view augmentation of contrastive (SimCLR-style) pretraining: a random resized crop
    covering ``crop_scale`` of the area, then brightness / contrast jitter and Gaussian noise
    (:func:`random_jitter`). No flip and no colour: the images it was written for are grey
    digits and characters; the recipe's own ``hflip`` still applies before it when set.

    Applied twice to a batch with one generator, it gives the two views of every example. The
    defaults were chosen on the planted problem (8x8 grey, MLP width 16, temperature 0.5): a
    3-shot linear probe of the source classes reached 0.88-0.96 with them, 0.71-0.89 with
    ``crop_scale=(0.5, 1)`` and ``noise=0.1`` (temperature 0.2), against 0.42-0.61 for random
    features. Small images lose too much to aggressive crops.
    """

    crop_scale: tuple[float, float] = (0.9, 1.0)
    brightness: float = 0.4
    contrast: float = 0.4
    noise: float = 0.3

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random view of every image of a ``[B, C, H, W]`` batch."""
        x = random_resized_crop(x, self.crop_scale, generator)
        return random_jitter(x, self.brightness, self.contrast, self.noise, generator)

    def pair(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Two independent views of every image: ``[B, C, H, W]`` -> ``[B, 2, C, H, W]``."""
        return torch.stack([self(x, generator), self(x, generator)], dim=1)


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
