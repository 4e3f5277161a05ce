"""Numerical building blocks of influence functions: flat parameter vectors, Hessian-vector
products, per-example gradients and inverse-Hessian-vector products (IHVPs).

Everything works on *flat* parameter vectors: a :class:`ParamLayout` maps a model's named
parameters (or a group of them, such as ``backbone.*``) to one 1-D tensor and back, and losses
are functions ``theta -> scalar`` built with ``torch.func.functional_call``. The Hessian is never
materialised except by :func:`ihvp_exact` (:class:`ExactHessian`), which refuses anything but
tiny problems:

- :func:`hvp` is forward-over-reverse (``jvp`` of ``grad``), one extra forward pass per product;
- :func:`per_example_grads` is ``vmap(grad)`` over a batch;
- :func:`ihvp_cg` solves ``(H^2 + damping I) x = H v`` by conjugate gradients. ``H^2`` is
  positive semi-definite even when ``H`` is indefinite (a non-convex optimum), so CG applies; for
  an invertible ``H`` and ``damping = 0`` the solution is ``H^-1 v``. In ``H``'s eigenbasis the
  damped solution is ``sum_i h_i / (h_i^2 + damping) (e_i . v) e_i``: a direction with
  ``|h_i| >> sqrt(damping)`` keeps its ``1 / h_i``, a flat one (``h_i = 0``) gets 0, as with the
  pseudo-inverse. This is the damping of Chen et al. (2020), Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from ..errors import TransferInfluenceError

Flat = torch.Tensor
"""A 1-D parameter (or parameter-direction) vector laid out by a :class:`ParamLayout`."""


class InfluenceError(TransferInfluenceError):
    """An influence-function computation cannot proceed (bad model, too large, bad input)."""


class CGNotConvergedError(InfluenceError):
    """Conjugate gradients stopped before reaching its tolerance; ``residual`` is the final
    relative residual ``||b - A x|| / ||b||``."""

    def __init__(self, message: str, residual: float) -> None:
        super().__init__(message)
        self.residual = residual


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a group of parameters, in order, and their place in a flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, params: dict[str, torch.Tensor], prefixes: Iterable[str] = ("",)
           ) -> ParamLayout:
        """The layout of the entries of ``params`` whose names start with one of ``prefixes``
        (all of them by default), in ``params``' order."""
        prefixes = tuple(prefixes)
        names = tuple(k for k in params if k.startswith(prefixes))
        if not names:
            raise InfluenceError(f"no parameters start with {prefixes}; the model must be a"
                                 " TransferModel with `backbone.` and `head.` parameters.")
        return cls(names, tuple(params[k].shape for k in names))

    @property
    def size(self) -> int:
        """Number of scalars."""
        return sum(s.numel() for s in self.shapes)

    def flatten(self, params: dict[str, torch.Tensor]) -> Flat:
        """The entries named by this layout, concatenated into one 1-D tensor."""
        return torch.cat([params[k].reshape(-1) for k in self.names])

    def unflatten(self, flat: Flat) -> dict[str, torch.Tensor]:
        """Views of ``flat`` (or, batched, ``[B, size]``) shaped like the named parameters."""
        out, start = {}, 0
        lead = flat.shape[:-1]
        for name, shape in zip(self.names, self.shapes):
            out[name] = flat[..., start:start + shape.numel()].reshape(*lead, *shape)
            start += shape.numel()
        return out


def hvp(loss: Callable[[Flat], torch.Tensor], theta: Flat, vector: Flat) -> Flat:
    """``H v`` for ``H`` the Hessian of the scalar ``loss`` at ``theta`` (forward-over-reverse:
    ``jvp`` of ``grad``; the Hessian is never formed)."""
    return jvp(grad(loss), (theta,), (vector,))[1]


def per_example_grads(loss_one: Callable[[Flat, torch.Tensor, torch.Tensor], torch.Tensor],
                      theta: Flat, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 256
                      ) -> Flat:
    """``[N, size]`` gradients of ``loss_one(theta, x_i, y_i)`` (one example, no batch axis) for
    every example, with ``vmap(grad)`` over chunks of ``chunk`` examples."""
    per = vmap(grad(loss_one), in_dims=(None, 0, 0))
    return torch.cat([per(theta, x[s:s + chunk], y[s:s + chunk])
                      for s in range(0, len(x), chunk)])


EXACT_MAX_SIZE = 5000
"""Largest parameter count :func:`ihvp_exact` materialises a Hessian for."""


