"""EK-FAC inverse-Hessian-vector products for models too large for conjugate gradients: the
scalable multi-stage influence of Bao et al. (2025) replaces the pretraining Hessian ``H_G`` by
an eigenvalue-corrected Kronecker-factored curvature (George et al., 2018; Grosse et al., 2023).

What is approximated, for ``G(theta) = (1/m) sum_i loss(model(x_i), y_i) + (decay/2)||theta||^2``:

1. the Hessian of the loss term by its Gauss-Newton matrix
   ``(1/m) sum_i J_i^T H_i J_i`` (``J_i`` the Jacobian of the outputs in the parameters,
   ``H_i`` the Hessian of the loss in the outputs; for softmax cross-entropy this is the Fisher),
   which is positive semi-definite even where ``H_G`` is not;
2. that matrix by its layer-diagonal blocks (one per ``nn.Linear`` / ``nn.Conv2d``; a bias is
   one more input column of its layer);
3. each block, in the eigenbasis ``Q_A (x) Q_S`` of its Kronecker factors ``A`` (covariance of
   the layer's inputs, with a 1 appended for the bias; for a convolution, of its unfolded
   patches) and ``S`` (covariance of the back-propagated output directions), by a *diagonal*:
   the corrected eigenvalues ``Lambda[j, k] = (1/m) sum_i sum_c (Q_S^T G_ic Q_A)[j, k]^2``, the
   block's exact diagonal in that basis (``G_ic`` are layer gradients of ``r_ic . output_i``
   with ``r_ic`` the columns of ``H_i^{1/2}``).

Expectations over the model's predictive distribution are taken exactly, by back-propagating
every column of ``H_i^{1/2}`` (one backward pass per output), not by sampling labels, so the
factors are deterministic. ``decay`` is added to every eigenvalue exactly; ``damping`` adds
``sqrt(damping)`` (see :meth:`EKFAC.solve`). Directions whose total curvature is zero get 0,
as with the pseudo-inverse of :func:`~.hessian.ihvp_exact`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import hessian, vmap

from .hessian import Flat, InfluenceError, ParamLayout, flat_directions

SUPPORTED = (nn.Linear, nn.Conv2d)
"""Layer types EK-FAC factors; any other layer with parameters is refused."""


@dataclass(frozen=True)
class LayerFactors:
    """One layer's eigenbases and corrected eigenvalues: ``input_basis`` ``[in', in']``
    (``in'`` = inputs, +1 with a bias), ``output_basis`` ``[out, out]``, ``eigenvalues``
    ``[out, in']``, and where its weight and bias sit in the flat layout."""

    name: str
    weight: str
    bias: str | None
    input_basis: torch.Tensor
    output_basis: torch.Tensor
    eigenvalues: torch.Tensor


@dataclass(frozen=True)
class EKFAC:
    """Fitted EK-FAC curvature of ``G`` at one parameter vector (see the module docstring);
    :meth:`solve` applies its damped inverse to flat vectors of ``layout``."""

    layout: ParamLayout
    layers: tuple[LayerFactors, ...]
    decay: float

    def _blocks(self, vector: Flat) -> Iterator[tuple[LayerFactors, torch.Tensor]]:
        """Each layer and its block of ``vector`` as an ``[out, in']`` matrix (bias last)."""
        params = self.layout.unflatten(vector)
        for layer in self.layers:
            matrix = params[layer.weight].reshape(len(layer.output_basis), -1)
            if layer.bias is not None:
                matrix = torch.cat([matrix, params[layer.bias].unsqueeze(1)], dim=1)
            yield layer, matrix

    def _map(self, vector: Flat, damping: float, inverse: bool) -> Flat:
        """Each block scaled in its eigenbasis by ``Lambda + decay + sqrt(damping)`` (or by its
        inverse, 0 for exactly flat directions)."""
        out = {}
        for layer, matrix in self._blocks(vector):
            rotated = layer.output_basis.T @ matrix @ layer.input_basis
            values = layer.eigenvalues + self.decay + math.sqrt(damping)
            if inverse:
                flat = flat_directions(values)
                rotated = torch.where(flat, torch.zeros_like(rotated),
                                      rotated / torch.where(flat, torch.ones_like(values), values))
            else:
                rotated = rotated * values
            result = layer.output_basis @ rotated @ layer.input_basis.T
            weight_shape = self.layout.shapes[self.layout.names.index(layer.weight)]
            if layer.bias is not None:
                out[layer.bias] = result[:, -1]
                result = result[:, :-1]
            out[layer.weight] = result.reshape(weight_shape)
        return self.layout.flatten(out)

    def solve(self, vector: Flat, *, damping: float = 0.0) -> Flat:
        """The damped inverse of the EK-FAC curvature applied to ``vector``: per layer,
        ``Q (Q^T v) / (Lambda + decay + sqrt(damping))``. Adding ``sqrt(damping)`` puts the
        crossover of this damping where :func:`~.hessian.ihvp_cg`'s ``h / (h^2 + damping)``
        has it: directions with curvature far above ``sqrt(damping)`` keep ``1 / h``, and at
        ``h = sqrt(damping)`` both give ``1 / (2h)``; flatter directions are capped at
        ``1 / sqrt(damping)`` here (CG sends them to 0)."""
        if damping < 0:
            raise InfluenceError(f"damping must be >= 0, got {damping}.")
        return self._map(vector, damping, inverse=True)

    def matvec(self, vector: Flat) -> Flat:
        """The (undamped) EK-FAC curvature times ``vector``, for checks."""
        return self._map(vector, 0.0, inverse=False)


def _layers(model: nn.Module, layout: ParamLayout) -> list[tuple[str, nn.Module]]:
    """The supported layers holding every parameter of ``layout``; anything else is refused
    with the name of the layer and what to do."""
    layers: list[tuple[str, nn.Module]] = []
    covered: set[str] = set()
    for name, module in model.named_modules():
        own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        if not isinstance(module, SUPPORTED):
            raise InfluenceError(
                f"layer {name or '(root)'} ({type(module).__name__}) has parameters, and EK-FAC"
                " factors only nn.Linear and nn.Conv2d layers: use solver='cg' for this model,"
                " or freeze that layer's parameters out of the influence computation.")
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or
                                              module.padding_mode != "zeros"
                                              or isinstance(module.padding, str)):
            raise InfluenceError(
                f"layer {name} is a grouped, non-zero-padded or {module.padding!r}-padded Conv2d"
                f" (groups={module.groups}, padding_mode={module.padding_mode!r}), which EK-FAC"
                " does not factor: give it integer padding, or use solver='cg'.")
        layers.append((name, module))
        covered.update(own)
    missing = [n for n in layout.names if n not in covered]
    if missing:
        raise InfluenceError(f"parameters {missing} belong to no nn.Linear/nn.Conv2d layer; EK-FAC"
                             " cannot factor them: use solver='cg'.")
    return layers


def _inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as ``[B, positions, in']`` (conv: unfolded patches; bias: a 1 column)."""
    if isinstance(module, nn.Conv2d):
        assert not isinstance(module.padding, str)  # _layers refuses "same" / "valid"
        x = F.unfold(x, module.kernel_size, module.dilation, module.padding,
                     module.stride).transpose(1, 2)
    else:
        x = x.reshape(len(x), -1, x.shape[-1])
    if module.bias is not None:
        x = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)
    return x


def _outputs(module: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    """A gradient with respect to a layer's output as ``[B, positions, out]``."""
    if isinstance(module, nn.Conv2d):
        return grad.flatten(2).transpose(1, 2)
    return grad.reshape(len(grad), -1, grad.shape[-1])


@contextmanager
def _recording(layers: list[tuple[str, nn.Module]]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks recording every layer's input and output (a layer called twice in one
    forward pass shares its parameters across calls, which EK-FAC does not model: refused)."""
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
                   ) -> None:
            if name in seen:
                raise InfluenceError(f"layer {name} is called more than once per forward pass"
                                     " (shared weights); EK-FAC does not factor it: use"
                                     " solver='cg'.")
            seen[name] = [args[0].detach(), output]
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in layers]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _loss_roots(outputs: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    """``[B, K, K]`` square roots ``R_i`` of the per-example Hessians of the loss in the outputs
    (``R_i R_i^T = H_i``; negative eigenvalues, impossible for convex losses, clamped to 0)."""
    def one(o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss(o.unsqueeze(0), t.unsqueeze(0))[0]

    hess = vmap(hessian(one))(outputs.detach(), y)
    values, vectors = torch.linalg.eigh((hess + hess.transpose(1, 2)) / 2)
    return vectors * values.clamp_min(0).sqrt().unsqueeze(1)


def _passes(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor,
            y: torch.Tensor, loss, chunk: int
            ) -> Iterator[tuple[int, dict[str, tuple[torch.Tensor, torch.Tensor]]]]:
    """For every chunk and every output direction ``c``: each layer's inputs ``[B, P, in']``
    and back-propagated directions ``[B, P, out]`` for ``r_ic . output_i``."""
    for s in range(0, len(x), chunk):
        inputs = x[s:s + chunk].clone().requires_grad_(True)
        with torch.enable_grad(), _recording(layers) as seen:
            outputs = model(inputs)
            roots = _loss_roots(outputs, y[s:s + chunk], loss)
            activations = {name: _inputs(module, seen[name][0]) for name, module in layers}
            for c in range(roots.shape[-1]):
                grads = torch.autograd.grad(outputs, [seen[name][1] for name, _ in layers],
                                            roots[:, :, c], retain_graph=True)
                yield c, {name: (activations[name], _outputs(module, g))
                          for (name, module), g in zip(layers, grads)}


def fit_ekfac(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss, *, decay: float = 0.0,
              chunk: int = 256) -> EKFAC:
    """EK-FAC of ``G`` (module docstring) for ``model`` at its current parameters on the
    examples ``x, y`` with per-example ``loss(outputs [B, K], targets) -> [B]``: two passes
    over the data, one for the Kronecker factors (then eigendecomposed), one for the corrected
    eigenvalues. Costs ``K`` backward passes per chunk (``K`` = model outputs)."""
    layout = ParamLayout.of(dict(model.named_parameters()))
    layers = _layers(model, layout)
    m = len(x)
    covariances: dict[str, list[torch.Tensor]] = {}
    for c, batch in _passes(model, layers, x, y, loss, chunk):
        for name, (a, ds) in batch.items():
            if name not in covariances:
                covariances[name] = [a.new_zeros(a.shape[-1], a.shape[-1]),
                                     ds.new_zeros(ds.shape[-1], ds.shape[-1])]
            if c == 0:  # the inputs are the same for every output direction
                covariances[name][0] += torch.einsum("bpi,bpj->ij", a, a)
            covariances[name][1] += torch.einsum("bpi,bpj->ij", ds, ds)
    bases = {name: (torch.linalg.eigh(a_cov / m)[1], torch.linalg.eigh(s_cov / m)[1])
             for name, (a_cov, s_cov) in covariances.items()}
    eigenvalues = {name: torch.zeros(len(q_s), len(q_a), dtype=q_a.dtype, device=q_a.device)
                   for name, (q_a, q_s) in bases.items()}
    for _, batch in _passes(model, layers, x, y, loss, chunk):
        for name, (a, ds) in batch.items():
            q_a, q_s = bases[name]
            eigenvalues[name] += torch.einsum("bpo,bpi->boi", ds @ q_s, a @ q_a).square().sum(0)
    prefix = {name: f"{name}." if name else "" for name, _ in layers}
    return EKFAC(layout, tuple(
        LayerFactors(name, prefix[name] + "weight",
                     prefix[name] + "bias" if module.bias is not None else None,
                     bases[name][0], bases[name][1], eigenvalues[name] / m)
        for name, module in layers), decay)
