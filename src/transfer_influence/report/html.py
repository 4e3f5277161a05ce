"""Render :class:`ReportInputs` into one self-contained HTML page and write it atomically.

Everything the page shows is inside the file: figures and thumbnails are PNG data URIs and the
little CSS there is sits in a ``<style>`` element, so the report opens offline, can be mailed
or attached to an issue, and never fetches anything. All text from the inputs (class names,
summary values, verdicts) is escaped by jinja2's autoescaping.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jinja2
import numpy as np

from ..atomic import atomic_open
from ..data.images import LabeledImages
from ..errors import DataError
from ..estimators.result import InfluenceResult
from ..influence_functions.validate import OUT_OF_REGIME_RATIO
from ..pruning.experiment import PruningResult, RatioRow
from ..ranking import top_indices
from .figures import (
    convergence_png,
    counterfactual_png,
    heatmap_png,
    pruning_png,
    validation_png,
)
from .images import class_samples, grid_data_uri, png_data_uri, unit_samples
from .inputs import ReportInputs

_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("transfer_influence.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


PRUNED_CLASSES_SHOWN = 24
"""Most class names (with sample images) the pruning section lists per method."""

AGREEMENT_CLASSES_SHOWN = 3
"""Most and least helpful source classes the agreement section names per method."""


@dataclass(frozen=True)
class UnitRow:
    """One source unit in a table: its score, standard error and sample images (None: no
    images known for the unit)."""

    name: str
    score: float
    se: float | None
    samples: str | None


def _interval(low: float, high: float) -> str:
    """``[low, high]`` with 3 decimals, ``n/a`` when undefined (one seed gives NaN)."""
    return "n/a" if math.isnan(low) or math.isnan(high) else f"[{low:.3f}, {high:.3f}]"


def unit_groups(unit_names: list[str], max_units: int) -> list[str]:
    """The group of every unit, read from its name: the part before the first ``/``
    (``mnist/3`` -> ``mnist``; ``fashion/T-shirt/top`` -> ``fashion``), refined by the second
    part for groups of more than ``max_units`` units whose names have three or more parts
    (``omniglot/Greek/character05`` -> ``omniglot/Greek`` among 242 characters). A name
    without ``/`` is its own group."""
    parts = [name.split("/") for name in unit_names]
    sizes: dict[str, int] = {}
    for p in parts:
        sizes[p[0]] = sizes.get(p[0], 0) + 1
    return ["/".join(p[:2]) if len(p) >= 3 and sizes[p[0]] > max_units else p[0] for p in parts]


def group_influence(per_class: np.ndarray, unit_names: list[str], max_units: int
                    ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Mean per-class influence of the units of each group (:func:`unit_groups`):
    ``(group names, means [groups, classes], unit counts [groups])``, groups ordered from most
    helpful to most harmful on average over classes (NaN scores ignored; an all-NaN group is
    NaN and last)."""
    groups = unit_groups(unit_names, max_units)
    labels = sorted(set(groups))
    index = np.array([labels.index(g) for g in groups])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN group
        means = np.stack([np.nanmean(per_class[index == g], axis=0)
                          for g in range(len(labels))])
        average = np.nanmean(means, axis=1)
    order = np.argsort(-np.nan_to_num(average, nan=-np.inf), kind="stable")
    counts = np.bincount(index, minlength=len(labels))
    return [labels[g] for g in order], means[order], counts[order]


def _describe(dataset: LabeledImages) -> str:
    return f"{dataset.name}: {len(dataset)} images, {dataset.num_classes} classes"


