"""Where models train and transfer: a config's ``device`` resolved to a ``torch.device``.

``device = "auto" | "cpu" | "cuda" | "cuda:N" | "mps"``. ``auto`` takes a CUDA GPU when PyTorch
sees one, else Apple's ``mps`` when available, else the CPU; the group trainer then picks its
strategy for that device (``training.trainer.choose_strategy``). Results are a function of the
seeds, not of the device: the models' seeds, subsets, batch orders and augmentations are drawn
on the CPU, so only floating-point rounding differs between devices, and a store may be filled by
workers on different devices (the device does not enter the config hash).
"""

from __future__ import annotations

import re

import torch

from .config import DEVICE_PATTERN
from .errors import ConfigError


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return backend is not None and backend.is_available()


def resolve_device(name: str) -> torch.device:
    """The torch device ``name`` stands for (see module docstring); an unknown or unavailable
    device is a :class:`~transfer_influence.errors.ConfigError` saying which devices exist."""
    if not re.match(DEVICE_PATTERN, name):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N or mps.")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA device (or a CPU-only PyTorch)"
            raise ConfigError(f"device {name!r} is not available: PyTorch sees {found}; use"
                              " device = 'auto' or 'cpu', or a cuda:N with N below the count.")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {name!r} is not available: PyTorch's mps backend is not"
                          " available on this machine; use device = 'auto' or 'cpu'.")
    return device
