"""Estimators of source-data influence computed from a sweep store."""

from .difference_in_means import DifferenceInMeans, difference_in_means
from .influence import estimate_influence
from .result import InfluenceResult

__all__ = ["DifferenceInMeans", "InfluenceResult", "difference_in_means", "estimate_influence"]
