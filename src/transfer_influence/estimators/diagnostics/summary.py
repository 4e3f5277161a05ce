"""Persistence of the diagnostics: the JSON summary ``diagnose`` saves beside the store and
that ``top`` and the report read back (:class:`DiagnosticsSummary`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...atomic import read_json, write_json
from .statistics import DIVERGENCE_FDR, DivergenceAssociation
from .verdict import Diagnostics


# ----------------------------------------------------------------------------- saved summary
@dataclass(frozen=True)
class DiagnosticsSummary:
    """What ``transfer-influence diagnose`` saves beside the store (JSON), for the report and
    for the standard errors shown next to ranked units.

    ``metrics``: named numbers (split-half agreement, knockoff FDR, signal-to-noise, slope of
    the convergence curve and, when it could be fitted, the held-out LDS of a ridge
    datamodel); ``convergence_models`` / ``convergence_mean_se``: the convergence curve of the
    per-class standard error; ``se_overall`` ``[units]`` and ``se_per_class``
    ``[units][classes]``: bootstrap standard errors of the difference-in-means scores.
    ``num_diverged``: diverged models excluded from all of it; ``divergence_units``: the units
    whose presence makes divergence more likely (:func:`divergence_association`).
    """

    variant: str
    num_models: int
    k: int
    side: str
    needs_more_models: bool
    verdict: list[str]
    metrics: dict[str, float]
    convergence_models: list[int]
    convergence_mean_se: list[float]
    se_overall: list[float]
    se_per_class: list[list[float]]
    num_diverged: int = 0
    divergence_units: list[str] = dataclasses.field(default_factory=list)

    @classmethod
    def from_diagnostics(cls, diagnostics: Diagnostics, lds: float | None = None,
                         divergence: DivergenceAssociation | None = None) -> DiagnosticsSummary:
        """Summarise ``diagnostics`` (and an optional held-out LDS and divergence association)
        for saving; the verdict then also says how many diverged models were excluded and
        names the units associated with divergence."""
        verdict = diagnostics.verdict(lds)
        if divergence is not None and divergence.num_diverged:
            verdict.append(
                f"{divergence.num_diverged} of {divergence.num_models} models diverged and are"
                " excluded from every estimate."
                + (" Units whose presence makes divergence more likely (Fisher exact,"
                   f" Benjamini-Hochberg q <= {DIVERGENCE_FDR}): "
                   + "; ".join(divergence.describe()) + "." if divergence.named() else
                   " No unit is significantly associated with divergence."))
        curve = diagnostics.bootstrap.curve
        metrics = {
            "split-half Spearman, overall": diagnostics.split_half.overall,
            "split-half Spearman, per class (mean)": diagnostics.split_half.mean_per_class,
            f"knockoff FDR of the top-{diagnostics.k}, overall": diagnostics.knockoffs.fdr_overall,
            f"knockoff FDR of the top-{diagnostics.k}, per class (mean)":
                diagnostics.knockoffs.mean_fdr_per_class,
            f"weakest top-{diagnostics.k} score / bootstrap SE": diagnostics.signal_to_noise(),
            "convergence slope (SE ~ m^slope)": curve.slope,
        }
        if lds is not None:
            metrics["held-out LDS (ridge datamodel)"] = lds
        return cls(
            variant=diagnostics.variant, num_models=diagnostics.num_models, k=diagnostics.k,
            side=diagnostics.side, needs_more_models=diagnostics.needs_more_models(lds),
            verdict=verdict,
            metrics={name: float(value) for name, value in metrics.items()},
            convergence_models=[int(m) for m in curve.num_models],
            convergence_mean_se=[float(v) for v in curve.mean_se_per_class],
            se_overall=[float(v) for v in diagnostics.bootstrap.se_overall],
            se_per_class=np.asarray(diagnostics.bootstrap.se_per_class, dtype=float).tolist(),
            num_diverged=0 if divergence is None else divergence.num_diverged,
            divergence_units=[] if divergence is None else divergence.named(),
        )

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (NaN written as null)."""
        write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> DiagnosticsSummary:
        """Read a summary written by :meth:`save` (nulls back to NaN)."""
        def build(raw: dict) -> DiagnosticsSummary:
            def nan(v: float | None) -> float:
                return math.nan if v is None else v

            raw["metrics"] = {k: nan(v) for k, v in raw["metrics"].items()}
            for key in ("convergence_mean_se", "se_overall"):
                raw[key] = [nan(v) for v in raw[key]]
            raw["se_per_class"] = [[nan(v) for v in row] for row in raw["se_per_class"]]
            return cls(**raw)

        return read_json(path, build, what="diagnostics", command="diagnose")
