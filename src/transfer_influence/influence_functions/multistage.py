"""Multi-stage influence functions (Chen et al., NeurIPS 2020): how up-weighting one pretraining
example ``z`` changes the loss of a *fine-tuned* model on target test examples, without
retraining.

Notation (the paper's). The pretrained model has backbone ``W`` and pretraining head ``U`` and
minimises ``G(W, U) = (1/m) sum_i g(z_i) + (decay/2) ||(W, U)||^2``; fine-tuning gives a new head
``Theta`` (and, in case 2, a fine-tuned backbone ``W'``) minimising ``F``; ``f`` is the summed
loss on the target test examples. Up-weighting ``z`` by ``eps`` moves the pretraining optimum by
``-H_G^-1 grad g(z) eps``, and that change propagates through fine-tuning:

- **case 1, fixed embedding** (eqs. 6, 9, 10; our ``fixed_feature`` transfer):
  ``F(W, Theta)`` = mean target-training loss of the head on standardised features (mean and
  std over the target training set, themselves functions of ``W``) + ``(l2/2) ||Theta_weight||^2``.
  ``I(z, x_t) = grad_Theta f . I_{z,Theta} + grad_W f . I_{z,W}`` with
  ``I_{z,W} = -[H_G^-1 grad g(z)]_W`` and
  ``I_{z,Theta} = H_{F,Theta Theta}^-1 (d^2F / dTheta dW) [H_G^-1 grad g(z)]_W``;
- **case 2, fine-tuned embedding with a proximal term** (eqs. 12-15):
  ``F(W', Theta) = mean loss + (decay/2) ||(W', Theta)||^2 + alpha ||W' - W||^2``, so
  ``I(z, x_t) = -2 alpha [(H_F)^-1 grad f]_{W'} . [H_G^-1 grad g(z)]_W`` with ``H_F`` the joint
  Hessian over ``(W', Theta)``, which includes the ``2 alpha I`` of the proximal term.

Both are ``q . grad g(z)`` for one *test-side vector* ``q`` (in the pretrained parameters'
space) per test example, or per summed set of test examples (eq. 8): :meth:`test_vector` solves
for ``q`` once (two inverse-Hessian-vector products), and :meth:`scores` reuses it for every
pretraining example at the cost of one per-example gradient (batched with ``vmap``) and one dot
product. ``I`` is the derivative of the test loss with respect to the example's weight, so a
positive influence means *harmful* (up-weighting raises the test loss); removing ``z`` is
``eps = -1/m`` and changes the test loss by about ``-I / m`` (:meth:`removal_effect`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeGuard, TypeVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from ..models.base import TransferModel
from .ekfac import EKFAC, fit_ekfac
from .hessian import (
    ExactHessian,
    Flat,
    InfluenceError,
    ParamLayout,
    check_batch_independent,
    hvp,
    ihvp_cg,
    ihvp_exact,
    per_example_grads,
)
from .optimize import minimize

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(outputs [B, K], targets [B, ...]) -> per-example losses [B]``."""

_Built = TypeVar("_Built")

Solver = Literal["cg", "exact", "identity", "ekfac"]
SOLVERS: tuple[str, ...] = ("cg", "exact", "identity", "ekfac")


def is_solver(name: str) -> TypeGuard[Solver]:
    """Whether ``name`` is one of :data:`SOLVERS`."""
    return name in SOLVERS


def cross_entropy_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy of logits against class indices (the default loss)."""
    return F.cross_entropy(outputs, targets, reduction="none")


def squared_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example ``||outputs - targets||^2 / 2`` (regression targets ``[B, K]``)."""
    return 0.5 * (outputs - targets).square().sum(dim=-1)


@dataclass(frozen=True)
class FixedFeature:
    """Case 1: the backbone stays fixed; the head is fit with L2 strength ``l2`` on its weight
    (not its bias), on features standardised over the target training set when ``standardize``
    (exactly :func:`~transfer_influence.training.transfer_fixed_feature`'s objective)."""

    l2: float
    standardize: bool = True


@dataclass(frozen=True)
class Proximal:
    """Case 2: backbone and head are fine-tuned with weight decay ``decay`` and the proximal term
    ``alpha ||W' - W||^2`` tying the fine-tuned backbone ``W'`` to the pretrained one ``W``."""

    alpha: float
    decay: float = 0.0


