"""Estimators of source-data influence computed from a sweep store: difference in means,
linear datamodels (ridge / LASSO) and diagnostics of how far to trust them."""

from .datamodels import (
    Datamodels,
    fit_datamodels,
    fit_lasso,
    fit_ridge,
    linear_datamodeling_score,
)
from .diagnostics import (
    Diagnostics,
    DiagnosticsSummary,
    DivergenceAssociation,
    SweepSource,
    bootstrap_se,
    bootstrap_summary,
    diagnose,
    diagnose_store,
    divergence_association,
    divergence_association_store,
    knockoff_fdr,
    split_half_agreement,
)
from .difference_in_means import DifferenceInMeans, difference_in_means
from .influence import estimate_influence
from .registry import Estimate, Estimator, estimator_names, register_estimator
from .result import InfluenceResult

__all__ = [
    "Datamodels",
    "Diagnostics",
    "DiagnosticsSummary",
    "DifferenceInMeans",
    "DivergenceAssociation",
    "Estimate",
    "Estimator",
    "InfluenceResult",
    "SweepSource",
    "bootstrap_se",
    "bootstrap_summary",
    "diagnose",
    "diagnose_store",
    "difference_in_means",
    "divergence_association",
    "divergence_association_store",
    "estimate_influence",
    "estimator_names",
    "fit_datamodels",
    "fit_lasso",
    "fit_ridge",
    "knockoff_fdr",
    "linear_datamodeling_score",
    "register_estimator",
    "split_half_agreement",
]
