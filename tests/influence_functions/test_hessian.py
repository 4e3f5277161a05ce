"""Hessian-vector products, per-example gradients and inverse-Hessian-vector products against
finite differences, loops and dense linear algebra."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from transfer_influence.errors import TransferInfluenceError
from transfer_influence.influence_functions import (
    CGNotConvergedError,
    InfluenceError,
    ParamLayout,
    check_batch_independent,
    hvp,
    ihvp_cg,
    ihvp_exact,
    per_example_grads,
)
from transfer_influence.influence_functions.hessian import EXACT_MAX_SIZE
from transfer_influence.models import build_model


def symmetric(eigenvalues: list[float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric matrix with the given eigenvalues and a random eigenbasis."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=g,
                                       dtype=torch.float64))
    values = torch.tensor(eigenvalues, dtype=torch.float64)
    return q @ torch.diag(values) @ q.T, q


def cnn_loss():
    """A small CNN's mean cross-entropy as a function of its flat float64 parameters."""
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, image_size=8, num_classes=3, width=2).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    layout = ParamLayout.of(params)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2])

    def one(theta: torch.Tensor, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, layout.unflatten(theta), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    def mean(theta: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, layout.unflatten(theta), (x,)), y)

    return layout.flatten(params), mean, one, x, y


def test_hvp_matches_finite_differences():
    theta, loss, _, _, _ = cnn_loss()
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(2), dtype=theta.dtype)
    h = 1e-5
    gradient = grad(loss)
    numeric = (gradient(theta + h * v) - gradient(theta - h * v)) / (2 * h)
    exact = hvp(loss, theta, v)
    assert torch.linalg.vector_norm(exact - numeric) <= 1e-6 * torch.linalg.vector_norm(exact)


def test_per_example_grads_match_a_loop():
    theta, _, one, x, y = cnn_loss()
    batched = per_example_grads(one, theta, x, y, chunk=4)  # two chunks
    looped = torch.stack([grad(one)(theta, xi, yi) for xi, yi in zip(x, y)])
    assert batched.shape == (len(x), theta.numel())
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-12)


def test_cg_on_h_squared_equals_the_exact_solve_on_an_indefinite_hessian():
    a, _ = symmetric([-3.0, -1.5, -0.5, 0.4, 0.8, 1.0, 2.0, 4.0])
    v = torch.linspace(-1, 1, 8, dtype=torch.float64)
    truth = torch.linalg.solve(a, v)
    cg = ihvp_cg(lambda p: a @ p, v, tol=1e-12)
    exact = ihvp_exact(lambda p: a @ p, v)
    torch.testing.assert_close(cg, truth, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(exact, truth, rtol=1e-9, atol=1e-10)


def test_damping_shrinks_each_eigendirection_as_documented():
    eigenvalues = [-2.0, 0.0, 0.05, 1.0, 3.0]  # indefinite and singular
    a, q = symmetric(eigenvalues, seed=3)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0, 1.0], dtype=torch.float64)
    h = torch.tensor(eigenvalues, dtype=torch.float64)
    for damping in (0.0, 1e-2, 1.0):
        factor = torch.where(h == 0, torch.zeros_like(h), h / (h.square() + damping))
        expected = q @ (factor * (q.T @ v))  # h / (h^2 + damping) per eigenvalue, 0 if flat
        torch.testing.assert_close(ihvp_exact(lambda p: a @ p, v, damping=damping), expected,
                                   rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(ihvp_cg(lambda p: a @ p, v, damping=damping, tol=1e-13),
                                   expected, rtol=1e-7, atol=1e-8)
    # Large directions keep 1/h under small damping; the small one (0.05) is shrunk a lot.
    small = ihvp_exact(lambda p: a @ p, v, damping=1e-2)
    coefficients = (q.T @ small) / (q.T @ v)
    assert coefficients[4] == pytest.approx(1 / 3.0, rel=2e-3)
    assert coefficients[2] == pytest.approx(0.05 / (0.05**2 + 1e-2))  # 4, not 1 / 0.05 = 20


def test_cg_that_does_not_converge_raises_with_its_residual():
    a, _ = symmetric([1e-4, 1e-2, 1.0, 10.0, 100.0, 1e3])
    v = torch.ones(6, dtype=torch.float64)
    with pytest.raises(CGNotConvergedError, match="relative residual") as info:
        ihvp_cg(lambda p: a @ p, v, tol=1e-12, max_iter=2)
    assert isinstance(info.value, TransferInfluenceError)
    assert info.value.residual > 1e-12


def test_exact_solver_refuses_large_models():
    size = EXACT_MAX_SIZE + 1
    with pytest.raises(InfluenceError, match="solver='cg'"):
        ihvp_exact(lambda p: p, torch.ones(size, dtype=torch.float64))


@pytest.mark.parametrize("layer", [nn.BatchNorm1d(4), nn.Dropout(0.5)])
def test_batch_dependent_layers_are_rejected(layer):
    model = nn.Sequential(nn.Linear(3, 4), layer, nn.ReLU())
    with pytest.raises(InfluenceError, match="training mode"):
        check_batch_independent(model)
    check_batch_independent(model.eval())  # fixed statistics, no random draws: accepted
