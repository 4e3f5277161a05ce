"""The built-in models, registered by name (see :mod:`.registry`): ``mlp``, ``small_cnn`` and a
CIFAR-style ``resnet18``.

No model uses batch normalisation: batch statistics are state that ``torch.func.vmap`` and
``functional_call`` handle awkwardly, and they make a model's output depend on its batch. The
ResNet uses GroupNorm instead (statistics per example), so every model here is a pure function of
its parameters and input, which ensemble training and influence functions rely on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import PositiveInt
from torch import nn

from ..errors import ModelError
from .base import TransferModel
from .registry import register_model

Activation = Literal["relu", "softplus", "tanh", "gelu"]
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "softplus": nn.Softplus,
                                            "tanh": nn.Tanh, "gelu": nn.GELU}
_POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def _mlp(in_channels: int, image_size: int, num_classes: int, *, width: PositiveInt = 512,
         depth: PositiveInt = 2,
         activation: Activation = "relu") -> TransferModel:
    """Flatten, then ``depth`` blocks of Linear(width) + activation; features are the last block.
    A smooth ``activation`` (``"tanh"``, ``"softplus"``, ``"gelu"``) lets influence functions
    train it to a tight optimum; ReLU MLPs train fastest in groups (hand-batched matmuls)."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = in_channels * image_size * image_size
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), _ACTIVATIONS[activation]()]
        fan_in = width
    return TransferModel(nn.Sequential(*layers), nn.Linear(width, num_classes), width)


def _at_least_4x4(name: str, image_size: int) -> None:
    """Reject images too small for two 2x2 poolings or stride-2 stages."""
    if image_size < 4:
        raise ModelError(f"model {name!r} needs images of at least 4x4 pixels, got {image_size}.")


def _small_cnn(in_channels: int, image_size: int, num_classes: int, *, width: PositiveInt = 32,
               activation: Activation = "relu",
               pool: Literal["max", "avg"] = "max") -> TransferModel:
    """Three conv3x3-activation blocks (width, 2w, 4w), 2x2 pooling after the first two, global
    average pooling; features have ``4 * width`` dimensions. ``activation = "softplus"`` (or
    tanh, gelu) with ``pool = "avg"`` makes the network smooth in its parameters, so training can
    reach a gradient norm of 1e-8, as influence functions need (ReLU and max-pooling have kinks
    where full-batch optimisers stall)."""
    _at_least_4x4("small_cnn", image_size)
    w, act, pooling = width, _ACTIVATIONS[activation], _POOLS[pool]
    backbone = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1), act(), pooling(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), act(), pooling(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), act(),
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


def _resnet18(in_channels: int, image_size: int, num_classes: int, *, width: PositiveInt = 64
              ) -> TransferModel:
    """CIFAR-style ResNet-18: a 3x3 stem (no max-pool), four stages of two basic blocks with
    widths (w, 2w, 4w, 8w), global average pooling; GroupNorm replaces BatchNorm (see module doc).
    Features have ``8 * width`` dimensions."""
    _at_least_4x4("resnet18", image_size)
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


register_model("mlp", _mlp)
register_model("small_cnn", _small_cnn)
register_model("resnet18", _resnet18)
