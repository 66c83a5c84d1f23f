"""Slot provenance in headless Chromium (issue 16 §4): a bank slot shows the crop of its source image,
a lasso on the UMAP map lists the selected slots and target pixels with their crops, and "Open in
Compare" switches to the Compare tab with that image. Screenshots go to ``$DIDA_ARTIFACTS/screenshots``
(default artifacts/). Same needs and skips as ``tests/test_browser.py``."""

from __future__ import annotations

import re

import pytest
from test_browser import _browser_or_skip, app_url, chromium_page, screenshot_dir

pytestmark = pytest.mark.browser
__all__ = ["app_url"]  # the module-scoped server fixture of test_browser, used here too


@pytest.fixture
def page(app_url: str):
    with chromium_page(app_url) as page:
        yield page


def test_bank_slot_shows_its_source_crop(page) -> None:
    expect = _browser_or_skip().expect
    page.get_by_role("tab", name="Instance bank").click()
    expect(page.locator("#tab-bank").get_by_text("Snapshot 3 of 3")).to_be_visible()
    page.locator("#bank-table").get_by_role("gridcell", name="truck").first.click()  # its row
    expect(page.locator("#bank-slot-detail")).to_contain_text("Source image #")
    expect(page.locator("#bank-slot-detail")).to_contain_text("region x")
    expect(page.locator("#bank-slot-crop img")).to_be_visible()
    page.screenshot(path=str(screenshot_dir() / "bank_slot_source.png"), full_page=True)


def _lasso(page) -> None:
    """A closed lasso over most of the plot area."""
    canvas = page.locator("#umap-plot .umap-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0, x1, y1 = box["x"] + 90, box["y"] + 70, box["x"] + box["width"] - 160, box["y"] + 500
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        page.mouse.move(x, y, steps=10)
    page.mouse.up()


def test_umap_lasso_lists_slots_and_pixels_and_opens_compare(page) -> None:
    expect = _browser_or_skip().expect
    page.get_by_role("tab", name="UMAP").click()
    plot = page.locator("#umap-plot")
    expect(plot.get_by_text("of 38 points")).to_be_visible()
    page.get_by_label("add target pixels of the current image").check()
    expect(plot.get_by_text("of 338 points")).to_be_visible()
    _lasso(page)
    note = page.locator("#umap-listing-note")
    expect(note).to_contain_text(re.compile(r"[1-9]\d* bank slots and [1-9]\d* target pixels"))
    expect(note).to_contain_text(
        re.compile(r"crops of the first [1-9]\d* slots and [1-9]\d* pixels")
    )
    listing = page.locator("#umap-listing")
    expect(listing.get_by_role("gridcell", name="bank slot").first).to_be_visible()
    expect(page.locator("#umap-crops img").nth(1)).to_be_visible()
    page.locator("#umap-listing").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_dir() / "umap_selection_listing.png"), full_page=True)
    page.locator("#umap-open").click()
    expect(page.get_by_role("tab", name="Compare")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#compare-grid").get_by_text("ground truth")).to_be_visible()
    page.screenshot(path=str(screenshot_dir() / "umap_opened_in_compare.png"), full_page=True)


@pytest.mark.parametrize("key", ["Enter", None])
def test_a_slot_number_typed_in_the_box_shows_that_slot(page, key: str | None) -> None:
    expect = _browser_or_skip().expect
    page.get_by_role("tab", name="Instance bank").click()
    expect(page.locator("#tab-bank").get_by_text("Snapshot 3 of 3")).to_be_visible()
    box = page.locator("#bank-slot input")
    box.click()
    box.press_sequentially("5")
    if key is not None:  # None: the user types and waits
        box.press(key)
    expect(page.locator("#bank-slot-detail")).to_contain_text("Slot 5")
