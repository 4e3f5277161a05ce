"""The report's matplotlib figures, rendered to PNG bytes.

Figures are built as :class:`matplotlib.figure.Figure` objects on an explicit Agg canvas, never
through ``pyplot``: no global backend is switched (a user's interactive session is left alone),
no display is needed, and no figure is registered anywhere, so nothing needs closing and
nothing leaks when many reports are built in one process.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from ..influence_functions.validate import OUT_OF_REGIME_RATIO, Validation
from ..pruning.experiment import PruningResult
from .inputs import ConvergenceSeries, CounterfactualSection

DPI = 110
_MAX_LABEL = 28


def _label(text: str) -> str:
    """``text`` shortened for an axis and with ``$`` escaped, so matplotlib never parses a class
    name as mathtext (a name such as ``$5 bill`` would otherwise fail or render as math).

    Long names lose their middle, not their end: the end usually tells units apart
    (``omniglot/Early_Aramaic/character05`` -> ``omniglot/Early_Ar\u2026/character05``)."""
    if len(text) > _MAX_LABEL:
        head = (_MAX_LABEL - 1) // 2
        text = text[:head] + "\u2026" + text[len(text) - (_MAX_LABEL - 1 - head):]
    return text.replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def heatmap_png(values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], *,
                colorbar_label: str, column_title: str = "source unit") -> bytes:
    """Heat-map of ``values [rows, columns]`` (NaN drawn grey) with a diverging colormap whose
    white is exactly 0, so red/blue always mean harmful/helpful whatever the range."""
    values = np.asarray(values, dtype=np.float64)
    rows, columns = values.shape
    limit = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
    limit = limit or 1.0
    figure = Figure(figsize=(min(2.6 + 0.42 * columns, 11.0), 1.9 + 0.34 * rows), dpi=DPI,
                    layout="constrained")
    axes = figure.add_subplot()
    cmap = colormaps["RdBu"].with_extremes(bad="#d0d0d0")
    image = axes.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto",
                        norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit),
                        interpolation="nearest")
    axes.set_xticks(range(columns), [_label(c) for c in column_labels], rotation=55,
                    ha="right", rotation_mode="anchor", fontsize=8)
    axes.set_yticks(range(rows), [_label(r) for r in row_labels], fontsize=8)
    axes.set_xlabel(column_title)
    axes.set_ylabel("target class")
    if rows * columns <= 160:
        decimals = max(0, 1 - math.floor(math.log10(limit)))  # 2 digits on the largest value
        for (r, c), value in np.ndenumerate(values):
            if np.isfinite(value):
                text = f"{value:+.{decimals}f}" if round(value, decimals) else "0"
                axes.text(c, r, text, ha="center", va="center", fontsize=6.5,
                          color="white" if abs(value) > 0.6 * limit else "black")
    figure.colorbar(image, ax=axes, shrink=0.9, pad=0.01).set_label(_label(colorbar_label))
    return _png(figure)


def counterfactual_png(section: CounterfactualSection) -> bytes:
    """Target accuracy against the number ``k`` of removed units, one line per curve with its
    95% interval shaded, and the baseline (no removal) as a horizontal line and grey band."""
    figure = Figure(figsize=(7.5, 4.0), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.axhspan(section.baseline_low, section.baseline_high, color="0.85", zorder=0,
                 label="baseline 95% interval")
    axes.axhline(section.baseline_mean, color="0.35", linestyle="--", linewidth=1.2,
                 label=f"baseline (no removal) {section.baseline_mean:.3f}")
    for curve in section.curves:
        (line,) = axes.plot(curve.k, curve.mean, marker="o", linewidth=1.8,
                            label=f"{_label(curve.name)} ({curve.seeds} seeds)")
        axes.fill_between(curve.k, curve.low, curve.high, color=line.get_color(), alpha=0.18,
                          linewidth=0)
    ks = sorted({k for curve in section.curves for k in curve.k})
    axes.set_xticks(ks)
    axes.set_xlabel("source units removed (k)")
    where = section.target_class or "all target classes"
    axes.set_ylabel(f"target accuracy ({_label(where)})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="best")
    return _png(figure)


def pruning_png(result: PruningResult, transfer: str) -> bytes:
    """Target accuracy against the pruning ratio, one line per method with its 95% interval
    shaded, and the no-pruning reference as a horizontal line and grey band (the paper's
    Fig. 4)."""
    figure = Figure(figsize=(9.0, 4.2), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    reference = result.reference[transfer]
    axes.axhspan(reference.low, reference.high, color="0.85", zorder=0,
                 label="no pruning, 95% interval")
    axes.axhline(reference.mean, color="0.35", linestyle="--", linewidth=1.2,
                 label=f"no pruning {reference.mean:.3f}")
    rows = [row for row in result.rows if row.transfer == transfer]
    for method in dict.fromkeys(row.method for row in rows):
        points = sorted((row.ratio, row.accuracy) for row in rows if row.method == method)
        ratios = [ratio for ratio, _ in points]
        (line,) = axes.plot(ratios, [a.mean for _, a in points], marker="o", linewidth=1.8,
                            label=_label(method))
        axes.fill_between(ratios, [a.low for _, a in points], [a.high for _, a in points],
                          color=line.get_color(), alpha=0.18, linewidth=0)
    axes.set_xlabel("pruning ratio (fraction of the source units removed)")
    axes.set_ylabel(f"target accuracy ({_label(transfer)})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(figure)


def convergence_png(curve: ConvergenceSeries) -> bytes:
    """Mean standard error of the estimates against the number of models, on log-log axes
    where the ``1/sqrt(models)`` decay of a well-behaved estimator is a straight line."""
    figure = Figure(figsize=(6.0, 3.4), dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.plot(curve.models, curve.mean_se, marker="o", label="mean standard error")
    models = np.asarray(curve.models, dtype=np.float64)
    if models.size > 1 and models.min() > 0 and min(curve.mean_se) > 0:
        axes.plot(models, curve.mean_se[0] * np.sqrt(models[0] / models), linestyle=":",
                  color="0.4", label=r"$\propto 1/\sqrt{\mathrm{models}}$")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xticks(curve.models, [str(m) for m in curve.models])
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("models")
    axes.set_ylabel("mean standard error")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    return _png(figure)


def validation_png(validation: Validation) -> bytes:
    """Predicted against true leave-one-out changes of the summed target test loss, one point
    per removed pretraining example (Chen et al. 2020, Fig. 2/3): the solved influence on the
    left with the line ``predicted = true``, the identity-Hessian ablation on the right (its
    scale is arbitrary, so only its correlation is comparable). Removals outside the
    first-order regime (:attr:`Validation.out_of_regime`) are red crosses in both panels."""
    figure = Figure(figsize=(9.0, 3.9), dpi=DPI, layout="constrained")
    actual = np.asarray(validation.actual)
    flagged = np.isin(validation.indices, validation.out_of_regime)
    panels = [("influence function", validation.predicted, validation.pearson,
               validation.spearman),
              ("identity-Hessian ablation", validation.ablation, validation.ablation_pearson,
               validation.ablation_spearman)]
    for column, (name, values, pearson, spearman) in enumerate(panels):
        axes = figure.add_subplot(1, 2, column + 1)
        predicted = np.asarray(values)
        axes.scatter(predicted[~flagged], actual[~flagged], s=18, alpha=0.75,
                     color="C0" if column == 0 else "C1")
        if flagged.any():
            axes.scatter(predicted[flagged], actual[flagged], s=36, marker="x", color="C3",
                         label=f"moved > {OUT_OF_REGIME_RATIO:g}x the first-order distance")
        if column == 0:
            both = np.concatenate([predicted, actual])
            low, high = float(both.min()), float(both.max())
            axes.plot([low, high], [low, high], color="0.5", linestyle=":", linewidth=1,
                      label="predicted = true")
        if column == 0 or flagged.any():
            axes.legend(fontsize=8, loc="upper left")
        axes.set_title(f"{name}: r = {pearson:.2f}, \u03c1 = {spearman:.2f}", fontsize=10)
        axes.set_xlabel("predicted change of the test loss")
        axes.set_ylabel("true change (retrained)")
        axes.grid(alpha=0.3)
    return _png(figure)
