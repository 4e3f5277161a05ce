"""All fixed-feature heads of a group as one batched multinomial logistic regression.

For every model ``g`` we minimise, independently,

    f_g(W_g, b_g) = (1/N) sum_n CE(W_g z_gn + b_g, y_n) + (l2 / 2) ||W_g||_F^2

(no penalty on the intercept). This is scikit-learn's ``LogisticRegression`` objective
``C sum_n CE + ||W||^2 / 2`` divided by ``C N``, so ``C = 1 / (l2 N)`` gives the same solution.

The solver is a batched L-BFGS written for this problem: each model keeps its own curvature
history, its own Armijo backtracking step and its own convergence test (max-abs gradient
``<= tol``), and models that have converged stop moving. Loss and gradient are closed-form
(softmax minus one-hot), all models evaluated with one batched matmul. A single
``torch.optim.LBFGS`` on the summed problem was rejected: its inner products mix the models'
curvature and it can only stop when all of them are done.

Features are standardised per model (mean and std over the training examples, constant features
left unscaled) before fitting and the scaling is folded back into ``W`` and ``b``, so the returned
heads apply to raw features; the L2 penalty therefore acts on standardised features, which makes
one ``l2`` meaningful across backbones of different feature scales.
"""

from __future__ import annotations

import logging

import torch

from ..errors import TrainingError

logger = logging.getLogger(__name__)


