"""Estimators of source-data influence computed from a sweep store: difference in means,
linear datamodels (ridge / LASSO) and diagnostics of how far to trust them."""

from .datamodels import (
    Datamodels,
    fit_datamodels,
    fit_lasso,
    fit_ridge,
    linear_datamodeling_score,
)
from .difference_in_means import DifferenceInMeans, difference_in_means
from .influence import estimate_influence
from .result import InfluenceResult

__all__ = [
    "Datamodels",
    "DifferenceInMeans",
    "InfluenceResult",
    "difference_in_means",
    "estimate_influence",
    "fit_datamodels",
    "fit_lasso",
    "fit_ridge",
    "linear_datamodeling_score",
]
