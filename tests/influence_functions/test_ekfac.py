"""EK-FAC: it is exactly the inverse of the layer-block-diagonal, eigenvalue-corrected
Kronecker-factored Gauss-Newton matrix it claims to be; damping adds sqrt(damping); unsupported
layers are refused; on a real (small) problem its influences agree with CG's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev

from transfer_influence.influence_functions import (
    FixedFeature,
    InfluenceError,
    ParamLayout,
    SolverOptions,
    cross_entropy_loss,
    fit_ekfac,
    hvp,
    ihvp_exact,
    squared_loss,
)
from transfer_influence.influence_functions.hessian import materialize_hessian

from .test_multistage import blobs_problem


def _objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, decay: float):
    """``G(theta)`` on flat parameters, and ``theta``."""
    layout = ParamLayout.of(dict(model.named_parameters()))
    meta = copy.deepcopy(model)

    def objective(theta: torch.Tensor) -> torch.Tensor:
        outputs = functional_call(meta, layout.unflatten(theta), (x,))
        return loss(outputs, y).mean() + 0.5 * decay * theta.square().sum()

    return objective, layout.flatten(dict(model.named_parameters())).detach()


def _linear_regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(4, 3).double()
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(50, 3, generator=g, dtype=torch.float64)
    return model, x, y, torch.randn(15, generator=g, dtype=torch.float64)


def test_ekfac_is_the_exact_inverse_hessian_of_one_linear_layer_with_squared_loss():
    # Gauss-Newton = Hessian (linear outputs), one block, and A (x) I is exactly Kronecker.
    model, x, y, v = _linear_regression()
    objective, theta = _objective(model, x, y, squared_loss, decay=0.1)
    ekfac = fit_ekfac(model, x, y, squared_loss, decay=0.1)
    exact = ihvp_exact(lambda u: hvp(objective, theta, u), v)
    torch.testing.assert_close(ekfac.solve(v), exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ekfac.matvec(exact), v, rtol=1e-10, atol=1e-12)


def test_damping_adds_its_square_root_to_every_eigenvalue():
    model, x, y, v = _linear_regression()
    objective, theta = _objective(model, x, y, squared_loss, decay=0.0)
    hessian = materialize_hessian(lambda u: hvp(objective, theta, u), v.numel(),
                                  dtype=v.dtype)
    ekfac = fit_ekfac(model, x, y, squared_loss)
    for damping in (1e-2, 1.0, 100.0):
        expected = torch.linalg.solve(hessian + damping ** 0.5 * torch.eye(v.numel(),
                                                                           dtype=v.dtype), v)
        torch.testing.assert_close(ekfac.solve(v, damping=damping), expected, rtol=1e-9,
                                   atol=1e-12)
    huge = 1e12  # the inverse tends to v / sqrt(damping)
    torch.testing.assert_close(ekfac.solve(v, damping=huge) * huge ** 0.5, v, rtol=1e-4,
                               atol=1e-6)
    with pytest.raises(InfluenceError, match="damping must be >= 0"):
        ekfac.solve(v, damping=-1.0)


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.hidden = nn.Linear(3 * 3 * 3, 5)
        self.out = nn.Linear(5, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(torch.tanh(self.conv(x)).flatten(1))))


def _block_vectors(layer, layout: ParamLayout, shapes: dict[str, torch.Size]) -> torch.Tensor:
    """The flat ``[params, block]`` basis ``q_S[:, j] q_A[:, k]^T`` of one layer, built here
    independently of EK-FAC's own flat <-> matrix mapping."""
    basis = torch.einsum("oj,ik->jkoi", layer.output_basis, layer.input_basis)
    basis = basis.reshape(-1, *basis.shape[2:])
    columns = []
    for matrix in basis:
        params = {name: torch.zeros(shape, dtype=matrix.dtype) for name, shape in shapes.items()}
        weight = matrix[:, :-1] if layer.bias else matrix
        params[layer.weight] = weight.reshape(shapes[layer.weight])
        if layer.bias:
            params[layer.bias] = matrix[:, -1]
        columns.append(layout.flatten(params))
    return torch.stack(columns, dim=1)