def _loss_and_grad(z: torch.Tensor, onehot: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                   l2: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-model objective ``[G]`` and its gradients ``[G, C, D]``, ``[G, C]``."""
    logits = torch.baddbmm(b.unsqueeze(1), z, w.transpose(1, 2))  # [G, N, C]
    log_p = torch.log_softmax(logits, dim=2)
    n = z.shape[1]
    loss = -(log_p * onehot).sum(dim=(1, 2)) / n + 0.5 * l2 * w.square().sum(dim=(1, 2))
    residual = (log_p.exp() - onehot) / n  # [G, N, C]
    grad_w = torch.bmm(residual.transpose(1, 2), z) + l2 * w
    return loss, grad_w, residual.sum(dim=1)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-model inner product of ``[G, P]`` tensors."""
    return (a * b).sum(dim=1)


def fit_linear_heads(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    l2: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    standardize: bool = True,
    history: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``G`` L2-regularised multinomial logistic regressions at once (see module docstring).

    Args:
        features: ``[G, N, D]`` training features of each model (the dtype is kept; use float64
            for tight tolerances).
        labels: ``[N]`` class indices shared by all models.
        num_classes: ``C``, the target's class count (a class absent from ``labels`` has no
            finite optimum: its intercept decreases until its gradient is below ``tol``).
        l2: penalty strength (> 0) on ``W``, in units of the mean loss.
        max_iter: L-BFGS iterations at most.
        tol: convergence when every model's max-abs gradient (in the standardised problem) is
            ``<= tol``; a warning is logged for models that do not reach it.
        standardize: standardise features per model first (folded into the result).

    Returns:
        ``(W [G, C, D], b [G, C])`` for raw features; intercepts are centred (softmax is invariant
        to a common shift of the intercepts, so only their differences are determined).
    """
    if features.ndim != 3:
        raise TrainingError(f"features must be [models, examples, dim], got {tuple(features.shape)}.")
    g_count, n, d = features.shape
    labels = torch.as_tensor(labels, device=features.device)
    if labels.shape != (n,) or n == 0:
        raise TrainingError(f"labels must be [{n}] to match the features, got {tuple(labels.shape)}.")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise TrainingError(f"labels must lie in [0, {num_classes}).")
    if l2 <= 0:
        raise TrainingError(f"l2 must be > 0 (the problem has no finite optimum otherwise), got {l2}.")
    if not torch.isfinite(features).all():
        raise TrainingError("features contain NaN or inf; check the backbone (did training diverge?).")
    dtype = features.dtype
    if standardize:
        mean = features.mean(dim=1, keepdim=True)
        std = features.std(dim=1, unbiased=False, keepdim=True)
        std = torch.where(std > 0, std, torch.ones_like(std))
        z = (features - mean) / std
    else:
        z = features
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).to(dtype)
    onehot = onehot.unsqueeze(0).expand(g_count, -1, -1)

    size_w = num_classes * d
    theta = torch.zeros(g_count, size_w + num_classes, dtype=dtype, device=features.device)

    def evaluate(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = params[:, :size_w].view(g_count, num_classes, d)
        loss, grad_w, grad_b = _loss_and_grad(z, onehot, w, params[:, size_w:], l2)
        return loss, torch.cat([grad_w.reshape(g_count, -1), grad_b], dim=1)

    loss, grad = evaluate(theta)
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    gamma = torch.ones(g_count, dtype=dtype, device=features.device)
    active = grad.abs().amax(dim=1) > tol
    for _ in range(max_iter):
        if not active.any():
            break
        # Two-loop recursion, per model (pairs with rho = 0 are skipped for that model).
        q = -grad
        alphas = []
        for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            alpha = rho * _dot(s, q)
            q = q - alpha.unsqueeze(1) * y
            alphas.append(alpha)
        direction = gamma.unsqueeze(1) * q
        for s, y, rho, alpha in zip(s_hist, y_hist, rho_hist, reversed(alphas)):
            beta = rho * _dot(y, direction)
            direction = direction + (alpha - beta).unsqueeze(1) * s
        slope = _dot(grad, direction)
        not_descent = slope >= 0
        if not_descent.any():  # safeguard: fall back to steepest descent for those models
            direction = torch.where(not_descent.unsqueeze(1), -grad, direction)
            slope = _dot(grad, direction)
        # Armijo backtracking with one step size per model; first step scaled like L-BFGS does.
        step = torch.ones_like(loss)
        if not s_hist:
            step = torch.clamp(1.0 / grad.abs().sum(dim=1), max=1.0)
        step = torch.where(active, step, torch.zeros_like(step))
        for _ in range(60):
            new_loss, new_grad = evaluate(theta + step.unsqueeze(1) * direction)
            ok = (new_loss <= loss + 1e-4 * step * slope) | ~active
            if ok.all():
                break
            step = torch.where(ok, step, 0.5 * step)
        else:
            stalled = ~ok
            logger.warning("linear heads: line search failed for %d model(s); stopping them at"
                           " max-abs gradient %.3g", int(stalled.sum()),
                           float(grad[stalled].abs().amax()))
            step = torch.where(stalled, torch.zeros_like(step), step)
            active = active & ~stalled
            new_loss, new_grad = evaluate(theta + step.unsqueeze(1) * direction)
        s_new = step.unsqueeze(1) * direction
        y_new = new_grad - grad
        sy = _dot(s_new, y_new)
        curvature = sy > 1e-12 * _dot(s_new, s_new).sqrt() * _dot(y_new, y_new).sqrt()
        rho_new = torch.where(curvature, 1.0 / torch.where(curvature, sy, torch.ones_like(sy)),
                              torch.zeros_like(sy))
        yy = _dot(y_new, y_new)
        gamma = torch.where(curvature, sy / torch.where(curvature, yy, torch.ones_like(yy)), gamma)
        s_hist.append(s_new)
        y_hist.append(y_new)
        rho_hist.append(rho_new)
        if len(s_hist) > history:
            s_hist.pop(0)
            y_hist.pop(0)
            rho_hist.pop(0)
        theta = theta + s_new
        loss, grad = new_loss, new_grad
        active = active & (grad.abs().amax(dim=1) > tol)
    if active.any():
        logger.warning(
            "linear heads: %d of %d model(s) did not reach max-abs gradient <= %g in %d"
            " iterations (worst %.3g); raise max_iter or loosen tol.", int(active.sum()),
            g_count, tol, max_iter, float(grad[active].abs().amax()))
    w = theta[:, :size_w].view(g_count, num_classes, d)
    b = theta[:, size_w:]
    if standardize:
        w = w / std  # std is [G, 1, D]: scales each feature column
        b = b - (w * mean).sum(dim=2)
    return w, b - b.mean(dim=1, keepdim=True)
