"""Tiny two-stage problems with known structure for the influence-function tests (float64)."""

from __future__ import annotations

import torch
from torch import nn

from transfer_influence.influence_functions import MultiStageProblem, squared_loss
from transfer_influence.models.base import TransferModel


def linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    """A float64 linear layer with seeded weights."""
    layer = nn.Linear(fan_in, fan_out).double()
    with torch.no_grad():
        layer.weight.copy_(0.5 * torch.randn(fan_out, fan_in, generator=generator,
                                             dtype=torch.float64))
        layer.bias.copy_(0.1 * torch.randn(fan_out, generator=generator, dtype=torch.float64))
    return layer


def linear_problem(finetune, seed: int = 0, m: int = 30, d: int = 4, width: int = 3
                   ) -> tuple[MultiStageProblem, torch.Tensor, torch.Tensor]:
    """Linear backbone ``d -> width``, linear heads, squared losses on linear-Gaussian
    regression data; both stages converged. Returns the problem and a test set."""
    g = torch.Generator().manual_seed(seed)

    def regression(n: int, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        return x, x @ a + 0.3 * torch.randn(n, a.shape[1], generator=g, dtype=torch.float64)

    xs, ys = regression(m, torch.randn(d, 2, generator=g, dtype=torch.float64))
    b = torch.randn(d, 2, generator=g, dtype=torch.float64)
    xt, yt = regression(20, b)
    x_test, y_test = regression(5, b)
    pretrained = TransferModel(nn.Sequential(linear(d, width, g)), linear(width, 2, g), width)
    finetuned = TransferModel(nn.Sequential(linear(d, width, g)), linear(width, 2, g), width)
    finetuned.backbone.load_state_dict(pretrained.backbone.state_dict())
    problem = MultiStageProblem(pretrained, finetuned, xs, ys, xt, yt, finetune,
                                pretrain_decay=1e-2, loss=squared_loss)
    problem.converge(tol=1e-12)
    return problem, x_test, y_test
