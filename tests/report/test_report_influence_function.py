"""The report's influence-function and agreement sections, from a tiny real run of the
commands (sweep, influence-function with validation, prune's surrogate), and the report without
them."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from typer.testing import CliRunner

from transfer_influence.cli import app
from transfer_influence.config import load_config
from transfer_influence.estimators import estimate_influence
from transfer_influence.influence_functions.validate import Validation
from transfer_influence.pruning import train_surrogate
from transfer_influence.pruning.scores import label_mapping_scores
from transfer_influence.report.figures import validation_png
from transfer_influence.sweep.plan import SweepPlan

from ..influence_functions.test_cli_influence import OPTIONS
from ..sweep.conftest import write_sweep_config


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _images(html: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(uri))) for uri in
            re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _section(html: str, name: str) -> str:
    start = html.index(f'<section id="{name}">')
    return html[start:html.index("</section>", start)]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A tiny experiment with a sweep and an influence-function run (1 test example scored
    alone, 3 examples validated), and no report yet."""
    folder = tmp_path_factory.mktemp("if-report")
    config = write_sweep_config(folder, epochs=1)
    _invoke("run", str(config), "--quiet")
    _invoke("influence-function", str(config), *OPTIONS)
    return config


def test_report_shows_examples_images_validation_and_agreement(experiment: Path):
    _invoke("report", str(experiment))
    html = (experiment.parent / "sweep.zarr.report.html").read_text()
    section = _section(html, "influence-functions")
    scores = np.load(experiment.parent / "sweep.zarr.influence-function.scores.npz")
    total = scores["total"]
    # the overall lists are the extreme examples, named <class>#<index>, each with its image
    rows = re.findall(r'<td class="name split">([^<]+)</td><td class="num"><span class="(\w+)">'
                      r'([^<]+)</span></td><td><img src="data:image/png', section)
    overall = rows[:10]  # 5 rows x (helpful, harmful)
    shown = [int(name.split("#")[1]) for name, _, _ in overall]
    assert shown[0::2] == list(np.argsort(total)[:5])
    assert shown[1::2] == list(np.argsort(-total)[:5])
    assert all(cls == ("neg" if float(value) > 0 else "pos") for _, cls, value in overall)
    # one card for the single test example scored alone, with its image and its own ranking
    assert "target example 0" in section
    assert len(rows) == 20
    per_test = [int(name.split("#")[1]) for name, _, _ in rows[10:]]
    assert per_test[0] == int(np.argmin(scores["per_test"][:, 0]))
    images = _images(section)
    assert len(images) == 20 + 1 + 1  # examples, the test image, the validation scatter
    assert all(image.size[0] >= 48 for image in images)
    # the validation's correlations, as saved
    validation = json.loads(
        (experiment.parent / "sweep.zarr.influence-function.validation.json").read_text())
    for key in ("pearson", "spearman", "ablation_pearson", "ablation_spearman"):
        assert f"{validation[key]:.3f}" in section
    assert "3 pretraining examples, each really removed" in section
    assert "First-order regime: " in section and "more than 2x the first-order distance" in section
    # agreement: influence function vs sweep over the 8 classes; LM / FM missing until prune
    agreement = _section(html, "agreement")
    plan = SweepPlan.from_config(load_config(experiment))
    sweep = estimate_influence(plan.read_store(), "prob_correct").overall()
    method = -np.bincount(plan.data.source.labels, weights=total)
    rho = stats.spearmanr(method, sweep).statistic
    row = re.search(r"influence function vs sweep</td><td class=\"num\">([+-]\d\.\d{3})</td>"
                    r"\s*<td class=\"num\">[\d.e-]+</td><td class=\"num\">8</td>", agreement)
    assert row and row[1] == f"{rho:+.3f}"
    assert "transfer-influence prune" in agreement and "--method lm" in agreement


def test_report_without_influence_function_files_says_what_to_run(experiment: Path,
                                                                  tmp_path: Path):
    bare = write_sweep_config(tmp_path, epochs=1)
    _invoke("run", str(bare), "--quiet")
    _invoke("report", str(bare))
    html = (tmp_path / "sweep.zarr.report.html").read_text()
    assert ("No multi-stage influence functions: run <code>transfer-influence"
            f" influence-function {bare}</code>") in html
    assert "needs <code>transfer-influence influence-function" in _section(html, "agreement")