def test_ekfac_equals_the_inverse_of_its_kronecker_factored_gauss_newton_on_a_small_cnn():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = _SmallCNN().double()
    x = torch.randn(40, 2, 6, 6, generator=g, dtype=torch.float64)
    y = torch.arange(40) % 4
    decay, damping = 1e-2, 1e-4
    ekfac = fit_ekfac(model, x, y, cross_entropy_loss, decay=decay, chunk=16)
    params = dict(model.named_parameters())
    layout = ParamLayout.of(params)
    shapes = {k: p.shape for k, p in params.items()}
    theta = layout.flatten(params).detach()
    meta = copy.deepcopy(model)

    # brute-force Gauss-Newton (1/m) sum_i J_i^T (diag p_i - p_i p_i^T) J_i
    jac = jacrev(lambda t: functional_call(meta, layout.unflatten(t), (x,)))(theta)
    p = torch.softmax(model(x), dim=1).detach()
    out_hessians = torch.diag_embed(p) - p.unsqueeze(2) * p.unsqueeze(1)
    ggn = torch.einsum("bkp,bkl,blq->pq", jac, out_hessians, jac) / len(x)

    v = torch.randn(theta.numel(), generator=g, dtype=torch.float64)
    expected = torch.zeros_like(v)
    for layer in ekfac.layers:
        q = _block_vectors(layer, layout, shapes)
        corrected = torch.einsum("pj,pq,qj->j", q, ggn, q)
        torch.testing.assert_close(layer.eigenvalues.reshape(-1), corrected)
        expected += q @ ((q.T @ v) / (corrected + decay + damping ** 0.5))
    torch.testing.assert_close(ekfac.solve(v, damping=damping), expected)

    # the bases are eigenvectors of the Kronecker factors: A of the first layer (its unfolded
    # input patches with a 1 for the bias) and S of the last (the mean output Hessian)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)
    patches = torch.cat([patches, torch.ones(*patches.shape[:2], 1, dtype=x.dtype)], dim=2)
    a = torch.einsum("bpi,bpj->ij", patches, patches) / len(x)
    conv, out = ekfac.layers[0], ekfac.layers[-1]
    rotated = conv.input_basis.T @ a @ conv.input_basis
    torch.testing.assert_close(rotated, torch.diag(torch.diagonal(rotated)), atol=1e-10,
                               rtol=0)
    rotated = out.output_basis.T @ out_hessians.mean(0) @ out.output_basis
    torch.testing.assert_close(rotated, torch.diag(torch.diagonal(rotated)), atol=1e-10,
                               rtol=0)


@pytest.mark.parametrize(("model", "message"), [
    (nn.Sequential(nn.Linear(3, 4), nn.GroupNorm(2, 4), nn.Linear(4, 2)), "GroupNorm"),
    (nn.Sequential(nn.Conv2d(2, 2, 1, groups=2), nn.Flatten(), nn.Linear(2, 2)), "groups=2"),
    (nn.Sequential(nn.Conv2d(2, 2, 1, padding="same"), nn.Flatten(), nn.Linear(2, 2)),
     "'same'-padded"),
])
def test_layers_ekfac_cannot_factor_are_refused(model, message):
    x = torch.randn(4, 3, dtype=torch.float64) if isinstance(model[0], nn.Linear) else \
        torch.randn(4, 2, 1, 1, dtype=torch.float64)
    with pytest.raises(InfluenceError, match=f"{message}.*solver='cg'"):
        fit_ekfac(model.double(), x, torch.arange(4) % 2, cross_entropy_loss)


def test_a_layer_called_twice_is_refused():
    layer = nn.Linear(3, 3).double()
    model = nn.Sequential(layer, nn.Tanh(), layer)
    with pytest.raises(InfluenceError, match="called more than once"):
        fit_ekfac(model, torch.randn(4, 3, dtype=torch.float64), torch.arange(4) % 3,
                  cross_entropy_loss)


def test_ekfac_influences_agree_with_cg_on_a_small_problem():
    # A loose sanity bound; the benchmark measures the agreement on a CNN.
    problem, x_test, y_test, planted = blobs_problem(FixedFeature(l2=1e-2), 0)
    cg = problem.scores(problem.test_vector(x_test, y_test, SolverOptions("cg", tol=1e-8)))
    ekfac = problem.scores(problem.test_vector(x_test, y_test,
                                               SolverOptions("ekfac", tol=1e-8)))
    assert np.corrcoef(cg.numpy(), ekfac.numpy())[0, 1] > 0.3
    assert planted in torch.argsort(ekfac, descending=True)[:3].tolist()
    assert problem.ekfac() is problem.ekfac()  # fitted once, reused
