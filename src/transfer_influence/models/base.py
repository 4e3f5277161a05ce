"""The one model shape every stage relies on: a feature ``backbone`` followed by a linear ``head``.

Keeping the two as attributes (so parameter names start with ``backbone.`` / ``head.``) lets later
stages take gradients and Hessian-vector products with respect to either group through
``torch.func.functional_call``, and lets transfer swap the head while keeping the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import ModelError


class TransferModel(nn.Module):
    """``forward(x) = head(backbone(x))`` with ``backbone: [B, ...] -> [B, D]`` and a linear head.

    Attributes:
        backbone: feature extractor mapping images ``[B, C, H, W]`` to features ``[B, D]``.
        head: ``nn.Linear(D, classes)``.
        feature_dim: ``D``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear, feature_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, D]``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, classes]``."""
        return self.head(self.backbone(x))

    @property
    def num_classes(self) -> int:
        """Number of outputs of the head."""
        return self.head.out_features

    def replace_head(self, num_classes: int, generator: torch.Generator | None = None) -> None:
        """Swap in a freshly initialised head with ``num_classes`` outputs (for transfer)."""
        head = nn.Linear(self.feature_dim, num_classes)
        reset_parameters(head, generator)
        self.head = head.to(next(self.backbone.parameters()).device)


def reset_parameters(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Re-initialise every parameter of ``module`` from ``generator``.

    ``nn.Module`` constructors draw from the global RNG; the trainer instead derives every model's
    initialisation from its own seeded generator, so initialisation never depends on global state
    or on which other models were built before. Linear and conv layers get PyTorch's default
    (Kaiming-uniform weights, uniform bias in ``±1/sqrt(fan_in)``) and GroupNorm ones/zeros, drawn
    from ``generator`` directly. Any other layer that owns parameters runs its own
    ``reset_parameters()`` with the global CPU RNG seeded from ``generator`` inside
    :func:`forked_rng`, so it is just as reproducible and the caller's global RNG is left as it
    was. A layer that owns parameters but has no ``reset_parameters()`` is an error: keeping its
    global-RNG initialisation would make the model depend on what ran before it.
    """
    for name, sub in module.named_modules():
        params = list(sub.parameters(recurse=False))
        if not params:
            continue
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in = sub.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=generator)
        elif isinstance(sub, nn.GroupNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)
        elif not callable(getattr(sub, "reset_parameters", None)):
            raise ModelError(
                f"layer {name or '(the model)'!r} ({type(sub).__name__}) owns parameters but has no"
                " reset_parameters() method, so it cannot be initialised from the model's seed;"
                " give it a reset_parameters() that initialises the parameters it owns directly"
                " (e.g. with nn.init), or wrap them in layers that have one."
            )
        elif generator is None:
            sub.reset_parameters()
        else:
            if any(p.device.type != "cpu" for p in params):
                raise ModelError(f"layer {name!r} is on {params[0].device}; re-initialise models"
                                 " on the CPU, then move them to the device.")
            seed = int(torch.randint(2**62, (1,), generator=generator))
            with forked_rng(seed):
                sub.reset_parameters()


@contextmanager
def forked_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with PyTorch's global RNG of the CPU (and of ``device`` when it is a CUDA
    device) seeded with ``seed``, and restore the previous states afterwards.

    For code that draws from the global RNG and takes no generator (a layer's own
    ``reset_parameters()``, dropout): its draws become a function of ``seed`` alone, and the
    caller's global random state is unchanged. Other accelerators' RNGs are not seeded.
    """
    device = torch.device(device)
    cuda = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        if cuda:
            index = torch.cuda.current_device() if device.index is None else device.index
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
