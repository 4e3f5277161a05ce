"""Gather an experiment's saved results into :class:`ReportInputs` and write its report.

Each analysis command saves its result beside the sweep's store
(:meth:`~transfer_influence.config.ExperimentConfig.artifact_path`); the report reads whatever
is there and leaves the rest as "missing" sections, so it can be built at any stage. Label
projections need no training and are computed here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis.agreement import AgreementTable, experiment_agreement
from ..analysis.failures import load_failures
from ..analysis.projection import consensus_predictions, default_examples, project_labels
from ..config import ExperimentConfig, safe_name
from ..counterfactual.experiment import CounterfactualResult
from ..errors import StoreError
from ..estimators.diagnostics import DiagnosticsSummary
from ..estimators.result import InfluenceResult
from ..influence_functions.experiment import InfluenceFunctionResult, saved_influence_function
from ..pruning.experiment import PruningResult
from ..pruning.surrogate import Surrogate, surrogate_path, train_surrogate
from ..sweep.plan import SweepPlan
from ..sweep.store import SweepStore
from .html import build_report
from .inputs import (
    ConvergenceSeries,
    CounterfactualSection,
    DiagnosticsSection,
    ReportInputs,
)


def counterfactual_section(config: ExperimentConfig) -> CounterfactualSection | None:
    """The saved counterfactual results measured on all target classes (one curve per removal
    strategy), or None when there are none."""
    pattern = config.artifact_path("counterfactual-*.json")
    results = [CounterfactualResult.load(path) for path in sorted(pattern.parent.glob(pattern.name))]
    overall = [result for result in results if result.target_class is None]
    return CounterfactualSection.from_results(overall) if overall else None


def diagnostics_path(config: ExperimentConfig, variant: str) -> Path:
    """Where ``transfer-influence diagnose`` saves its summary for output ``variant``."""
    return config.artifact_path(f"diagnostics-{safe_name(variant)}.json")


def saved_diagnostics(config: ExperimentConfig, influence: InfluenceResult
                      ) -> DiagnosticsSummary | None:
    """The saved diagnostics of exactly this estimate (same variant, difference in means, same
    models), or None: standard errors of another estimate must not be shown next to it."""
    path = diagnostics_path(config, influence.variant)
    if influence.method != "dim" or not path.exists():
        return None
    summary = DiagnosticsSummary.load(path)
    return summary if summary.num_models == influence.num_models else None


def diagnostics_section(summary: DiagnosticsSummary | None) -> DiagnosticsSection | None:
    """The report section of saved diagnostics."""
    if summary is None:
        return None
    return DiagnosticsSection(
        metrics=summary.metrics, verdicts=tuple(summary.verdict),
        convergence=ConvergenceSeries(tuple(summary.convergence_models),
                                      tuple(summary.convergence_mean_se)))


def cached_surrogate(plan: SweepPlan) -> Surrogate | None:
    """The pruning surrogate if ``transfer-influence prune`` has trained it, else None (a
    report never trains)."""
    return train_surrogate(plan) if surrogate_path(plan).exists() else None


def agreement_section(plan: SweepPlan, influence: InfluenceResult | None,
                      influence_function: InfluenceFunctionResult | None, *,
                      config_path: str | None = None) -> AgreementTable:
    """The agreement between the methods computed so far (see
    :mod:`~transfer_influence.analysis.agreement`); those not computed are listed as missing."""
    return experiment_agreement(plan, influence_function=influence_function, sweep=influence,
                                surrogate=cached_surrogate(plan),
                                config=config_path or "CONFIG")


def collect_report_inputs(plan: SweepPlan, store: SweepStore | None,
                          influence: InfluenceResult | None, *,
                          config_path: str | None = None) -> ReportInputs:
    """Everything the report shows, from the saved results of ``plan``'s experiment;
    ``store`` is its sweep store (see :meth:`SweepPlan.read_store`) and ``influence`` the
    estimate to show. Both are None for an experiment that only ran the multi-stage influence
    functions: the report then shows those, and notes how to run the sweep for the rest."""
    config, data = plan.config, plan.data
    influence_function = saved_influence_function(plan)
    command = config_path or "CONFIG"
    if influence is None and influence_function is None:
        raise StoreError(f"nothing to report yet: run the sweep (`transfer-influence run"
                         f" {command}`) or the influence functions (`transfer-influence"
                         f" influence-function {command}`) first.")
    failures_path = config.artifact_path("failures.json")
    failures = load_failures(failures_path) if failures_path.exists() else None
    if store is None or influence is None:
        models = f"none: the sweep has not been run (`transfer-influence run {command}`)"
    else:
        done, total = store.status()
        models = (f"{done} of {total} completed, {int(store.diverged().sum())} diverged"
                  " (excluded from every estimate)")
    summary = {
        "experiment": config.name,
        "store": str(config.store_path() if store is None else store.path),
        "models": models,
        "model": f"{config.model.name} {config.model.options or ''}".strip(),
        "transfer": config.transfer.mode,
        "units": config.sweep.unit,
        "alpha": f"{config.sweep.alpha}",
        "config hash": config.config_hash(),
    }
    diagnostics, projections = None, None
    if store is not None and influence is not None:
        summary["estimate"] = {"dim": "difference in means", "ridge": "ridge datamodel weights",
                               "lasso": "LASSO datamodel weights"}[influence.method]
        if influence.heldout_lds is not None:
            summary["held-out LDS"] = f"{influence.heldout_lds:.3f}"
        diagnostics = saved_diagnostics(config, influence)
        projections = project_labels(influence, default_examples(influence),
                                     predictions=consensus_predictions(store))
    pruning_path = config.artifact_path("prune.json")
    return ReportInputs(
        title=f"transfer-influence report: {config.name}",
        influence=influence,
        source=data.source,
        target_test=data.target_test,
        summary=summary,
        config=config_path,
        counterfactual=counterfactual_section(config),
        projections=projections,
        failures=failures,
        diagnostics=diagnostics_section(diagnostics),
        overall_se=None if diagnostics is None else np.asarray(diagnostics.se_overall),
        per_class_se=None if diagnostics is None else np.asarray(diagnostics.se_per_class),
        pruning=PruningResult.load(pruning_path) if pruning_path.exists() else None,
        influence_function=influence_function,
        agreement=agreement_section(plan, influence, influence_function,
                                    config_path=config_path),
    )


def write_experiment_report(plan: SweepPlan, store: SweepStore | None,
                            influence: InfluenceResult | None, path: str | Path | None = None, *,
                            config_path: str | None = None) -> Path:
    """Build the report of ``plan``'s experiment at ``path`` (default: beside the store,
    ``<store>.report.html``) and return its path; ``store`` and ``influence`` are None when the
    sweep has not been run (see :func:`collect_report_inputs`)."""
    inputs = collect_report_inputs(plan, store, influence, config_path=config_path)
    return build_report(inputs, path or plan.config.artifact_path("report.html"))