def materialize_hessian(hvp_fn: Callable[[Flat], Flat], size: int, *, dtype: torch.dtype,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``[size, size]`` Hessian from ``size`` products with the unit vectors (symmetrised);
    refused above :data:`EXACT_MAX_SIZE` parameters."""
    if size > EXACT_MAX_SIZE:
        raise InfluenceError(
            f"an exact Hessian of {size} parameters would take {size * size * 8 / 2**30:.1f} GiB"
            f" and {size} Hessian-vector products; the exact solver is for models of at most"
            f" {EXACT_MAX_SIZE} parameters: use solver='cg'.")
    eye = torch.eye(size, dtype=dtype, device=device)
    hessian = torch.stack([hvp_fn(e) for e in eye], dim=1)
    return (hessian + hessian.T) / 2


def flat_directions(values: torch.Tensor) -> torch.Tensor:
    """Which curvature ``values`` are zero up to round-off relative to the largest: the
    directions a pseudo-inverse sends to 0 rather than dividing by them."""
    scale = values.abs().max().clamp_min(torch.finfo(values.dtype).tiny)
    return values.abs() <= scale * values.numel() * torch.finfo(values.dtype).eps


@dataclass(frozen=True)
class ExactHessian:
    """The eigendecomposition of a materialised Hessian (tiny models only, see
    :data:`EXACT_MAX_SIZE`): built once with ``size`` Hessian-vector products, it then solves
    any number of damped systems at the cost of two matrix products each."""

    values: torch.Tensor
    vectors: torch.Tensor

    @classmethod
    def of(cls, hvp_fn: Callable[[Flat], Flat], size: int, *, dtype: torch.dtype,
           device: torch.device | str = "cpu") -> ExactHessian:
        """Materialise the Hessian of ``hvp_fn`` and decompose it."""
        values, vectors = torch.linalg.eigh(materialize_hessian(hvp_fn, size, dtype=dtype,
                                                                device=device))
        return cls(values, vectors)

    def solve(self, vector: Flat, *, damping: float = 0.0) -> Flat:
        """``(H^2 + damping I)^+ H v`` in ``H``'s eigenbasis: ``h_i / (h_i^2 + damping)`` per
        eigenvalue, and 0 for exactly flat directions (so ``damping = 0`` gives the
        pseudo-inverse ``H^+ v``). ``vector`` may also be rows ``[k, size]``."""
        values = self.values
        denominator = values.square() + damping
        flat = flat_directions(values)
        factor = torch.where(flat, torch.zeros_like(values), values / torch.where(
            flat, torch.ones_like(denominator), denominator))
        return (factor * (vector @ self.vectors)) @ self.vectors.T


def ihvp_exact(hvp_fn: Callable[[Flat], Flat], vector: Flat, *, damping: float = 0.0) -> Flat:
    """``(H^2 + damping I)^+ H v`` with ``H`` materialised from ``hvp_fn`` (tiny models only,
    see :data:`EXACT_MAX_SIZE`; :meth:`ExactHessian.solve`). Matches :func:`ihvp_cg` on the same
    system. ``vector`` may also be rows ``[k, size]``, solved with one materialised ``H``."""
    return ExactHessian.of(hvp_fn, vector.shape[-1], dtype=vector.dtype,
                           device=vector.device).solve(vector, damping=damping)


def ihvp_cg(hvp_fn: Callable[[Flat], Flat], vector: Flat, *, damping: float = 0.0,
            tol: float = 1e-8, max_iter: int = 500) -> Flat:
    """Solve ``(H^2 + damping I) x = H v`` by conjugate gradients (two Hessian-vector products
    per iteration; see the module docstring for what damping does).

    Stops when the relative residual ``||b - A x|| / ||b||`` falls to ``tol`` (``b = H v``);
    raises :class:`CGNotConvergedError`, with that residual, if ``max_iter`` iterations do not
    get there: an unconverged solution is never returned.
    """
    if damping < 0:
        raise InfluenceError(f"damping must be >= 0, got {damping}.")
    b = hvp_fn(vector)
    b_norm = torch.linalg.vector_norm(b)
    if b_norm == 0:
        return torch.zeros_like(vector)

    def apply(p: Flat) -> Flat:
        return hvp_fn(hvp_fn(p)) + damping * p

    x = torch.zeros_like(vector)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    for _ in range(max_iter):
        if rr.sqrt() <= tol * b_norm:
            return x
        ap = apply(p)
        curvature = p @ ap
        if curvature <= 0:  # H p = 0 with no damping: b has no component left to resolve
            break
        step = rr / curvature
        x = x + step * p
        r = r - step * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    residual = float(torch.linalg.vector_norm(b - apply(x)) / b_norm)
    if residual <= tol:
        return x
    raise CGNotConvergedError(
        f"conjugate gradients did not converge in {max_iter} iterations: relative residual"
        f" {residual:.3g} > tol {tol:g}. Raise max_iter, raise the damping (a flatter,"
        " better-conditioned system) or loosen tol.", residual)


def check_batch_independent(model: nn.Module) -> None:
    """Refuse models whose output for one example depends on the rest of its batch or on random
    draws (batch norm in training mode, dropout in training mode): influence functions treat the
    loss as a sum of independent per-example terms of the parameters."""
    for name, module in model.named_modules():
        batch_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        dropout = isinstance(module, nn.modules.dropout._DropoutNd)
        if (batch_norm or dropout) and module.training:
            kind = "batch normalisation" if batch_norm else "dropout"
            raise InfluenceError(
                f"layer {name or '(root)'} ({type(module).__name__}) is {kind} in training mode:"
                " its output depends on the batch (or on random draws), so the loss is not a sum"
                " of per-example terms. Use GroupNorm/LayerNorm instead of batch norm, or call"
                " model.eval() if the layer is meant to be fixed.")
