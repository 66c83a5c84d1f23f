"""What a new user tripped over, in headless Chromium (issue 16 §5): ▶ play at the last bank snapshot
rewinds and advances, the UMAP radio says what is drawn, Stop is disabled once the session's job has
finished, and a fresh ``python launch.py`` answers with a progress page before the Studio is ready,
then turns into the app. Screenshots go to ``$DIDA_ARTIFACTS/screenshots`` (default artifacts/).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT,
    _browser_or_skip,
    app_url,
    chromium_page,
    screenshot_dir,
)
from test_studio import FIXTURE_RUNS, fixture_runs

REPO = Path(__file__).resolve().parents[1]
FIRST_LAUNCH_TIMEOUT = 400_000
"""Milliseconds for a fresh process to become the app (imports and generation on a busy host)."""

pytestmark = pytest.mark.browser
__all__ = ["app_url"]  # the module-scoped server fixture of test_browser, used here too


@pytest.fixture
def page(app_url: str):
    with chromium_page(app_url) as page:
        yield page


def _expect():
    return _browser_or_skip().expect


def test_play_at_the_last_snapshot_rewinds_and_advances(page) -> None:
    expect = _expect()
    page.get_by_role("tab", name="Instance bank").click()
    summary = page.locator("#tab-bank")
    expect(summary.get_by_text("Snapshot 3 of 3")).to_be_visible()
    page.locator("#bank-play").click()
    expect(summary.get_by_text("Snapshot 1 of 3")).to_be_visible()
    expect(summary.get_by_text("Snapshot 3 of 3")).to_be_visible()  # advanced to the end
    page.screenshot(path=str(screenshot_dir() / "bank_play.png"), full_page=True)


def test_umap_radio_says_what_is_drawn(page) -> None:
    expect = _expect()
    page.get_by_role("tab", name="UMAP").click()
    radio = page.locator("#umap-method")
    expect(page.locator("#umap-plot").get_by_text("UMAP of 38 points")).to_be_visible()
    expect(radio).to_contain_text("projection — showing UMAP")
    page.locator("#umap-method").get_by_text("PCA", exact=True).click()
    expect(page.locator("#umap-plot").get_by_text("PCA of 38 points")).to_be_visible()
    expect(radio).to_contain_text("projection — showing PCA")
    expect(radio).not_to_contain_text("showing UMAP")
    page.screenshot(path=str(screenshot_dir() / "umap_label.png"), full_page=True)


def test_stop_is_disabled_once_the_job_has_finished(page) -> None:
    expect = _expect()
    page.get_by_role("tab", name="Train").click()
    stop = page.locator("#train-stop")
    expect(stop).to_be_disabled()  # nothing runs yet
    page.get_by_label("iterations").fill("1")
    page.locator("#train-start").click()
    status = page.locator("#train-status")
    expect(status.get_by_text("finished", exact=False)).to_be_visible()
    expect(stop).to_be_disabled()
    expect(status).not_to_contain_text("stop requested")
    page.screenshot(path=str(screenshot_dir() / "train_finished_stop.png"), full_page=True)


# --- first launch ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_answer(url: str, deadline: float) -> str:
    """The body of the first page the port serves."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.read().decode()
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise TimeoutError(url)


def test_first_launch_answers_with_progress_then_becomes_the_app(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path
) -> None:
    sync_api = _browser_or_skip()
    runs_dir = tmp_path / "runs"
    for method, _, _ in FIXTURE_RUNS:
        shutil.copytree(fixture_runs(tmp_path_factory, synthcity_tiny) / method, runs_dir / method)
    port, data = _free_port(), tmp_path / "fresh" / "synthcity"  # no data yet: a fresh clone
    cmd = [sys.executable, "launch.py", "--data", str(data), "--data-preset", "tiny", "--runs",
           str(runs_dir), "--assets", str(tmp_path / "no-assets"), "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        first = _first_answer(url, time.monotonic() + FIRST_LAUNCH_TIMEOUT / 1000)
        assert "DIDA Studio is starting" in first  # the page answers before the Studio is ready
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            _watch_progress_then_app(page, sync_api.expect)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _watch_progress_then_app(page, expect) -> None:
    """Shot of the progress page (if still shown), then the app after its own reload."""
    shots = screenshot_dir()
    if "starting" in page.title():
        expect(page.get_by_text("Step ", exact=False)).to_be_visible(timeout=TIMEOUT)
        page.screenshot(path=str(shots / "first_launch_progress.png"), full_page=True)
    grid = page.locator("#compare-grid").get_by_text("ground truth")
    expect(grid).to_be_visible(timeout=FIRST_LAUNCH_TIMEOUT)
    page.screenshot(path=str(shots / "first_launch_app.png"), full_page=True)
