"""The app in headless Chromium: every tab renders, a Compare click gives a readout, the tp slider
re-explains, a tiny training run starts and stops; a screenshot of each tab is saved for review
(``$DIDA_ARTIFACTS/screenshots``, default ``artifacts/screenshots``).

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` package (never
``playwright install``). Without them the test skips, or fails when ``DIDA_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_app_api import _wait_ready
from test_studio import private_studio

from app.main import launch_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
TABS = ("Compare", "Instance bank", "Temperature", "UMAP", "Long tail", "Train")
TIMEOUT = 60_000
"""Milliseconds to wait for a view (the machine is shared: generous)."""

pytestmark = pytest.mark.browser


def _browser_or_skip():
    """The playwright module, or skip (fail under DIDA_REQUIRE_BROWSER=1) saying what is missing."""
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install -y chromium)"]
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright Python package (pip install playwright)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("DIDA_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (DIDA_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return sync_api


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("DIDA_ARTIFACTS", "artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path):
    _browser_or_skip()  # before starting a server that would not be used
    studio = private_studio(tmp_path_factory, synthcity_tiny)
    demo, url = launch_app(studio, port=None, prevent_thread_lock=True, quiet=True)
    _wait_ready(url)
    yield url
    studio.shutdown()
    demo.close()


@contextmanager
def chromium_page(
    url: str, failure_shot: Path | None = None, requests: list[str] | None = None
) -> Iterator:
    """A 1400 x 1000 headless Chromium page at ``url`` (timeouts set; a screenshot to
    ``failure_shot`` when the block raises; every URL the page requests appended to ``requests``
    from the first one); the browser closes afterwards."""
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT)
        sync_api.expect.set_options(timeout=TIMEOUT)
        if requests is not None:
            page.on("request", lambda request: requests.append(request.url))
        try:
            page.goto(url)
            yield page
        except Exception:
            if failure_shot is not None:
                page.screenshot(path=str(failure_shot), full_page=True)
            raise
        finally:
            browser.close()


def test_every_tab_in_headless_chromium(app_url: str) -> None:
    expect = _browser_or_skip().expect
    shots = screenshot_dir()
    with chromium_page(app_url, shots / "failure.png") as page:
        _compare(page, expect, shots)
        for tab in TABS[1:]:
            _open_tab(page, tab)
            views = {"Temperature": _temperature, "UMAP": _umap, "Train": _train}
            views.get(tab, _view)(page, expect, shots, tab)
    assert {f"{_slug(t)}.png" for t in TABS} <= {p.name for p in shots.iterdir()}


def test_the_page_fetches_plotly_before_its_first_event(app_url: str) -> None:
    """The head's preload asks for Gradio's plotly chunk before the page's load events reach the
    queue (it used to wait for the first figure), and only once: the frontend's own import reuses
    it, and the Compare grid draws."""
    expect, requests = _browser_or_skip().expect, []
    with chromium_page(app_url, requests=requests) as page:
        expect(page.locator("#compare-grid").get_by_text("ground truth")).to_be_visible()
    chunks = [i for i, url in enumerate(requests) if "/assets/PlotlyPlot-" in url]
    first_event = next(i for i, url in enumerate(requests) if "/queue/join" in url)
    assert len(chunks) == 1 and chunks[0] < first_event


def _slug(tab: str) -> str:
    return tab.lower().replace(" ", "_")


def _open_tab(page, tab: str) -> None:
    page.get_by_role("tab", name=tab).click()


def _compare(page, expect, shots: Path) -> None:
    grid = page.locator("#compare-grid")
    expect(grid.get_by_text("ground truth")).to_be_visible()
    expect(grid.get_by_text("DIDA · dida")).to_be_visible()
    image = page.locator("#compare-click img")
    expect(image).to_be_visible()
    box = image.bounding_box()
    image.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    readout = page.locator("#compare-readout")
    expect(readout.get_by_text("ground truth")).to_be_visible()
    expect(readout.get_by_text("DIDA · dida (mIoU 2.3) · finished")).to_be_visible()
    page.screenshot(path=str(shots / "compare.png"), full_page=True)


def _view(page, expect, shots: Path, tab: str) -> None:
    where, text = {
        "Instance bank": ("#tab-bank", "Snapshot 3 of 3"),
        "Long tail": ("#longtail-iou", "DIDA · dida"),
    }[tab]
    expect(page.locator(where).get_by_text(text).first).to_be_visible()
    page.screenshot(path=str(shots / f"{_slug(tab)}.png"), full_page=True)


def _umap(page, expect, shots: Path, tab: str) -> None:
    """The map draws with plotly.js; a lasso around points comes back as a selection summary."""
    expect(page.locator("#umap-plot").get_by_text("UMAP of 38 points")).to_be_visible()
    canvas = page.locator("#umap-plot .umap-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x0, y0, x1, y1 = box["x"] + 100, box["y"] + 60, box["x"] + 600, box["y"] + 400
    page.mouse.move(x0, y0)
    page.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    expect(page.get_by_text("points selected")).to_be_visible()
    page.screenshot(path=str(shots / f"{_slug(tab)}.png"), full_page=True)


def _temperature(page, expect, shots: Path, tab: str) -> None:
    summary = page.locator("#tp-summary")
    image = page.locator("#tp-image img")
    expect(image).to_be_visible()
    box = image.bounding_box()
    image.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.6})
    expect(summary).to_contain_text("tp = 0.1")
    expect(summary).not_to_contain_text("(x=0, y=0)")
    tp = page.locator("#tp-slider input[type=number]")
    tp.fill("0.5")
    tp.press("Enter")
    expect(summary).to_contain_text("tp = 0.5")
    page.screenshot(path=str(shots / f"{_slug(tab)}.png"), full_page=True)


def _train(page, expect, shots: Path, tab: str) -> None:
    iterations = page.get_by_label("iterations")
    iterations.fill("300")
    page.locator("#train-start-from input").click()
    page.get_by_role("option", name="DAFormer-style · daformer", exact=False).click()
    page.locator("#train-start").click()
    status = page.locator("#train-status")
    expect(status.get_by_text("running", exact=False)).to_be_visible()
    expect(status.get_by_text("model.init_weights=", exact=False)).to_be_visible()
    expect(page.locator("#train-progress").get_by_text("/ 300", exact=False)).to_be_visible()
    page.locator("#train-stop").click()
    expect(status.get_by_text("stopped", exact=False)).to_be_visible()
    page.screenshot(path=str(shots / f"{_slug(tab)}.png"), full_page=True)
