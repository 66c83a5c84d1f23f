"""Issue 16 in headless Chromium: the overlap pair-type filter, a typed opacity value redrawing the
grid, previous / next image by the ← / → keys, and the Scores & confusion tab; screenshots under
``$DIDA_ARTIFACTS/screenshots`` (default ``artifacts/screenshots``). Same needs and skips as
``tests/test_browser.py`` (Debian's chromium and the playwright package)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_browser import TIMEOUT, _browser_or_skip, chromium_page, screenshot_dir
from test_browser import app_url as app_url  # the module-scoped server fixture

pytestmark = pytest.mark.browser


def test_overlaps_typed_opacity_keys_and_confusion_in_chromium(app_url: str) -> None:
    expect = _browser_or_skip().expect
    shots = screenshot_dir()
    with chromium_page(app_url, shots / "failure_scores.png") as page:
        expect(page.locator("#compare-grid").get_by_text("ground truth")).to_be_visible()
        _pair_filter(page, expect, shots)
        _typed_opacity(page, expect, shots)
        _keys(page, expect, shots)
        _confusion(page, expect, shots)


def _pair_filter(page, expect, shots: Path) -> None:
    """The pair-type dropdown fills with counts once the overlap index is built; a choice filters."""
    page.locator("#compare-pair input").click()
    option = page.get_by_role("option", name="images)", exact=False).first
    expect(option).to_be_visible()
    label = option.inner_text()
    count = int(label.rsplit("(", 1)[1].split()[0])
    option.click()
    expect(page.get_by_text(f"{count} of 4 images", exact=False)).to_be_visible()
    page.screenshot(path=str(shots / "compare_pair_filter.png"), full_page=True)


def _grid_source(page) -> str:
    return page.locator("#compare-grid image").nth(2).get_attribute("href") or ""


def _typed_opacity(page, expect, shots: Path) -> None:
    """Typing 0.1 into the opacity box (no slider drag, no blur) redraws the panels."""
    before = _grid_source(page)
    box = page.locator("#compare-opacity input[type=number]")
    box.fill("0.1")
    box.press("Enter")
    page.wait_for_function(
        "old => { const i = document.querySelectorAll('#compare-grid image')[2];"
        " return i && i.getAttribute('href') !== old; }",
        arg=before,
        timeout=TIMEOUT,
    )
    assert _grid_source(page) != before
    page.screenshot(path=str(shots / "compare_typed_opacity.png"), full_page=True)


def _click_source(page) -> str:
    return page.locator("#compare-click img").get_attribute("src") or ""


def _keys(page, expect, shots: Path) -> None:
    """→ shows the next image, ← the previous one (focus outside any text box)."""
    first = _click_source(page)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.keyboard.press("ArrowRight")
    expect(page.locator("#compare-click img")).not_to_have_attribute("src", first)
    second = _click_source(page)
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#compare-click img")).not_to_have_attribute("src", second)
    page.screenshot(path=str(shots / "compare_keys.png"), full_page=True)


def _confusion(page, expect, shots: Path) -> None:
    page.get_by_role("tab", name="Scores & confusion").click()
    expect(page.locator("#scores-status").get_by_text("sorted by", exact=False)).to_be_visible()
    plot = page.locator("#confusion-plot")
    expect(plot.get_by_text("confusion matrix", exact=False).first).to_be_visible()
    page.screenshot(path=str(shots / "scores_confusion.png"), full_page=True)
    page.locator("#confusion-lookalike input").check()
    expect(plot.get_by_text("look-alike classes", exact=False).first).to_be_visible()
    expect(plot.get_by_text("other", exact=True).first).to_be_visible()
    page.screenshot(path=str(shots / "scores_confusion_lookalike.png"), full_page=True)
