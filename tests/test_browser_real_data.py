"""The app in headless Chromium on a Cityscapes-layout tree without instanceIds and an official
(mmcv-style) checkpoint: the Compare grid shows its prediction, the overlap filter says it is
unavailable, the Instance bank tab says official checkpoints carry no bank, and nothing is written
into the tree. Screenshots go to ``$DIDA_ARTIFACTS/screenshots`` (``real_data_*.png``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_app_api import _wait_ready
from test_browser import CHROMIUM, CHROMIUM_ARGS, TIMEOUT, _browser_or_skip, screenshot_dir
from test_official_checkpoints import save_mmcv_checkpoint, tiny_segmentor
from test_real_data import listing, write_cityscapes

from app.main import launch_app
from dida.data.overlap import NO_INSTANCES
from dida.studio import Studio

pytestmark = pytest.mark.browser


def test_cityscapes_and_official_checkpoint_in_chromium(tmp_path: Path) -> None:
    sync_api = _browser_or_skip()
    root = write_cityscapes(tmp_path / "cityscapes", count=2, instances=False)
    checkpoint = save_mmcv_checkpoint(
        tmp_path / "dida_gta2cs.pth", tiny_segmentor(0), tiny_segmentor(1)
    )
    before = listing(root)
    studio = Studio(
        root, [tmp_path / "none"], None, checkpoints=[str(checkpoint)], cache_dir=tmp_path / "cache"
    )
    demo, url = launch_app(studio, port=None, prevent_thread_lock=True, quiet=True)
    try:
        _wait_ready(url)
        _check_pages(sync_api, url, screenshot_dir())
    finally:
        studio.shutdown()
        demo.close()
    assert listing(root) == before, "the app wrote into the Cityscapes tree"


def _check_pages(sync_api, url: str, shots: Path) -> None:
    expect = sync_api.expect
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT)
        expect.set_options(timeout=TIMEOUT)
        try:
            page.goto(url)
            grid = page.locator("#compare-grid")
            expect(grid.get_by_text("ground truth")).to_be_visible()
            expect(grid.get_by_text("DIDA · dida_gta2cs").first).to_be_visible()
            page.get_by_label("only images with overlapping entities").check()
            expect(page.get_by_text(NO_INSTANCES).first).to_be_visible()
            page.screenshot(path=str(shots / "real_data_compare.png"), full_page=True)
            page.get_by_role("tab", name="Instance bank").click()
            note = page.get_by_text("Official checkpoints carry no instance bank").first
            expect(note).to_be_visible()
            page.screenshot(path=str(shots / "real_data_bank.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(shots / "real_data_failure.png"), full_page=True)
            raise
        finally:
            browser.close()
