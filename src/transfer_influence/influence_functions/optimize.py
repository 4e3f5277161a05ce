"""Training to convergence, which influence functions presuppose: they describe how an
*optimum* moves, so both stages are polished with full-batch L-BFGS until the gradient norm is
below a tolerance, and the leave-one-out check retrains the same way (warm-started)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch.func import grad

from .hessian import CGNotConvergedError, Flat, InfluenceError, hvp, ihvp_cg


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


def minimize(objective: Callable[[Flat], torch.Tensor], start: Flat, *, tol: float = 1e-8,
             max_iter: int = 2000, history: int = 50, newton_steps: int = 20) -> Flat:
    """The minimiser of ``objective`` reached from ``start``, with ``||grad|| <= tol``.

    Full-batch L-BFGS (strong-Wolfe line search) does the bulk of the work; near the optimum,
    where loss differences fall below float precision and line searches stall, up to
    ``newton_steps`` Newton steps (``H d = grad`` solved by conjugate gradients on Hessian-vector
    products, no loss values needed) finish. Raises :class:`InfluenceError` with the final
    gradient norm if neither gets there: influences and leave-one-out changes at a point that is
    not an optimum would be silently wrong.
    """
    x = _lbfgs(objective, start, tol, max_iter, history)
    gradient = grad(objective)
    norm = torch.linalg.vector_norm(gradient(x))
    for _ in range(newton_steps):
        if norm <= tol:
            return x
        g = gradient(x)
        try:
            step = ihvp_cg(partial(hvp, objective, x), g, tol=1e-3 * float(tol / norm),
                           max_iter=200)
        except CGNotConvergedError:
            break
        candidate = x - step
        new_norm = torch.linalg.vector_norm(gradient(candidate))
        if not new_norm < norm:
            break
        x, norm = candidate, new_norm
    if norm <= tol:
        return x
    raise InfluenceError(
        f"training did not converge: gradient norm {float(norm):.3g} > tol {tol:g} after"
        f" {max_iter} L-BFGS iterations and Newton steps. Raise max_iter, loosen tol, or add"
        " weight decay so the optimum is well defined.")
