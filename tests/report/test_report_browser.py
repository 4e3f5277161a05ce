"""The report in a real browser: headless Chromium loads each page offline, every image
decodes, nothing is logged as an error, nothing is fetched, the layout fits a laptop screen.

Chromium is driven over the DevTools protocol on a pipe (see ``chromium.py``). Without a
Chromium executable the test is skipped, unless ``TRANSFER_INFLUENCE_REQUIRE_BROWSER`` is set
(as in CI), where it fails. Screenshots are saved under ``$TRANSFER_INFLUENCE_ARTIFACTS`` (else
pytest's temporary directory) and their paths printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from transfer_influence.report import build_report

from .cases import MISSING, planted_inputs
from .chromium import Chromium, PageCheck, find_chromium

LAPTOP_WIDTH = 1280


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        reason = "no chromium executable on PATH (Debian: apt-get install chromium)"
        if os.environ.get("TRANSFER_INFLUENCE_REQUIRE_BROWSER"):
            pytest.fail(f"TRANSFER_INFLUENCE_REQUIRE_BROWSER is set but there is {reason}")
        pytest.skip(reason)
    chromium = Chromium(executable)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    directory = os.environ.get("TRANSFER_INFLUENCE_ARTIFACTS")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        return Path(directory)
    return tmp_path_factory.mktemp("report-artifacts")


def _load(browser: Chromium, path: Path, artifacts: Path) -> PageCheck:
    page = browser.check_page(path.resolve().as_uri(), width=LAPTOP_WIDTH, height=800)
    screenshot = artifacts / f"{path.stem}.png"
    screenshot.write_bytes(page.screenshot)
    print(f"report {path} -> screenshot {screenshot}")
    return page


def _assert_clean(page: PageCheck) -> None:
    assert page.errors == []
    assert page.images, "the report has no images"
    broken = [image for image in page.images
              if not image["complete"] or image["width"] <= 0 or "error" in image]
    assert broken == []
    assert {url.split(":", 1)[0] for url in page.requests} <= {"file", "data"}
    assert page.scroll_width <= LAPTOP_WIDTH  # no horizontal scrolling on a laptop screen
    assert page.screenshot.startswith(b"\x89PNG")


@pytest.mark.parametrize("sections", [True, False], ids=["full", "bare"])
def test_report_renders_cleanly_in_chromium(browser, artifacts, sections):
    path = artifacts / f"report-{'full' if sections else 'bare'}.html"
    build_report(planted_inputs(sections=sections), path)
    page = _load(browser, path, artifacts)
    _assert_clean(page)
    for message, command in MISSING.items():
        assert (message in page.text) != sections
        assert (command in page.text) != sections
    assert "Influence heat-map" in page.text
    if sections:
        assert len(page.images) > 40  # tables, heat-map, curves, projections, failures


def test_the_check_catches_a_broken_page(browser, tmp_path):
    path = tmp_path / "broken.html"
    path.write_text(
        '<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
        '<img src="https://example.invalid/x.png">'
        '<script>console.error("boom"); notDefined();</script></body></html>')
    page = browser.check_page(path.as_uri())
    assert any("boom" in e for e in page.errors)
    assert any("notDefined" in e for e in page.errors)
    assert sum(image["width"] == 0 for image in page.images) == 2
    assert "https://example.invalid/x.png" in page.requests
    with pytest.raises(AssertionError):
        _assert_clean(page)
