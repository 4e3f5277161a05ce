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


def supports_float64(device: str | torch.device) -> bool:
    """Whether float64 tensors can live on ``device``: everywhere except Apple's ``mps``, whose
    backend has no float64. Callers that compute in float64 decide per device what to do there
    (see :func:`precise_dtype` and :func:`float64_device`)."""
    return torch.device(device).type != "mps"


def precise_dtype(device: str | torch.device) -> torch.dtype:
    """The dtype of precision-sensitive work on ``device``: float64, or float32 on ``mps``.

    Used where float32 is accurate enough once documented: ridge datamodels on a torch device
    (``estimators.datamodels.fit_ridge``: float32 weights agree with the float64 fit within 1e-3
    of their largest magnitude and the held-out LDS within 1e-3, checked on the CPU by
    ``tests/estimators/test_datamodels_device.py``; about 1e-6 measured at 400 models x 30
    units with one BLAS thread, 2.7e-4 with two), LASSO datamodels on a torch device
    (``fit_lasso``: float32 iterates stop at other points within the solver's duality-gap
    tolerance, so the weights agree with the float64 fit within that tolerance -- 5.4e-4 of
    their largest magnitude at 400 models x 30 units, up to 1.4e-2 with more units than models --
    the same alpha for 97-100% of the targets and the held-out LDS within 1e-5, measured on the
    CPU over three seeds; checked to 1e-3 by ``tests/estimators/test_datamodels_device.py``)
    and sums of squared per-example gradients (pruning's gradient norms)."""
    return torch.float64 if supports_float64(device) else torch.float32


def float64_device(device: str | torch.device) -> torch.device:
    """Where float64 work for models on ``device`` runs: ``device`` itself, or the CPU for
    ``mps``. Used where float32 would change results beyond a documented tolerance: the
    fixed-feature linear heads (``training.linear_heads``) are solved to a max-abs gradient of
    1e-6, which float32 cannot reach, so on ``mps`` their features move to the CPU."""
    device = torch.device(device)
    return device if supports_float64(device) else torch.device("cpu")


def datamodel_device(name: str) -> torch.device | None:
    """The torch device on which a config's ``device`` fits ridge and LASSO datamodels, or
    None for the CPU, where they are fitted with NumPy/SciPy (faster there; torch's CPU linear
    algebra agrees to rounding and is reachable from Python with ``fit_ridge(...,
    device="cpu")`` or ``fit_lasso(..., device="cpu")``, see
    ``benchmarks/datamodel_fitting.py``)."""
    device = resolve_device(name)
    return None if device.type == "cpu" else device
