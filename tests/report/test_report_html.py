"""The report page without a browser: self-contained, escaped, complete, written atomically."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from transfer_influence.analysis import FailureDebug, LabelProjection
from transfer_influence.counterfactual import ArmResult, CounterfactualResult
from transfer_influence.errors import DataError
from transfer_influence.estimators.result import InfluenceResult
from transfer_influence.report import (
    CounterfactualCurve,
    CounterfactualSection,
    ReportInputs,
    build_report,
    render_report,
)
from transfer_influence.report.html import group_influence, unit_groups

from .cases import HOSTILE, MISSING, planted_inputs


class _Links(HTMLParser):
    """Every URL-valued attribute and every tag name of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.urls += [(tag, name, value or "") for name, value in attrs
                      if name in ("src", "href", "srcset", "action", "data")]


@pytest.fixture(scope="module")
def full_html() -> str:
    return render_report(planted_inputs(sections=True))


@pytest.fixture(scope="module")
def bare_html() -> str:
    return render_report(planted_inputs(sections=False))


@pytest.mark.parametrize("which", ["full_html", "bare_html"])
def test_page_is_self_contained_and_every_image_is_a_valid_png(which, request):
    html = request.getfixturevalue(which)
    parser = _Links()
    parser.feed(html)
    assert not re.search(r"https?://", html)
    assert not parser.tags & {"script", "link", "iframe", "object", "embed"}
    assert "@import" not in html and "url(" not in html  # no CSS fetching either
    images = [value for tag, name, value in parser.urls if tag == "img" and name == "src"]
    assert len(images) == len(parser.urls) - sum(v.startswith("#") for _, _, v in parser.urls)
    assert len(images) > 20
    for uri in images:
        prefix = "data:image/png;base64,"
        assert uri.startswith(prefix)
        image = Image.open(io.BytesIO(base64.b64decode(uri[len(prefix):], validate=True)))
        assert image.format == "PNG"
        image.verify()


def test_full_report_shows_every_section_and_the_standard_errors(full_html):
    for message in MISSING:
        assert message not in full_html
    for text in ("&plusmn; 0.0031", "&plusmn; 0.0062", "remove top (most helpful)",
                 "held-out LDS", "6/10 (60%)", "1/10 (10%)", "estimates have converged",
                 "target example 60", "predicted: unknown"):
        assert text in full_html


def test_pruning_section_shows_winning_ratios_pruned_classes_and_costs(full_html):
    section = full_html.split('<section id="pruning">')[1].split("</section>")[0]
    accuracy_table = section.split("</table>")[0]
    rows = {row.split("</td>")[0]: row for row in accuracy_table.split("<tr><td>")[1:]}
    assert rows["lm"].rstrip().endswith("<b>0.5</b></td></tr>")
    assert rows["random"].rstrip().endswith("<b>none</b></td></tr>")
    assert rows["lm"].count('class="num win"') == 2 and 'class="num win"' not in rows["random"]
    pruned = planted_inputs(sections=True).pruning.pruned_classes["lm"]["0.5"]
    for name in pruned:
        assert f'alt="sample images of {name}"' in section
    assert "surrogate training (once)" in section and ">64<" in section


def test_rankings_agree_with_the_influence_result(full_html):
    result = planted_inputs(sections=True).influence
    tables = full_html.split('<table class="ranking">')[1:]
    assert len(tables) == 1 + len(result.target_class_names)
    for table, target_class in zip(tables, [None, *result.target_class_names]):
        names = re.findall(r'<td class="name split">(.*?)</td>', table.split("</table>")[0])
        k = len(names) // 2
        assert k == 4  # top_k = 5, capped at half of the 8 units
        assert names[0::2] == [n for n, _ in result.top(k, target_class=target_class)]
        assert names[1::2] == [n for n, _ in result.top(k, target_class=target_class,
                                                        harmful=True)]
    assert re.search(r'<td class="name split">(.*?)</td>', full_html)[1].startswith("helpful(")


def test_missing_sections_say_which_command_produces_them(bare_html):
    for message, command in MISSING.items():
        assert message in bare_html
        assert command in bare_html
    assert "No standard errors were given" in bare_html
    assert "&plusmn;" not in bare_html


def test_user_text_is_escaped_everywhere():
    inputs = planted_inputs(sections=True, rename_harmful=HOSTILE, title=f"title {HOSTILE}")
    html = render_report(inputs)
    assert "<script" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    # title, summary, overall/per-class tables, projection, failure culprit (several places)
    assert html.count("&lt;script&gt;") >= 6


def test_build_report_writes_atomically_and_replaces(tmp_path, bare_html):
    path = tmp_path / "out" / "report.html"
    assert build_report(planted_inputs(sections=False), path) == path
    assert path.read_text(encoding="utf-8") == bare_html  # deterministic, UTF-8
    build_report(planted_inputs(sections=False, title="second"), path)
    assert "<title>second</title>" in path.read_text(encoding="utf-8")
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a-directory"
    target.mkdir()
    with pytest.raises(OSError):
        build_report(planted_inputs(sections=False), target)  # cannot replace a directory
    assert [p.name for p in tmp_path.iterdir()] == ["a-directory"]
    assert list(target.iterdir()) == []


