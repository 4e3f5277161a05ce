"""The one model shape every stage relies on: a feature ``backbone`` followed by a linear ``head``.

Keeping the two as attributes (so parameter names start with ``backbone.`` / ``head.``) lets later
stages take gradients and Hessian-vector products with respect to either group through
``torch.func.functional_call``, and lets transfer swap the head while keeping the backbone.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
    """Re-initialise every parameter of ``module`` from ``generator`` (PyTorch's default scheme).

    ``nn.Module`` constructors draw from the global RNG; the trainer instead derives every model's
    initialisation from its own seeded generator, so initialisation never depends on global state
    or on which other models were built before. Linear and conv layers get PyTorch's default
    (Kaiming-uniform weights, uniform bias in ``±1/sqrt(fan_in)``); norm layers get ones/zeros.
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(sub.weight, a=math.sqrt(5), generator=generator)
            if sub.bias is not None:
                fan_in = sub.weight[0].numel()
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                nn.init.uniform_(sub.bias, -bound, bound, generator=generator)
        elif isinstance(sub, nn.GroupNorm) and sub.affine:
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)