Finetune = FixedFeature | Proximal


@dataclass(frozen=True)
class SolverOptions:
    """How inverse-Hessian-vector products are computed: ``cg`` (conjugate gradients on
    ``H^2 + damping I``), ``exact`` (materialised, tiny models), ``identity`` (the ablation
    that replaces every inverse Hessian by the identity) or ``ekfac`` (for models where CG on the
    pretraining Hessian is too slow: ``H_G`` is replaced by its EK-FAC Gauss-Newton
    approximation, :mod:`.ekfac`, with ``sqrt(damping)`` added to its eigenvalues; the
    fine-tuning stage's smaller systems are still solved by CG)."""

    solver: Solver = "cg"
    damping: float = 0.0
    tol: float = 1e-6
    max_iter: int = 500

    def solve(self, hvp_fn: Callable[[Flat], Flat], vector: Flat) -> Flat:
        """``H^-1 v`` (damped) by the chosen solver."""
        if self.solver == "identity":
            return vector
        if self.solver == "exact":
            return ihvp_exact(hvp_fn, vector, damping=self.damping)
        if self.solver in ("cg", "ekfac"):  # ekfac: see MultiStageProblem.pretrain_solve
            return ihvp_cg(hvp_fn, vector, damping=self.damping, tol=self.tol,
                           max_iter=self.max_iter)
        raise InfluenceError(f"unknown solver {self.solver!r}; choose one of {SOLVERS}.")


def _functional(model: TransferModel) -> TransferModel:
    """A parameter-free copy of ``model`` (on the meta device) for ``functional_call``."""
    return copy.deepcopy(model).to("meta")


