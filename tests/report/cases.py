"""Report inputs built from the planted synthetic problem, shared by the report tests."""

from __future__ import annotations

from functools import cache

import numpy as np

from transfer_influence.analysis import FailureDebug, LabelProjection
from transfer_influence.data.images import LabeledImages
from transfer_influence.data.synthetic import planted_transfer_problem
from transfer_influence.estimators.result import InfluenceResult
from transfer_influence.pruning import Accuracy, PruningResult, RatioRow
from transfer_influence.report import (
    ConvergenceSeries,
    CounterfactualCurve,
    CounterfactualSection,
    DiagnosticsSection,
    ReportInputs,
)

HOSTILE = "$5 <script>alert('x')</script> & co"
"""A class name that must be escaped in HTML and must not be parsed as mathtext."""

MISSING = {
    "No counterfactual results": "transfer-influence counterfactual planted.toml --remove bottom",
    "No label projections": "transfer-influence project planted.toml",
    "No debugged failures": "transfer-influence debug planted.toml",
    "No diagnostics": "transfer-influence diagnose planted.toml",
    "No pruning results": "transfer-influence prune planted.toml",
}
"""Messages of missing sections, with the commands they suggest (config ``planted.toml``)."""


@cache
def _planted():
    return planted_transfer_problem(0)


def planted_influence(source: LabeledImages, target: LabeledImages, helpful: int,
                      target_class: int) -> InfluenceResult:
    """Small random influence scores with one clearly helpful unit for ``target_class``."""
    rng = np.random.default_rng(0)
    influence = rng.normal(0.0, 0.01, (source.num_classes, len(target)))
    influence[helpful, target.labels == target_class] += 0.1
    units = source.num_classes
    return InfluenceResult(influence, list(source.class_names), np.asarray(target.labels),
                           list(target.class_names), "prob_correct", 64,
                           np.full(units, 32), np.full(units, 32))


def planted_inputs(*, sections: bool, rename_harmful: str | None = None,
                   title: str = "Planted problem") -> ReportInputs:
    """Inputs for the planted problem, with every optional section (``sections``) or none.

    ``rename_harmful`` renames the planted harmful source class (to test escaping); with
    ``sections`` it is also the culprit of the failure and a projected unit.
    """
    data, truth = _planted()
    source, target = data.source, data.target_test
    if rename_harmful is not None:
        names = list(source.class_names)
        names[truth.harmful_source_class] = rename_harmful
        source = LabeledImages(source.images, source.labels, tuple(names), source.name)
    harmful = source.class_names[truth.harmful_source_class]
    result = planted_influence(source, target, truth.helpful_source_class, truth.target_class)
    inputs = {"title": title, "influence": result, "source": source, "target_test": target,
              "summary": {"config": "planted.toml", "note": rename_harmful or "none"},
              "config": "planted.toml"}
    if not sections:
        return ReportInputs(**inputs)
    units, classes = source.num_classes, target.num_classes
    return ReportInputs(
        **inputs,
        overall_se=np.full(units, 0.0031),
        per_class_se=np.full((units, classes), 0.0062),
        counterfactual=CounterfactualSection(
            (CounterfactualCurve("remove bottom (most harmful)", (1, 2, 4), (0.81, 0.83, 0.80),
                                 (0.79, 0.80, 0.76), (0.83, 0.86, 0.84), 5),
             CounterfactualCurve("remove random", (1, 2, 4), (0.78, 0.77, 0.74),
                                 (0.76, 0.74, 0.70), (0.80, 0.80, 0.78), 5),
             CounterfactualCurve("remove top (most helpful)", (1, 2, 4), (0.70, 0.66, 0.61),
                                 (0.67, 0.62, 0.56), (0.73, 0.70, 0.66), 5)),
            baseline_mean=0.78, baseline_low=0.76, baseline_high=0.80),
        projections=[
            LabelProjection(0, target.class_names[0], target.class_names[1],
                            [(source.class_names[truth.helpful_source_class], 0.04),
                             (harmful, 0.01)]),
            LabelProjection(60, target.class_names[1], None, [(source.class_names[0], 0.02)]),
        ],
        failures=[FailureDebug(3, target.class_names[0], target.class_names[2], harmful, -0.05,
                               10, baseline_correct=0.2, fixed_by_removal=0.6,
                               fixed_by_random=0.1)],
        pruning=planted_pruning(source),
        diagnostics=DiagnosticsSection(
            {"held-out LDS": 0.41, "split-half agreement": 0.83, "knockoff FDR (top 5)": 0.1},
            ("estimates have converged: mean SE falls like 1/sqrt(models)",),
            ConvergenceSeries((8, 16, 32, 64), (0.08, 0.057, 0.04, 0.028))),
    )


def _accuracy(per_seed: list[float], reference: list[float]) -> Accuracy:
    return Accuracy.of(np.array(per_seed), np.array(reference))


def planted_pruning(source: LabeledImages) -> PruningResult:
    """A pruning result over ``source``'s classes: LM wins at 0.5, random at no ratio."""
    reference = [0.80, 0.82, 0.78]
    rows = [RatioRow("fixed_feature", "lm", 0.25, 2, 0.75, _accuracy([0.81, 0.83, 0.79],
                                                                     reference)),
            RatioRow("fixed_feature", "lm", 0.5, 4, 0.5, _accuracy([0.80, 0.83, 0.78],
                                                                   reference)),
            RatioRow("fixed_feature", "random", 0.25, 2, 0.75, _accuracy([0.70, 0.71, 0.69],
                                                                         reference)),
            RatioRow("fixed_feature", "random", 0.5, 4, 0.5, _accuracy([0.60, 0.62, 0.59],
                                                                       reference))]
    return PruningResult(
        seeds=3, ratios=[0.25, 0.5], reference={"fixed_feature": _accuracy(reference, reference)},
        rows=rows, pruned_classes={"lm": {"0.5": list(source.class_names[:4])}},
        methods={"lm": {}, "random": {}},
        timing={"surrogate_seconds": 1.5, "score_seconds": {"lm": 0.01, "random": 0.0},
                "full_model_seconds": 2.0, "sweep_model_seconds": 1.0, "sweep_seconds": 64.0,
                "pruned_model_seconds": {"0.25": 1.5, "0.5": 1.0}, "timed_method": "lm"})