class _Page:
    """Builds the template context of one report; caches each unit's sample grid, since a
    unit usually appears in several tables."""

    def __init__(self, inputs: ReportInputs, *, top_k: int, heatmap_units: int,
                 samples_per_unit: int) -> None:
        if min(top_k, heatmap_units, samples_per_unit) < 1:
            raise DataError("top_k, heatmap_units and samples_per_unit must all be >= 1.")
        self.inputs = inputs
        self.top_k = top_k
        self.heatmap_units = heatmap_units
        self.samples_per_unit = samples_per_unit
        self._samples: dict[str, str | None] = {}

    @cached_property
    def result(self) -> InfluenceResult:
        """The sweep's estimate; only the sweep's sections, built when it is given, use it."""
        assert self.inputs.influence is not None
        return self.inputs.influence

    @cached_property
    def overall(self) -> np.ndarray:
        return self.result.overall()

    @cached_property
    def per_class_scores(self) -> np.ndarray:
        return self.result.per_class()  # once: [units, targets] @ one-hot

    @cached_property
    def unit_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.result.unit_names)}

    def samples(self, unit: str) -> str | None:
        """Data URI of a unit's sample grid (None: no images known for the unit)."""
        if unit not in self._samples:
            images = unit_samples(self.inputs.source, unit, self.samples_per_unit)
            self._samples[unit] = (None if images is None else
                                   grid_data_uri(images, columns=self.samples_per_unit))
        return self._samples[unit]

    def rows(self, ranked: list[tuple[str, float]], se: np.ndarray | None) -> list[UnitRow]:
        """Table rows of ``(unit name, score)`` pairs; ``se`` is ``[units]`` or None."""
        return [UnitRow(name, score, None if se is None else float(se[self.unit_index[name]]),
                        self.samples(name)) for name, score in ranked]

    def ranking(self, scores: np.ndarray, se: np.ndarray | None
                ) -> list[tuple[UnitRow, UnitRow]]:
        """``(most helpful, most harmful)`` pairs by rank of ``scores [units]``, NaN never
        listed (as in :meth:`InfluenceResult.top`); at most half of the scored units each, so
        the two columns never share a unit."""
        order, bottom = top_indices(scores), top_indices(scores, largest=False)
        k = min(self.top_k, max(1, order.size // 2))
        names = self.result.unit_names
        helpful = self.rows([(names[u], float(scores[u])) for u in order[:k]], se)
        harmful = self.rows([(names[u], float(scores[u])) for u in bottom[:k]], se)
        return list(zip(helpful, harmful))

    def per_class(self) -> list[dict]:
        """One ranking per target class, with sample images of the class."""
        target = self.inputs.target_test
        se = self.inputs.per_class_se
        return [
            {
                "name": name,
                "count": int(target.class_counts()[c]),
                "samples": grid_data_uri(class_samples(target, c, self.samples_per_unit),
                                         columns=self.samples_per_unit),
                "ranking": self.ranking(self.per_class_scores[:, c],
                                        None if se is None else np.asarray(se)[:, c]),
            }
            for c, name in enumerate(target.class_names)
        ]

    def heatmap(self) -> dict:
        """Target classes x the units with the largest absolute per-class influence, ordered
        from most helpful to most harmful overall."""
        per_class = self.per_class_scores
        strength = np.nanmax(np.abs(per_class), axis=1, initial=0.0)  # all-NaN unit: 0
        chosen = np.argsort(-strength, kind="stable")[:self.heatmap_units]
        overall = np.nan_to_num(self.overall[chosen], nan=-np.inf)
        chosen = chosen[np.argsort(-overall, kind="stable")]
        png = heatmap_png(per_class[chosen].T, self.result.target_class_names,
                          [self.result.unit_names[u] for u in chosen],
                          colorbar_label=f"influence ({self.result.variant})")
        return {"figure": png_data_uri(png), "shown": len(chosen),
                "units": len(self.result.unit_names), "groups": self.group_heatmap()}

    def group_heatmap(self) -> str | None:
        """Target classes x unit groups (:func:`group_influence`), so a source of hundreds of
        units still reads at a glance. None when the unit heat-map already shows every unit or
        the names form no groups."""
        names = self.result.unit_names
        labels, means, counts = group_influence(self.per_class_scores, names, self.heatmap_units)
        if len(names) <= self.heatmap_units or not 1 < len(labels) < len(names):
            return None
        png = heatmap_png(means.T, self.result.target_class_names,
                          [f"{label} ({count})" for label, count in zip(labels, counts)],
                          colorbar_label=f"mean per unit ({self.result.variant})",
                          column_title="source unit group (units)")
        return png_data_uri(png)

    def target_image(self, index: int) -> str:
        """One target test image, enlarged to at least 96 pixels so that it can be seen."""
        return grid_data_uri(self.inputs.target_test.images[index:index + 1], columns=1,
                             min_side=96)

    def counterfactual(self) -> dict | None:
        section = self.inputs.counterfactual
        if section is None:
            return None
        curves = []
        for curve in section.curves:
            best_k, best_mean = curve.best
            curves.append({
                "name": curve.name, "seeds": curve.seeds, "best_k": best_k,
                "best_mean": best_mean, "change": best_mean - section.baseline_mean,
                "points": [(k, m, _interval(lo, hi)) for k, m, lo, hi in
                           zip(curve.k, curve.mean, curve.low, curve.high)],
            })
        return {
            "figure": png_data_uri(counterfactual_png(section)),
            "target": section.target_class or "all target classes",
            "baseline": section.baseline_mean,
            "baseline_interval": _interval(section.baseline_low, section.baseline_high),
            "curves": curves,
        }

    def projections(self) -> list[dict] | None:
        if not self.inputs.projections:
            return None
        return [{"section": p, "image": self.target_image(p.target_index),
                 "sources": self.rows(list(p.sources), None)} for p in self.inputs.projections]

    def failures(self) -> list[dict] | None:
        if not self.inputs.failures:
            return None
        return [{
            "section": f, "image": self.target_image(f.target_index),
            "culprit": self.samples(f.culprit),
            "fixed": round(f.fixed_by_removal * f.seeds),
            "random": round(f.fixed_by_random * f.seeds),
        } for f in self.inputs.failures]

    def diagnostics(self) -> dict | None:
        section = self.inputs.diagnostics
        if section is None:
            return None
        curve = section.convergence
        return {"section": section,
                "figure": None if curve is None else png_data_uri(convergence_png(curve))}

    def pruning(self) -> dict | None:
        """Per transfer mode: the accuracy-against-ratio figure, the rows and each method's
        winning ratio; the pruned classes of class-level methods with sample images; times."""
        result = self.inputs.pruning
        if result is None:
            return None
        transfers = []
        for transfer, reference in result.reference.items():
            rows = [row for row in result.rows if row.transfer == transfer]
            methods = list(dict.fromkeys(row.method for row in rows))
            ratios = sorted({row.ratio for row in rows})
            cells = {(row.method, row.ratio): row for row in rows}
            transfers.append({
                "name": transfer, "figure": png_data_uri(pruning_png(result, transfer)),
                "reference": reference, "reference_interval": _interval(reference.low,
                                                                        reference.high),
                "ratios": ratios,
                "methods": [{"name": method, "winning": result.winning_ratio(transfer, method),
                             "cells": [self.pruning_cell(cells.get((method, ratio)))
                                       for ratio in ratios]} for method in methods],
            })
        pruned = [self.pruned_classes(result, method, by_ratio)
                  for method, by_ratio in result.pruned_classes.items()]
        return {"transfers": transfers, "pruned": pruned, "timing": result.timing,
                "seeds": result.seeds}

    @staticmethod
    def pruning_cell(row: RatioRow | None) -> dict | None:
        """A (method, ratio) cell: the paired change from no pruning, its interval, the share
        of the source kept; None where the method was not run at that ratio."""
        if row is None:
            return None
        a = row.accuracy
        return {"diff": a.diff_mean, "interval": _interval(a.diff_low, a.diff_high),
                "accuracy": a.mean, "kept": row.kept_fraction, "win": a.diff_high >= 0.0}

    def pruned_classes(self, result: PruningResult, method: str,
                       by_ratio: dict[str, list[str]]) -> dict:
        """One class-level method's pruned source, at its largest winning ratio (else its
        smallest ratio): the smaller of the pruned and the kept classes, at most
        ``PRUNED_CLASSES_SHOWN`` of them with sample images, so hundreds of classes stay
        readable."""
        winning = [r for t in result.reference if (r := result.winning_ratio(t, method))
                   is not None]
        ratio = f"{max(winning):g}" if winning else min(by_ratio, key=float)
        pruned = by_ratio[ratio]
        pruned_set = set(pruned)
        kept = [name for name in self.inputs.source.class_names if name not in pruned_set]
        shown, what = (pruned, "pruned") if len(pruned) <= len(kept) else (kept, "kept")
        return {"method": method, "ratio": ratio, "what": what, "pruned": len(pruned),
                "kept": len(kept), "more": max(0, len(shown) - PRUNED_CLASSES_SHOWN),
                "classes": self.rows([(name, 0.0) for name in shown[:PRUNED_CLASSES_SHOWN]],
                                     None)}

    def example_rows(self, scores: np.ndarray) -> list[tuple[dict, dict]]:
        """``(most helpful, most harmful)`` pretraining examples by multi-stage influence
        ``scores [examples]`` (positive = harmful): each with its name (``<class>#<index>``),
        score and image; at most half of the examples each, so the two columns never share
        one."""
        images = self.inputs.source.images
        names = self.inputs.influence_function.unit_names  # type: ignore[union-attr]
        k = min(self.top_k, max(1, scores.size // 2))

        def row(index: int) -> dict:
            return {"name": names[index], "score": float(scores[index]),
                    "image": grid_data_uri(images[index:index + 1], columns=1, min_side=48)}

        helpful = top_indices(scores, k, largest=False)
        harmful = top_indices(scores, k)
        return [(row(a), row(b)) for a, b in zip(helpful, harmful)]

    def influence_function(self) -> dict | None:
        """The most helpful and harmful pretraining examples on the summed target test loss
        and on each target test example scored alone, and the validation scatter."""
        scored = self.inputs.influence_function
        if scored is None:
            return None
        target = self.inputs.target_test
        tests = [{"index": int(t), "image": self.target_image(int(t)),
                  "cls": target.class_names[target.labels[int(t)]],
                  "ranking": self.example_rows(scored.per_test[:, j])}
                 for j, t in enumerate(scored.test_indices)]
        validation = scored.validation
        return {"examples": len(scored.total), "overall": self.example_rows(scored.total),
                "tests": tests, "validation": validation, "regime_ratio": OUT_OF_REGIME_RATIO,
                "figure": None if validation is None else png_data_uri(
                    validation_png(validation))}

    def agreement(self) -> dict | None:
        """The rank agreement table, with each method's most helpful class."""
        table = self.inputs.agreement
        if table is None:
            return None
        ends = {}
        for method, values in table.scores.items():
            valid = np.flatnonzero(np.isfinite(values))
            k = min(AGREEMENT_CLASSES_SHOWN, valid.size // 2)
            order = valid[top_indices(values[valid])]
            ends[method] = ([table.class_names[c] for c in order[:k]],
                            [table.class_names[c] for c in order[::-1][:k]])
        return {"table": table, "ends": ends}

    def facts(self) -> list[tuple[str, str]]:
        source, target = self.inputs.source, self.inputs.target_test
        estimate = [] if self.inputs.influence is None else [
            ("output variant", self.result.variant),
            ("models in the estimate", str(self.result.num_models)),
            ("source units", str(len(self.result.unit_names))),
        ]
        return [*estimate, ("source dataset", _describe(source)),
                ("target test set", _describe(target))]

    def sweep(self) -> dict | None:
        """The sections of the sweep's estimate (None without one): its variant, the overall
        and per-class rankings and the heat-maps."""
        inputs = self.inputs
        if inputs.influence is None:
            return None
        return {
            "variant": self.result.variant,
            "has_se": {"overall": inputs.overall_se is not None,
                       "per_class": inputs.per_class_se is not None},
            "overall": self.ranking(self.overall, None if inputs.overall_se is None
                                    else np.asarray(inputs.overall_se)),
            "per_class": self.per_class(),
            "heatmap": self.heatmap(),
        }

    def context(self) -> dict:
        inputs = self.inputs
        return {
            "title": inputs.title,
            "summary": list(inputs.summary.items()) + self.facts(),
            "sweep": self.sweep(),
            "counterfactual": self.counterfactual(),
            "projections": self.projections(),
            "failures": self.failures(),
            "diagnostics": self.diagnostics(),
            "pruning": self.pruning(),
            "influence_function": self.influence_function(),
            "agreement": self.agreement(),
            "config": inputs.config_hint,
        }


def render_report(inputs: ReportInputs, *, top_k: int = 5, heatmap_units: int = 20,
                  samples_per_unit: int = 6) -> str:
    """The report page as an HTML string.

    Args:
        inputs: what to show; sections given as None are listed with the command making them.
        top_k: most helpful / harmful units listed overall and per target class.
        heatmap_units: source units in the heat-map (the largest absolute per-class scores).
        samples_per_unit: sample images shown per source unit and per target class.
    """
    page = _Page(inputs, top_k=top_k, heatmap_units=heatmap_units,
                 samples_per_unit=samples_per_unit)
    return _ENVIRONMENT.get_template("report.html.j2").render(page.context())


def build_report(inputs: ReportInputs, path: str | Path, *, top_k: int = 5,
                 heatmap_units: int = 20, samples_per_unit: int = 6) -> Path:
    """Render the report (see :func:`render_report`) and write it to ``path``.

    The file is written to a temporary file beside ``path`` and renamed over it, so a browser
    or a concurrent reader never sees half a page. An existing report is replaced: a report is
    derived from saved results and can always be rebuilt. Returns ``path``.
    """
    html = render_report(inputs, top_k=top_k, heatmap_units=heatmap_units,
                         samples_per_unit=samples_per_unit)
    path = Path(path)
    with atomic_open(path, "wb") as file:  # bytes: UTF-8 whatever the locale
        file.write(html.encode("utf-8"))
    return path
