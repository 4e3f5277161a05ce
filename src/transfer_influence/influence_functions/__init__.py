"""Method 3: multi-stage influence functions (Chen et al., NeurIPS 2020).

- :mod:`.hessian`: Hessian-vector products, per-example gradients, inverse-Hessian-vector
  products (exact, conjugate gradients on ``H^2``);
- :mod:`.ekfac`: EK-FAC inverse-Hessian-vector products for large pretraining Hessians;
- :mod:`.optimize`: full-batch L-BFGS to an optimum;
- :mod:`.multistage`: the two cases (fixed and proximally fine-tuned embedding).
"""

from .ekfac import EKFAC, fit_ekfac
from .hessian import (
    CGNotConvergedError,
    InfluenceError,
    ParamLayout,
    check_batch_independent,
    hvp,
    ihvp_cg,
    ihvp_exact,
    per_example_grads,
)
from .multistage import (
    FixedFeature,
    MultiStageProblem,
    Proximal,
    SolverOptions,
    cross_entropy_loss,
    squared_loss,
)
from .optimize import minimize

__all__ = [
    "EKFAC",
    "CGNotConvergedError",
    "FixedFeature",
    "InfluenceError",
    "MultiStageProblem",
    "ParamLayout",
    "Proximal",
    "SolverOptions",
    "check_batch_independent",
    "cross_entropy_loss",
    "fit_ekfac",
    "hvp",
    "ihvp_cg",
    "ihvp_exact",
    "minimize",
    "per_example_grads",
    "squared_loss",
]
