"""Training to convergence, which influence functions presuppose: they describe how an
*optimum* moves, so both stages are polished with full-batch L-BFGS until the gradient norm is
below a tolerance, and the leave-one-out check retrains the same way (warm-started)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad

from .hessian import CGNotConvergedError, Flat, InfluenceError, hvp, ihvp_cg


class TrainingNotConvergedError(InfluenceError):
    """Full-batch training stopped above its gradient-norm tolerance."""


def _lbfgs(objective: Callable[[Flat], torch.Tensor], start: Flat, tol: float, max_iter: int,
           history: int) -> Flat:
    """Full-batch L-BFGS with a strong-Wolfe line search until ``||grad|| <= tol``, the
    iteration budget, or a stalled line search (loss changes below float precision)."""
    x = start.detach().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([x], lr=1.0, max_iter=max_iter, history_size=history,
                                  tolerance_grad=0.0, tolerance_change=1e-14,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective(x)
        value.backward()
        if x.grad is not None and torch.linalg.vector_norm(x.grad) <= tol:
            x.grad.zero_()  # a zero gradient stops L-BFGS here
        return value

    optimizer.step(closure)
    return x.detach()


def _newton_step(hvp_fn: Callable[[Flat], Flat], g: Flat, tol: float, max_iter: int
                 ) -> Flat | None:
    """``d`` with ``H d ~ g`` by plain conjugate gradients on ``H`` (relative residual ``tol``),
    or ``None`` if ``H`` shows negative curvature (not near a minimum) or ``max_iter`` is spent.
    On a positive-definite ``H`` this converges with ``sqrt`` of the condition number that CG on
    ``H^2`` (:func:`ihvp_cg`) pays in full, which matters in the flat directions where L-BFGS
    stalls."""
    d, r = torch.zeros_like(g), g.clone()
    p, rr, g_norm = r.clone(), r @ r, torch.linalg.vector_norm(g)
    for _ in range(max_iter):
        if rr.sqrt() <= tol * g_norm:
            return d
        hp = hvp_fn(p)
        curvature = p @ hp
        if curvature <= 0:
            return None
        step = rr / curvature
        d, r = d + step * p, r - step * hp
        rr, rr_old = r @ r, rr
        p = r + (rr / rr_old) * p
    return d if rr.sqrt() <= tol * g_norm else None


def minimize(objective: Callable[[Flat], torch.Tensor], start: Flat, *, tol: float = 1e-8,
             max_iter: int = 2000, history: int = 50, newton_steps: int = 30,
             newton_tol: float = 0.1, newton_iter: int = 500) -> Flat:
    """The minimiser of ``objective`` reached from ``start``, with ``||grad|| <= tol``.

    Full-batch L-BFGS (strong-Wolfe line search) does the bulk of the work; near the optimum,
    where loss differences fall below float precision and line searches stall, up to
    ``newton_steps`` inexact Newton steps finish: ``H d = grad`` solved by conjugate gradients on
    Hessian-vector products (no loss values needed) only to a relative residual ``newton_tol``
    in at most ``newton_iter`` iterations, which still cuts the gradient norm by about
    ``newton_tol`` per step near a minimum. Plain CG on ``H`` is tried first; where ``H`` is
    not positive definite, CG on ``H^2`` (:func:`ihvp_cg`). Raises :class:`InfluenceError`
    with the final gradient norm if neither gets there: influences and leave-one-out changes
    at a point that is not an optimum would be silently wrong.
    """
    x = _lbfgs(objective, start, tol, max_iter, history)
    gradient = grad(objective)
    norm = torch.linalg.vector_norm(gradient(x))
    for _ in range(newton_steps):
        if norm <= tol:
            return x
        g = gradient(x)

        def hvp_fn(v: Flat, at: Flat = x) -> Flat:
            return hvp(objective, at, v)

        step = _newton_step(hvp_fn, g, newton_tol, newton_iter)
        if step is None:
            try:
                step = ihvp_cg(hvp_fn, g, tol=newton_tol, max_iter=newton_iter)
            except CGNotConvergedError:
                break
        candidate = x - step
        new_norm = torch.linalg.vector_norm(gradient(candidate))
        if not new_norm < norm:
            break
        x, norm = candidate, new_norm
    if norm <= tol:
        return x
    raise TrainingNotConvergedError(
        f"training did not converge: gradient norm {float(norm):.3g} > tol {tol:g} after"
        f" {max_iter} L-BFGS iterations and Newton steps. Raise max_iter, loosen tol, or add"
        " weight decay so the optimum is well defined.")