def test_report_of_an_experiment_that_only_ran_the_influence_functions(experiment: Path,
                                                                       tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)  # the same experiment, no sweep run
    nothing = CliRunner().invoke(app, ["report", str(config)])
    assert nothing.exit_code == 1 and "nothing to report yet" in nothing.output
    assert f"transfer-influence influence-function {config}" in nothing.output
    for source in experiment.parent.glob("sweep.zarr.influence-function.*"):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    _invoke("report", str(config))
    assert not (tmp_path / "sweep.zarr").exists()  # the report creates no store
    html = (tmp_path / "sweep.zarr.report.html").read_text()
    # the influence functions, as with a sweep: examples, test card, validation scatter
    section = _section(html, "influence-functions")
    assert len(_images(section)) == 20 + 1 + 1 and "3 pretraining examples, each" in section
    assert "identity-Hessian ablation" in section
    # the sweep's sections: one note each, naming the command that makes them
    run = f"<code>transfer-influence run {config}</code>"
    assert f"No retraining-based influences of source units (overall and per-class rankings," \
        f" heat-map): run {run}." in _section(html, "overall")
    assert 'id="per-class"' not in html and 'id="heatmap"' not in html
    for name, command in (("projections", "project"), ("failures", "debug"),
                          ("diagnostics", "diagnose"), ("counterfactual", "counterfactual")):
        assert f"run {run} (the sweep), then <code>transfer-influence {command} {config}" \
            in _section(html, name)
    assert "models</th><td>none: the sweep has not been run" in _section(html, "summary")
    assert "no sweep scores" not in html and f"needs <code>transfer-influence run {config}" \
        in _section(html, "agreement")


def test_scores_of_another_configuration_are_refused(experiment: Path, tmp_path: Path):
    other = write_sweep_config(tmp_path, epochs=2)
    _invoke("run", str(other), "--quiet")
    for name in ("args.json", "scores.npz"):
        source = experiment.parent / f"sweep.zarr.influence-function.{name}"
        (tmp_path / source.name).write_bytes(source.read_bytes())
    result = CliRunner().invoke(app, ["report", str(other)])
    assert result.exit_code == 1
    assert "computed for another configuration" in result.output
    assert "overwriting it" in result.output
    assert not (tmp_path / "sweep.zarr.report.html").exists()


def test_agreement_command_adds_pruning_scores_and_the_report_reuses_them(experiment: Path):
    output = _invoke("agreement", str(experiment))
    for pair in ("influence function vs sweep", "influence function vs lm",
                 "influence function vs fm", "sweep vs lm", "lm vs fm"):
        assert pair in output
    assert "no " not in output.split("class scores")[0]  # nothing missing
    plan = SweepPlan.from_config(load_config(experiment))
    counts = label_mapping_scores(train_surrogate(plan), plan.data.target_train)
    table = output.split("class scores")[1]
    for name, count in zip(plan.data.source.class_names, counts):
        line = next(line for line in table.splitlines() if f"│ {name} " in line)
        assert f"{count:+.4g}" in line  # LM column: the surrogate's label-mapping counts
    _invoke("report", str(experiment))  # the surrogate is cached now: LM and FM appear
    agreement = _section((experiment.parent / "sweep.zarr.report.html").read_text(), "agreement")
    assert "sweep vs lm" in agreement and "lm vs fm" in agreement
    assert 'class="missing"' not in agreement


def test_agreement_command_lists_what_is_missing(tmp_path: Path):
    config = write_sweep_config(tmp_path, epochs=1)
    output = _invoke("agreement", str(config), "--no-surrogate")
    assert f"no influence function scores: needs `transfer-influence influence-function {config}`"\
        in output
    assert f"no sweep scores: needs `transfer-influence run {config}`" in output
    assert "no lm scores" in output and "no fm scores" in output


def _red_pixels(png: bytes) -> int:
    """Pixels of matplotlib's C3 red (#d62728), the out-of-regime marker."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - [214, 39, 40]).sum(axis=2) < 40).sum())


def test_validation_scatter_marks_the_removals_outside_the_first_order_regime():
    common = {"indices": [3, 5, 8, 9], "predicted": [0.1, 0.2, 0.3, 0.4],
              "actual": [0.1, 0.25, 0.28, -2.0], "ablation": [1.0, 2.0, 1.5, 3.0],
              "finetune_shift": [1.0] * 4, "predicted_shift": [1.0] * 4}
    inside = Validation(**common, pretrain_shift=[1.1, 0.9, 1.2, 1.9])
    jumped = Validation(**common, pretrain_shift=[1.1, 0.9, 1.2, 9.0])
    assert inside.out_of_regime == [] and jumped.out_of_regime == [9]
    assert _red_pixels(validation_png(inside)) == 0
    assert _red_pixels(validation_png(jumped)) > 50
