"""What a report is made of: typed, validated inputs, one optional dataclass per analysis.

The report renders whatever it is given. Every analysis section is optional (``None``): the page
then says which command produces it, so a report can be built right after ``estimate`` and
rebuilt as counterfactuals, projections, failure debugging and diagnostics are run. Even the
sweep's influence estimate is optional: an experiment that only ran the multi-stage influence
functions gets a report of those, with the sweep's sections left as notes. Inputs are
checked when constructed, so a mismatch (e.g. an influence matrix from another target set)
fails with a message instead of producing a wrong page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..analysis.agreement import AgreementTable
from ..analysis.failures import FailureDebug
from ..analysis.projection import LabelProjection
from ..counterfactual.experiment import CounterfactualResult
from ..data.images import LabeledImages
from ..errors import DataError
from ..estimators.result import InfluenceResult
from ..influence_functions.experiment import InfluenceFunctionResult
from ..pruning.experiment import PruningResult

CURVE_NAMES = {
    "bottom": "remove bottom (most harmful)",
    "top": "remove top (most helpful)",
    "random": "remove random",
    "classes": "remove named classes",
    "groups": "remove named groups",
}
"""Curve names of :meth:`CounterfactualSection.from_results`, by removal strategy."""


def _floats(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class CounterfactualCurve:
    """Target accuracy after removing ``k`` source units, for each ``k`` of one strategy.

    ``mean`` is the mean accuracy over ``seeds`` retrained models and ``low``/``high`` its 95%
    interval (NaN when there is only one seed), all ``[len(k)]``.
    """

    name: str
    k: tuple[int, ...]
    mean: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    seeds: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", tuple(int(v) for v in self.k))
        for name in ("mean", "low", "high"):
            object.__setattr__(self, name, _floats(getattr(self, name)))
        lengths = {len(self.k), len(self.mean), len(self.low), len(self.high)}
        if not self.k or len(lengths) != 1:
            raise DataError(
                f"counterfactual curve {self.name!r}: k, mean, low and high must be non-empty and"
                f" of equal length, got {len(self.k)}, {len(self.mean)}, {len(self.low)},"
                f" {len(self.high)}."
            )
        if self.seeds < 1:
            raise DataError(f"counterfactual curve {self.name!r}: seeds must be >= 1.")

    @property
    def best(self) -> tuple[int, float]:
        """``(k, mean accuracy)`` of the highest mean accuracy (ties: the smaller ``k``)."""
        k, mean = max(zip(self.k, self.mean), key=lambda pair: (pair[1], -pair[0]))
        return k, mean


@dataclass(frozen=True)
class CounterfactualSection:
    """Counterfactual removal curves measured against one no-removal baseline.

    ``baseline_low``/``baseline_high`` is the baseline's 95% interval; ``target_class`` the
    target class whose accuracy was measured (None: all target test examples).
    """

    curves: tuple[CounterfactualCurve, ...]
    baseline_mean: float
    baseline_low: float
    baseline_high: float
    target_class: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "curves", tuple(self.curves))
        if not self.curves:
            raise DataError("a counterfactual section needs at least one curve; pass None"
                            " instead when there are no counterfactual results.")

    @classmethod
    def from_results(cls, results: Sequence[CounterfactualResult]) -> CounterfactualSection:
        """One curve per saved counterfactual result (one per removal strategy, and per
        training length: ``remove <strategy>, equal steps``).

        The results must measure the same target class; the baseline is the first result's
        (every strategy retrains the same seeds without removal, so the baselines agree).
        """
        if not results:
            raise DataError("no counterfactual results given; run transfer-influence"
                            " counterfactual first.")
        targets = {r.target_class for r in results}
        if len(targets) != 1:
            raise DataError(f"counterfactual results measure different target classes"
                            f" {sorted(map(str, targets))}; report one target class at a time.")
        curves = tuple(
            CounterfactualCurve(
                name=(f"remove {r.strategy}, equal steps" if r.equal_steps
                      else CURVE_NAMES.get(r.strategy, f"remove {r.strategy}")),
                k=tuple(arm.k for arm in r.arms),
                mean=tuple(arm.mean for arm in r.arms),
                low=tuple(arm.low for arm in r.arms),
                high=tuple(arm.high for arm in r.arms),
                seeds=r.seeds,
            )
            for r in results
        )
        base = results[0].baseline
        return cls(curves, base.mean, base.low, base.high, results[0].target_class)


@dataclass(frozen=True)
class ConvergenceSeries:
    """Mean standard error of the influence estimates after the first ``models`` models."""

    models: tuple[int, ...]
    mean_se: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(int(m) for m in self.models))
        object.__setattr__(self, "mean_se", _floats(self.mean_se))
        if not self.models or len(self.models) != len(self.mean_se):
            raise DataError(f"convergence curve: models and mean_se must be non-empty and of"
                            f" equal length, got {len(self.models)} and {len(self.mean_se)}.")


@dataclass(frozen=True)
class DiagnosticsSection:
    """How far to trust the estimates: named numbers (e.g. held-out LDS, split-half
    agreement, knockoff FDR of the top k), an optional convergence curve and verdict lines."""

    metrics: Mapping[str, float]
    verdicts: tuple[str, ...] = ()
    convergence: ConvergenceSeries | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics",
                           {str(name): float(value) for name, value in self.metrics.items()})
        object.__setattr__(self, "verdicts", tuple(str(v) for v in self.verdicts))


@dataclass(frozen=True, eq=False)  # arrays make field-wise == ambiguous
class ReportInputs:
    """Everything one report shows.

    Attributes:
        title: page title.
        influence: the sweep's ``[units, targets]`` influence result (None: no sweep was run;
            its sections, standard errors, projections and diagnostics must then be absent).
        source: the source dataset (sample images of each listed unit).
        target_test: the target test set the influence columns belong to.
        summary: experiment facts shown first (config name, models, store path, ...).
        config: the experiment config path, written into the commands the page suggests
            for missing sections (default: the placeholder ``CONFIG``).
        overall_se: ``[units]`` standard errors of ``influence.overall()`` (e.g. bootstrap),
            shown as ``±``.
        per_class_se: ``[units, target classes]`` standard errors of ``influence.per_class()``.
        counterfactual, diagnostics: optional analysis sections.
        projections, failures: optional results of ``project_labels`` / ``debug_failures``.
        pruning: an optional result of ``run_pruning`` (``transfer-influence prune``).
        influence_function: optional multi-stage influences of the source examples
            (``transfer-influence influence-function``), with their validation if run.
        agreement: an optional table of rank agreement between the methods.
    """

    title: str
    influence: InfluenceResult | None
    source: LabeledImages
    target_test: LabeledImages
    summary: Mapping[str, str] = field(default_factory=dict)
    config: str | None = None
    overall_se: np.ndarray | None = None
    per_class_se: np.ndarray | None = None
    counterfactual: CounterfactualSection | None = None
    projections: Sequence[LabelProjection] | None = None
    failures: Sequence[FailureDebug] | None = None
    diagnostics: DiagnosticsSection | None = None
    pruning: PruningResult | None = None
    influence_function: InfluenceFunctionResult | None = None
    agreement: AgreementTable | None = None

    def __post_init__(self) -> None:
        self._check_influence()
        targets = len(self.target_test)
        indices = [p.target_index for p in self.projections or ()]
        indices += [f.target_index for f in self.failures or ()]
        if self.influence_function is not None:
            scored = self.influence_function
            if len(scored.total) != len(self.source):
                raise DataError(f"the influence-function scores cover {len(scored.total)}"
                                f" pretraining examples, the source has {len(self.source)};"
                                " pass the source they were computed on.")
            indices += [int(t) for t in scored.test_indices]
        bad = sorted({i for i in indices if not 0 <= i < targets})
        if bad:
            raise DataError(f"target example indices {bad} of the projections, failures or"
                            f" influence functions are out of range for {targets} target test"
                            " examples.")
        object.__setattr__(self, "summary",
                           {str(key): str(value) for key, value in self.summary.items()})

    def _check_influence(self) -> None:
        """The sweep's estimate belongs to the target test set, and the inputs that derive from
        it (standard errors, projections, diagnostics) have its shape, or are absent with it."""
        result, target = self.influence, self.target_test
        if result is None:
            given = [name for name in ("overall_se", "per_class_se", "projections", "diagnostics")
                     if getattr(self, name) is not None]
            if given:
                raise DataError(f"ReportInputs.{', '.join(given)} describe the sweep's influence"
                                " estimate, which is None; pass the estimate or leave them out.")
            return
        units, targets = np.shape(result.influence)
        if len(target) != targets or not np.array_equal(target.labels, result.target_labels):
            raise DataError(
                f"the target test set {target.name!r} ({len(target)} examples) does not match the"
                f" influence result's {targets} target labels; pass the target test set the"
                " influence was estimated on."
            )
        if list(target.class_names) != list(result.target_class_names):
            raise DataError(
                f"target class names differ: dataset {list(target.class_names)} vs influence"
                f" result {list(result.target_class_names)}; pass the matching target test set."
            )
        expected = {"overall_se": (units,), "per_class_se": (units, len(target.class_names))}
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise DataError(f"ReportInputs.{name} must have shape {list(shape)} (units"
                                f"{', target classes' if len(shape) == 2 else ''}), got"
                                f" {list(np.shape(value))}.")

    @property
    def config_hint(self) -> str:
        """The config argument of the suggested commands."""
        return self.config or "CONFIG"