@dataclass
class MultiStageProblem:
    """Both training stages at their optima, and the data they were trained on.

    Attributes:
        pretrained: backbone ``W`` + pretraining head ``U`` at the optimum of ``G``.
        finetuned: the fine-tuned model, backbone + target head ``Theta``; in case 1 its
            backbone must equal ``pretrained``'s.
        source_x, source_y: the ``m`` pretraining examples (model inputs) and targets.
        target_x, target_y: the fine-tuning (target training) examples and targets.
        finetune: :class:`FixedFeature` (case 1) or :class:`Proximal` (case 2).
        pretrain_decay: the weight decay in ``G``.
        loss: per-example loss of both stages (default cross-entropy).
        chunk: examples per vectorised chunk.

    All tensors are used in the models' dtype (use float64: first-order effects of one example
    in ``m`` are small).
    """

    pretrained: TransferModel
    finetuned: TransferModel
    source_x: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    target_y: torch.Tensor
    finetune: Finetune
    pretrain_decay: float = 0.0
    loss: LossFn = cross_entropy_loss
    chunk: int = 256
    _pre: TransferModel = field(init=False, repr=False)
    _ft: TransferModel = field(init=False, repr=False)
    _at_theta: dict[str, tuple[Flat, object]] = field(
        default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for model in (self.pretrained, self.finetuned):
            check_batch_independent(model)
        if not isinstance(self.finetune, (FixedFeature, Proximal)):
            raise InfluenceError("finetune must be FixedFeature (case 1) or Proximal (case 2).")
        if isinstance(self.finetune, Proximal) and self.finetune.alpha <= 0:
            raise InfluenceError(
                f"the proximal strength alpha must be > 0, got {self.finetune.alpha}: without it"
                " the fine-tuned model does not depend on the pretrained backbone at the"
                " optimum, and every influence is 0.")
        num_classes = self.finetuned.num_classes
        if not self.target_y.is_floating_point():
            missing = sorted(set(range(num_classes)) - set(self.target_y.tolist()))
            if missing:
                raise InfluenceError(
                    f"target class(es) {missing} have no fine-tuning examples, so the fine-tuned"
                    " head has no finite optimum and influence functions are undefined; give"
                    " every target class at least one training example.")
        self._pre = _functional(self.pretrained)
        self._ft = _functional(self.finetuned)
        self.pre_layout = ParamLayout.of(dict(self.pretrained.named_parameters()))
        self.ft_layout = ParamLayout.of(dict(self.finetuned.named_parameters()))
        backbone = ParamLayout.of(dict(self.pretrained.named_parameters()), ("backbone.",))
        self.w_size = backbone.size
        if ParamLayout.of(dict(self.finetuned.named_parameters()), ("backbone.",)) != backbone:
            raise InfluenceError("pretrained and fine-tuned models must share one backbone"
                                 " architecture (same parameter names and shapes).")
        if self.pre_layout.names[:len(backbone.names)] != backbone.names:
            raise InfluenceError("backbone parameters must come before the head's.")
        if isinstance(self.finetune, FixedFeature) and not torch.equal(
                self.theta[:self.w_size], self.phi[:self.w_size]):
            raise InfluenceError("case 1 (fixed embedding) needs the fine-tuned model to keep"
                                 " the pretrained backbone unchanged; use Proximal (case 2) for"
                                 " a fine-tuned backbone.")

    # --- parameters -----------------------------------------------------------------------
    @property
    def theta(self) -> Flat:
        """The pretrained parameters ``(W, U)`` as one flat vector."""
        return self.pre_layout.flatten(dict(self.pretrained.named_parameters())).detach()

    @property
    def phi(self) -> Flat:
        """The fine-tuned parameters ``(W', Theta)`` (``W' = W`` in case 1) as one flat vector."""
        return self.ft_layout.flatten(dict(self.finetuned.named_parameters())).detach()

    def set_theta(self, theta: Flat) -> None:
        """Write flat pretrained parameters into ``pretrained`` (and, in case 1, its backbone
        into ``finetuned``, which shares it)."""
        _load(self.pretrained, self.pre_layout, theta)
        if isinstance(self.finetune, FixedFeature):
            _load(self.finetuned, self.ft_layout, torch.cat([theta[:self.w_size],
                                                              self.phi[self.w_size:]]))

    def set_phi(self, phi: Flat) -> None:
        """Write flat fine-tuned parameters into ``finetuned``."""
        _load(self.finetuned, self.ft_layout, phi)

    def refit(self, theta: Flat, *, tol: float = 1e-8, max_iter: int = 2000) -> Flat:
        """Fine-tune again, to convergence and warm-started from the current fine-tuned
        optimum, after the pretrained parameters became ``theta``; returns the new ``phi``.
        Case 1 refits the head on the backbone of ``theta``; case 2 refits backbone and head
        with the proximal term anchored at ``theta``'s backbone."""
        w, phi = self.w_size, self.phi
        if isinstance(self.finetune, FixedFeature):
            head = minimize(lambda h: self.finetune_objective(torch.cat([theta[:w], h])),
                            phi[w:], tol=tol, max_iter=max_iter)
            return torch.cat([theta[:w], head])
        return minimize(lambda p: self.finetune_objective(p, anchor=theta[:w]), phi, tol=tol,
                        max_iter=max_iter)

    def converge(self, *, tol: float = 1e-8, max_iter: int = 2000) -> None:
        """Train both stages to their optima in place (warm-started from the current
        parameters): ``G`` by full-batch L-BFGS, then fine-tuning by :meth:`refit`."""
        self.set_theta(minimize(self.pretrain_objective, self.theta, tol=tol,
                                max_iter=max_iter))
        self.set_phi(self.refit(self.theta, tol=tol, max_iter=max_iter))

    @property
    def m(self) -> int:
        """Number of pretraining examples."""
        return len(self.source_x)

    def _chunks(self, n: int) -> range:
        return range(0, n, self.chunk)

    # --- objectives -----------------------------------------------------------------------
    def pretrain_objective(self, theta: Flat, weights: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """``G(theta) = (1/m) sum_i w_i g(z_i) + (decay/2) ||theta||^2`` (``w_i = 1`` by default;
        setting ``w_i = 0`` removes example ``i`` with the normalisation kept, i.e. up-weights
        it by ``eps = -1/m``)."""
        params = self.pre_layout.unflatten(theta)
        total = theta.new_zeros(())
        for s in self._chunks(self.m):
            losses = self.loss(functional_call(self._pre, params, (self.source_x[s:s + self.chunk],)),
                               self.source_y[s:s + self.chunk])
            if weights is not None:
                losses = losses * weights[s:s + self.chunk]
            total = total + losses.sum()
        return total / self.m + 0.5 * self.pretrain_decay * theta.square().sum()

    def example_loss(self, theta: Flat, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``g(z)`` for one pretraining example (no batch axis), for ``vmap``."""
        params = self.pre_layout.unflatten(theta)
        return self.loss(functional_call(self._pre, params, (x.unsqueeze(0),)), y.unsqueeze(0))[0]

    def _standardizer(self, params: dict[str, torch.Tensor]
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Case 1 with ``standardize``: features -> standardised features, with the mean and std
        of the target training features under these backbone parameters."""
        if not (isinstance(self.finetune, FixedFeature) and self.finetune.standardize):
            return lambda features: features
        features = functional_call(self._ft.backbone, _strip(params, "backbone."),
                                   (self.target_x,))
        mean = features.mean(dim=0)
        std = features.std(dim=0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        return lambda feats: (feats - mean) / std

    def target_outputs(self, phi: Flat, x: torch.Tensor) -> torch.Tensor:
        """Outputs of the fine-tuned model with parameters ``phi`` on inputs ``x``."""
        params = self.ft_layout.unflatten(phi)
        standardize = self._standardizer(params)
        features = functional_call(self._ft.backbone, _strip(params, "backbone."), (x,))
        return functional_call(self._ft.head, _strip(params, "head."), (standardize(features),))

    def finetune_objective(self, phi: Flat, anchor: Flat | None = None) -> torch.Tensor:
        """``F(phi)``: mean fine-tuning loss plus the case's penalties; ``anchor`` is the
        pretrained backbone ``W`` of the proximal term (case 2; default: this problem's)."""
        losses = self.loss(self.target_outputs(phi, self.target_x), self.target_y)
        spec = self.finetune
        if isinstance(spec, FixedFeature):
            weight = self.ft_layout.unflatten(phi)["head.weight"]
            return losses.mean() + 0.5 * spec.l2 * weight.square().sum()
        anchor = self.theta[:self.w_size] if anchor is None else anchor
        return (losses.mean() + 0.5 * spec.decay * phi.square().sum()
                + spec.alpha * (phi[:self.w_size] - anchor).square().sum())

    def test_loss(self, phi: Flat, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``f``: the summed loss of the fine-tuned model on test examples ``x, y``."""
        return self.loss(self.target_outputs(phi, x), y).sum()

    # --- influence ------------------------------------------------------------------------
    def pretrain_hvp(self, vector: Flat) -> Flat:
        """``H_G v`` at the pretrained optimum."""
        return hvp(self.pretrain_objective, self.theta, vector)

    def pretrain_solve(self, vector: Flat, options: SolverOptions) -> Flat:
        """``H_G^-1 v`` by ``options``' solver; ``ekfac`` uses :meth:`ekfac`'s factors and
        ``exact`` :meth:`exact_hessian`'s eigendecomposition, both built once and reused.
        ``vector`` may be rows ``[k, size]``, solved one by one except by ``exact``."""
        if options.solver == "exact":
            return self.exact_hessian().solve(vector, damping=options.damping)
        if vector.ndim == 2:
            return torch.stack([self.pretrain_solve(row, options) for row in vector])
        if options.solver == "ekfac":
            return self.ekfac().solve(vector, damping=options.damping)
        return options.solve(self.pretrain_hvp, vector)

    def _reused(self, name: str, build: Callable[[], _Built]) -> _Built:
        """``build()`` at the current pretrained parameters, kept until they change."""
        theta = self.theta
        saved = self._at_theta.get(name)
        if saved is None or not torch.equal(saved[0], theta):
            saved = self._at_theta[name] = (theta, build())
        return cast(_Built, saved[1])

    def ekfac(self) -> EKFAC:
        """The EK-FAC approximation of ``H_G`` at the current pretrained parameters, fitted on
        the pretraining examples once and reused until the parameters change."""
        return self._reused("ekfac", lambda: fit_ekfac(
            self.pretrained, self.source_x, self.source_y, self.loss,
            decay=self.pretrain_decay, chunk=self.chunk))

    def exact_hessian(self) -> ExactHessian:
        """``H_G`` materialised and decomposed at the current pretrained parameters (tiny
        models only), once, and reused by every exact solve until the parameters change."""
        theta = self.theta
        return self._reused("exact", lambda: ExactHessian.of(
            self.pretrain_hvp, theta.numel(), dtype=theta.dtype, device=theta.device))

    def test_vector(self, x: torch.Tensor, y: torch.Tensor,
                    options: SolverOptions = SolverOptions()) -> Flat:
        """``q`` with ``I(z, test set) = q . grad g(z)`` for the summed loss on ``x, y`` (one
        example: a batch of one), in the pretrained parameters' space (see module docstring):
        ``H_G^-1`` applied to :meth:`fine_tuning_side`."""
        return self.pretrain_solve(self.fine_tuning_side(x, y, options), options)

    def fine_tuning_side(self, x: torch.Tensor, y: torch.Tensor,
                         options: SolverOptions = SolverOptions()) -> Flat:
        """The vector the pretraining Hessian is inverted against: the fine-tuning stage's
        sensitivity of the summed test loss on ``x, y`` to the backbone ``W`` (0 on ``U``);
        its fine-tuning Hessian solves use CG for ``ekfac``."""
        phi, w = self.phi, self.w_size
        grad_f = grad(self.test_loss)(phi, x, y)
        if isinstance(self.finetune, FixedFeature):
            def head_objective(h: Flat) -> torch.Tensor:
                return self.finetune_objective(torch.cat([phi[:w], h]))

            u = options.solve(lambda v: hvp(head_objective, phi[w:], v), grad_f[w:])
            cross = hvp(self.finetune_objective, phi, torch.cat([torch.zeros_like(phi[:w]), u]))
            side = cross[:w] - grad_f[:w]
        else:
            u = options.solve(lambda v: hvp(self.finetune_objective, phi, v), grad_f)
            side = -2.0 * self.finetune.alpha * u[:w]
        return torch.cat([side, torch.zeros_like(self.theta[w:])])

    def scores(self, vectors: Flat, indices: np.ndarray | None = None) -> torch.Tensor:
        """Influences ``[examples, vectors]`` of pretraining examples (all, or ``indices``) for
        test-side vectors ``[vectors, size]`` (or one vector ``[size]`` -> ``[examples]``):
        per-example gradients, batched, dotted with every vector."""
        matrix = vectors if vectors.ndim == 2 else vectors.unsqueeze(0)
        index = np.arange(self.m) if indices is None else np.asarray(indices)
        theta = self.theta
        out = []
        for s in self._chunks(len(index)):
            rows = torch.as_tensor(index[s:s + self.chunk])
            grads = per_example_grads(self.example_loss, theta, self.source_x[rows],
                                      self.source_y[rows], chunk=self.chunk)
            out.append(grads @ matrix.T)
        result = torch.cat(out)
        return result if vectors.ndim == 2 else result[:, 0]

    def removal_shift(self, indices: np.ndarray, options: SolverOptions = SolverOptions()
                      ) -> torch.Tensor:
        """First-order distance ``||H_G^-1 grad g(z)|| / m`` the pretrained optimum moves when
        each example of ``indices`` is removed (``eps = -1/m``), by ``options``' solver (the
        one the influences use, damping included): what :func:`.validate.leave_one_out`'s
        measured distance should be when the removal stays in the first-order regime."""
        rows = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        grads = per_example_grads(self.example_loss, self.theta, self.source_x[rows],
                                  self.source_y[rows], chunk=self.chunk)
        return torch.linalg.vector_norm(self.pretrain_solve(grads, options), dim=1) / self.m

    def removal_effect(self, influence: torch.Tensor) -> torch.Tensor:
        """Predicted change of the test loss when an example is removed (``eps = -1/m``)."""
        return -influence / self.m


def _load(model: TransferModel, layout: ParamLayout, flat: Flat) -> None:
    """Copy a flat vector into the model's parameters."""
    with torch.no_grad():
        named = dict(model.named_parameters())
        for name, value in layout.unflatten(flat.detach()).items():
            named[name].copy_(value)


def _strip(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Entries under ``prefix`` with the prefix removed (for a sub-module's functional_call)."""
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
