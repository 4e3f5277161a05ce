"""Gather an experiment's saved results into :class:`ReportInputs` and write its report.

Each analysis command saves its result beside the sweep's store
(:meth:`~transfer_influence.config.ExperimentConfig.artifact_path`); the report reads whatever
is there and leaves the rest as "missing" sections, so it can be built at any stage. Label
projections need no training and are computed here.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis.failures import load_failures
from ..analysis.projection import consensus_predictions, default_examples, project_labels
from ..config import ExperimentConfig
from ..counterfactual.experiment import CounterfactualResult
from ..estimators.result import InfluenceResult
from ..sweep.plan import SweepPlan
from ..sweep.store import SweepStore
from .html import build_report
from .inputs import CounterfactualSection, FailureSection, ProjectionSection, ReportInputs


def counterfactual_section(config: ExperimentConfig) -> CounterfactualSection | None:
    """The saved counterfactual results measured on all target classes (one curve per removal
    strategy), or None when there are none."""
    folder = config.artifact_path("x").parent
    pattern = config.artifact_path("counterfactual-*.json").name
    results = [CounterfactualResult.load(path) for path in sorted(folder.glob(pattern))]
    overall = [result for result in results if result.target_class is None]
    return CounterfactualSection.from_results(overall) if overall else None


def collect_report_inputs(plan: SweepPlan, store: SweepStore, influence: InfluenceResult, *,
                          config_path: str | None = None) -> ReportInputs:
    """Everything the report shows, from the saved results of ``plan``'s experiment;
    ``store`` is its sweep store (see :meth:`SweepPlan.read_store`) and ``influence`` the
    estimate to show."""
    config, data = plan.config, plan.data
    projections = project_labels(influence, default_examples(influence),
                                 predictions=consensus_predictions(store))
    failures_path = config.artifact_path("failures.json")
    failures = load_failures(failures_path) if failures_path.exists() else None
    done, total = store.status()
    summary = {
        "experiment": config.name,
        "store": str(store.path),
        "models": f"{done} of {total} completed",
        "model": f"{config.model.name} {config.model.options or ''}".strip(),
        "transfer": config.transfer.mode,
        "units": config.sweep.unit,
        "alpha": f"{config.sweep.alpha}",
        "config hash": config.config_hash(),
        "estimate": {"dim": "difference in means", "ridge": "ridge datamodel weights",
                     "lasso": "LASSO datamodel weights"}[influence.method],
    }
    if influence.heldout_lds is not None:
        summary["held-out LDS"] = f"{influence.heldout_lds:.3f}"
    return ReportInputs(
        title=f"transfer-influence report: {config.name}",
        influence=influence,
        source=data.source,
        target_test=data.target_test,
        summary=summary,
        config=config_path,
        counterfactual=counterfactual_section(config),
        projections=[ProjectionSection.from_projection(p) for p in projections],
        failures=None if failures is None else [FailureSection.from_debug(f) for f in failures],
    )


def write_experiment_report(plan: SweepPlan, store: SweepStore, influence: InfluenceResult,
                            path: str | Path | None = None, *,
                            config_path: str | None = None) -> Path:
    """Build the report of ``plan``'s experiment at ``path`` (default: beside the store,
    ``<store>.report.html``) and return its path."""
    inputs = collect_report_inputs(plan, store, influence, config_path=config_path)
    return build_report(inputs, path or plan.config.artifact_path("report.html"))
