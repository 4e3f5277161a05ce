"""Model builders by name: ``mlp``, ``small_cnn`` and a CIFAR-style ``resnet18``.

No model uses batch normalisation: batch statistics are state that ``torch.func.vmap`` and
``functional_call`` handle awkwardly, and they make a model's output depend on its batch. The
ResNet uses GroupNorm instead (statistics per example), so every model here is a pure function of
its parameters and input, which ensemble training and influence functions rely on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import ModelError
from .base import TransferModel


def _mlp(in_channels: int, image_size: int, num_classes: int, *, width: int = 512,
         depth: int = 2) -> TransferModel:
    """Flatten, then ``depth`` blocks of Linear(width) + ReLU; features are the last block."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = in_channels * image_size * image_size
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    return TransferModel(nn.Sequential(*layers), nn.Linear(width, num_classes), width)


def _small_cnn(in_channels: int, image_size: int, num_classes: int, *, width: int = 32
               ) -> TransferModel:
    """Three conv3x3-ReLU blocks (width, 2w, 4w), max-pooling after the first two, global average
    pooling; features have ``4 * width`` dimensions."""
    w = width
    backbone = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return TransferModel(backbone, nn.Linear(4 * w, num_classes), 4 * w)


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups (fewer when ``channels`` is small)."""
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class _BasicBlock(nn.Module):
    """ResNet basic block (two conv3x3 + GroupNorm) with a 1x1 projection shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _group_norm(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _group_norm(cout)
            )

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _resnet18(in_channels: int, image_size: int, num_classes: int, *, width: int = 64
              ) -> TransferModel:
    """CIFAR-style ResNet-18: a 3x3 stem (no max-pool), four stages of two basic blocks with
    widths (w, 2w, 4w, 8w), global average pooling; GroupNorm replaces BatchNorm (see module doc).
    Features have ``8 * width`` dimensions."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False), _group_norm(width), nn.ReLU()
    ]
    cin = width
    for stage, mult in enumerate((1, 2, 4, 8)):
        cout = width * mult
        layers += [_BasicBlock(cin, cout, 1 if stage == 0 else 2), _BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return TransferModel(nn.Sequential(*layers), nn.Linear(cin, num_classes), cin)


MODEL_BUILDERS: dict[str, Callable[..., TransferModel]] = {
    "mlp": _mlp,
    "small_cnn": _small_cnn,
    "resnet18": _resnet18,
}


def model_options(name: str) -> dict[str, Any]:
    """The options (keyword arguments with defaults) accepted by model ``name``."""
    params = inspect.signature(MODEL_BUILDERS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int,
                **options: Any) -> TransferModel:
    """Build model ``name`` ("mlp", "small_cnn" or "resnet18") for ``[in_channels, image_size,
    image_size]`` images and ``num_classes`` outputs; ``options`` are model-specific (see
    :func:`model_options`). Parameters come from PyTorch's global RNG; the trainer re-initialises
    them from each model's own seed."""
    if name not in MODEL_BUILDERS:
        raise ModelError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(MODEL_BUILDERS))}."
        )
    valid = model_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listed = ", ".join(f"{k} (default {v})" for k, v in valid.items())
        raise ModelError(f"model {name!r} has no option(s) {', '.join(unknown)}; valid: {listed}.")
    for key, value in (("in_channels", in_channels), ("image_size", image_size),
                       ("num_classes", num_classes), *options.items()):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"model {name!r}: {key} must be a positive integer, got {value!r}.")
    if name != "mlp" and image_size < 4:
        raise ModelError(f"model {name!r} needs images of at least 4x4 pixels, got {image_size}.")
    return MODEL_BUILDERS[name](in_channels, image_size, num_classes, **options)