def test_unit_groups_come_from_the_names():
    characters = [f"omniglot/A{u % 3}/character{u:02d}" for u in range(30)]
    others = ["mnist/3", "fashion/T-shirt/top", "loner"]
    assert unit_groups(characters + others, 20) == (
        [f"omniglot/A{u % 3}" for u in range(30)] + ["mnist", "fashion", "loner"])
    assert unit_groups(characters[:10] + others, 20) == ["omniglot"] * 10 + [
        "mnist", "fashion", "loner"]  # a small group is not split


def test_many_units_add_a_group_heatmap_of_mean_influence():
    """With more units than the heat-map shows, a second heat-map shows every unit by group;
    its values are the groups' mean per-class scores (checked by brute force)."""
    base = planted_inputs(sections=False)
    target = base.target_test
    names = [f"omniglot/A{u % 3}/character{u:02d}" for u in range(30)] + ["mnist/3", "mnist/4"]
    rng = np.random.default_rng(1)
    influence = rng.normal(0.0, 0.01, (len(names), len(target)))
    influence[1::3] += 0.05  # group omniglot/A1 helps every target class
    result = InfluenceResult(influence, names, np.asarray(target.labels),
                             list(target.class_names), "prob_correct", 64,
                             np.full(len(names), 32), np.full(len(names), 32))
    per_class = result.per_class()
    labels, means, counts = group_influence(per_class, names, 20)
    assert labels[0] == "omniglot/A1" and sorted(labels) == ["mnist", "omniglot/A0",
                                                             "omniglot/A1", "omniglot/A2"]
    groups = np.array(unit_groups(names, 20))
    for label, mean, count in zip(labels, means, counts):
        np.testing.assert_allclose(mean, per_class[groups == label].mean(axis=0))
        assert count == (groups == label).sum()

    alt = "heat-map of mean influence per unit group"
    html = render_report(ReportInputs(base.title, result, base.source,
                                      target), heatmap_units=20)
    assert alt in html and "All 32 units by group" in html
    assert alt not in render_report(ReportInputs(base.title, result, base.source, target),
                                    heatmap_units=40)  # every unit already shown
    assert alt not in render_report(base)  # 8 units without groups


def test_inputs_are_checked_against_the_influence_result():
    inputs = planted_inputs(sections=False)
    other_target = inputs.target_test.take(np.r_[0:5, 50:55, 100:105, 150:155])
    with pytest.raises(DataError, match="does not match"):
        ReportInputs("t", inputs.influence, inputs.source, other_target)
    units = len(inputs.influence.unit_names)
    with pytest.raises(DataError, match=rf"overall_se must have shape \[{units}\]"):
        ReportInputs("t", inputs.influence, inputs.source, inputs.target_test,
                     overall_se=np.zeros(units + 1))
    with pytest.raises(DataError, match=r"per_class_se must have shape"):
        ReportInputs("t", inputs.influence, inputs.source, inputs.target_test,
                     per_class_se=np.zeros(units))
    with pytest.raises(DataError, match=r"indices \[200\]"):
        ReportInputs("t", inputs.influence, inputs.source, inputs.target_test,
                     projections=[LabelProjection(200, "a", None, [])])
    # without a sweep estimate, nothing derived from it may be given
    with pytest.raises(DataError, match=r"overall_se, projections describe the sweep's"):
        ReportInputs("t", None, inputs.source, inputs.target_test, overall_se=np.zeros(units),
                     projections=[LabelProjection(0, "a", None, [])])
    with pytest.raises(DataError, match="equal length"):
        CounterfactualCurve("c", (1, 2), (0.5,), (0.4,), (0.6,), 3)
    with pytest.raises(DataError, match=r"in \[0, 1\]"):
        FailureDebug(0, "a", "b", "c", -0.1, 5, 0.0, 1.5, 0.0)
    with pytest.raises(DataError, match="top_k"):
        render_report(inputs, top_k=0)


def _arm(name: str, k: int, mean: float) -> ArmResult:
    return ArmResult(name, k, [["x"] * k], [mean], mean, mean - 0.1, mean + 0.1,
                     0.0, -0.1, 0.1)


def test_sections_convert_from_the_analysis_results():
    bottom = CounterfactualResult("bottom", None, 3, "r", _arm("baseline", 0, 0.7),
                                  [_arm("bottom", 1, 0.75), _arm("bottom", 3, 0.8),
                                   _arm("bottom", 5, 0.8)])
    random = CounterfactualResult("random", None, 3, "r", _arm("baseline", 0, 0.7),
                                  [_arm("random", 1, 0.69)])
    equal = CounterfactualResult("bottom", None, 3, "r", _arm("baseline", 0, 0.7),
                                 [_arm("bottom", 1, 0.78)], equal_steps=True)
    section = CounterfactualSection.from_results([bottom, random, equal])
    assert [c.name for c in section.curves] == ["remove bottom (most harmful)", "remove random",
                                                "remove bottom, equal steps"]
    assert section.curves[0].k == (1, 3, 5) and section.curves[0].best == (3, 0.8)
    assert (section.baseline_mean, section.baseline_low) == (0.7, pytest.approx(0.6))
    other = CounterfactualResult("top", "cat", 3, "r", _arm("baseline", 0, 0.7), [])
    with pytest.raises(DataError, match="different target classes"):
        CounterfactualSection.from_results([bottom, other])
