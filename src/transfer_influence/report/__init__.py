"""Static HTML report of a transfer-influence experiment (Jain et al. 2022 analyses).

:func:`build_report` writes one self-contained HTML file (figures and image grids embedded as
PNG data URIs, no network access) from :class:`ReportInputs`: the influence result, the source
and target test images, and optional counterfactual, label-projection, failure and diagnostics
sections. Missing sections are shown with the command that produces them.
"""

from .collect import (
    collect_report_inputs,
    diagnostics_path,
    saved_diagnostics,
    write_experiment_report,
)
from .html import build_report, render_report
from .inputs import (
    ConvergenceSeries,
    CounterfactualCurve,
    CounterfactualSection,
    DiagnosticsSection,
    ReportInputs,
)

__all__ = [
    "ConvergenceSeries",
    "CounterfactualCurve",
    "CounterfactualSection",
    "DiagnosticsSection",
    "ReportInputs",
    "build_report",
    "collect_report_inputs",
    "diagnostics_path",
    "render_report",
    "saved_diagnostics",
    "write_experiment_report",
]
