"""Speed of the app against its targets (docs/BENCHMARKS.md, "App").

    python -m scripts.bench_app [--work /tmp/dida_bench] [--repeats 20]
    python -m scripts.bench_app --fresh-clone   # only measure 0. below

Prepares (once, under --work) SynthCity's default val split (256x512 images) and four 2-iteration runs
with the CPU model (mit_b0, D = 64) — source-only, ProDA-style, DAFormer-style and DIDA with K = 300 —
then prints:

0. (``--fresh-clone``) first launch of a fresh clone: the repository's files copied into a temp
   folder (no data/, runs/ or bytecode caches), ``python launch.py`` with its defaults (the shipped
   checkpoints; SynthCity's val split generated), timed to the first byte of a page, to the app's
   API answering and to headless Chromium showing the Compare panels (opened at the first byte:
   the progress page reloads itself into the app); the load average is printed beside;
1. fresh process → usable page: ``python launch.py`` started until headless Chromium shows the
   Compare panels (falls back to the first API answer when Chromium is missing);
2. Compare, one new image with four models (warm: models loaded; the image not predicted yet), and a
   re-render of a cached image (e.g. an opacity change);
3. pixel readout and tp-slider server time (handler + JSON of the figure);
4. UMAP of a K = 300 snapshot with umap warm (imported and compiled): the background fit and the
   view once the map is cached.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
METHODS = (("source_only", {}), ("proda", {}), ("daformer", {}), ("dida", {"bank_size": 300}))


def prepare(work: Path) -> tuple[Path, Path]:
    """(SynthCity root with the default val split, runs folder with four tiny-trained runs)."""
    from dida.data.synthcity import ensure_synthcity
    from dida.presets import preset_config
    from dida.train import train

    data = ensure_synthcity(work / "synthcity", "default", ("val",))
    tiny = ensure_synthcity(work / "synthcity-tiny", "tiny", ("source", "train", "val"))
    runs_dir = work / "runs"
    for method, options in METHODS:
        if (runs_dir / method / "model.safetensors").exists():
            continue
        cfg = preset_config("tiny", method)
        cfg = replace(
            cfg,
            model=preset_config("quick", method).model,
            data=replace(cfg.data, source_root=str(tiny), target_root=str(tiny), rcs=False),
            iters=2,
            method_options=options,
        )
        list(train(cfg, runs_dir / method))
    return data, runs_dir


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, min) seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def fresh_page_seconds(
    data: Path, runs_dir: Path, port: int, threads: int
) -> tuple[float, float, str]:
    """Seconds from starting ``launch.py`` to the server answering and to a usable Compare tab
    (the browser is already open, as a user's would be)."""
    if not Path("/usr/bin/chromium").exists():
        serving = _start_and_wait(data, runs_dir, port, threads, None)
        return serving, serving, "first API answer (no Chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run"],
        )
        times = _start_and_wait(data, runs_dir, port, threads, browser.new_page())
        browser.close()
    return (*times, "Chromium shows the Compare panels")


def _start_and_wait(data: Path, runs_dir: Path, port: int, threads: int, page):
    from playwright.sync_api import expect

    cmd = [sys.executable, "launch.py", "--data", str(data), "--runs", str(runs_dir),
           "--assets", str(runs_dir / "no-assets"), "--port", str(port), "--threads", str(threads)]  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_api(url)
        serving = time.perf_counter() - start
        if page is None:
            return serving
        page.goto(url)
        grid = page.locator("#compare-grid").get_by_text("ground truth")
        expect(grid).to_be_visible(timeout=120_000)
        return serving, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def fresh_clone(work: Path) -> Path:
    """The repository's files (tracked and new, not ignored: what a clone of this working tree
    holds) copied under ``work/clone``, without data/, runs/, caches or __pycache__."""
    clone = work / "clone"
    shutil.rmtree(clone, ignore_errors=True)
    clone.mkdir(parents=True)
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout  # fmt: skip
    for name in filter(None, listed.decode().split("\0")):
        source = REPO / name
        if source.is_file() and name.split("/")[0] not in ("data", "runs", "logs", "artifacts"):
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    return clone


def fresh_clone_seconds(
    work: Path, port: int, split_from: Path | None = None, screenshot: Path | None = None
) -> dict[str, float]:
    """First launch of a fresh clone: seconds to the first byte of a page, to the app's API and
    to Chromium showing the Compare panels; the 1-minute load average before and after.
    ``split_from``: a SynthCity root whose val split is copied into the clone's data folder first
    (what generating it at start costs, by difference). ``screenshot``: save the usable page there
    (after the timing)."""
    from playwright.sync_api import expect, sync_playwright

    if split_from is not None:
        check_val_split(Path(split_from))  # before the clone: a wrong path costs nothing
    clone, url, times = fresh_clone(work), f"http://127.0.0.1:{port}/", {}
    if split_from is not None:
        copy_val_split(Path(split_from), clone / "data" / "synthcity")
    times["load_before"] = os.getloadavg()[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--no-sandbox", "--headless", "--disable-gpu"])  # fmt: skip
        page, start = browser.new_page(), time.perf_counter()
        _watch_page(page, start, times)
        proc = subprocess.Popen([sys.executable, "launch.py", "--port", str(port)], cwd=clone,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        threading.Thread(target=_stage_lines, args=(proc, times), daemon=True).start()
        try:
            times["first_byte"] = _wait_page(url) - start
            page.goto(url)
            grid = page.locator("#compare-grid").get_by_text("ground truth")
            expect(grid).to_be_visible(timeout=600_000)
            times["usable"] = time.perf_counter() - start
            if screenshot is not None:
                page.wait_for_timeout(3000)  # the gallery and tables fill in after the grid
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            proc.terminate()
            proc.wait(timeout=120)
            browser.close()
    times["load_after"] = os.getloadavg()[0]
    return times


def check_val_split(root: Path) -> None:
    """Exit with a message unless ``root`` is a SynthCity root with a val split."""
    if not (root / "synthcity.json").is_file() or not (root / "target").is_dir():
        raise SystemExit(
            f"{root} is not a SynthCity root with a val split; give a clone's data/synthcity"
        )


def copy_val_split(root: Path, into: Path) -> None:
    """``root``'s manifest and val split (images and labels, no caches) copied to ``into``."""
    check_val_split(root)
    manifest = root / "synthcity.json"
    into.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "target", into / "target")
    shutil.copy2(manifest, into / manifest.name)


def _watch_page(page, start: float, times: dict) -> None:
    """Browser-side moments into ``times["browser"]`` (seconds from ``start``): each document
    loaded, the app's first config request, first queue call (the page's load events), and when
    Gradio's plotly chunk was asked for and had arrived."""
    events = times.setdefault("browser", [])

    def mark(what: str) -> None:
        events.append(f"[{time.perf_counter() - start:5.1f} s] {what}")

    def on_request(request) -> None:
        path = request.url.split("127.0.0.1", 1)[-1]
        if request.is_navigation_request() or ("/config" in path and "startup" not in path):
            mark(f"request {path[:60]}")
        elif "queue/join" in path and not any("queue call" in e for e in events):
            mark("first queue call (the page's load events)")
        elif "/assets/PlotlyPlot-" in path:
            mark("plotly chunk requested")

    def on_finished(request) -> None:
        if "/assets/PlotlyPlot-" in request.url:
            mark("plotly chunk arrived")

    page.on("request", on_request)
    page.on("requestfinished", on_finished)
    page.on("domcontentloaded", lambda _: mark("document parsed (DOMContentLoaded)"))
    page.on("load", lambda _: mark("document loaded (load)"))


def _stage_lines(proc: subprocess.Popen, times: dict) -> None:
    """The app's console lines ``[  t s] <stage>`` (its own clock, from ``launch.py``'s start)
    into ``times["stages"]``."""
    for line in proc.stdout:
        if line.startswith(("[", "DIDA Studio ready")):
            times.setdefault("stages", []).append(line.rstrip())


def _wait_page(url: str, timeout: float = 600.0) -> float:
    """``time.perf_counter()`` when ``url`` first answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def _wait_api(url: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}gradio_api/info", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def bench_handlers(data: Path, runs_dir: Path, repeats: int) -> list[str]:
    from app.views import compare, temperature, umap
    from dida.studio import Studio

    studio = Studio(data, [runs_dir], None)
    run_ids = [f"run:{m}" for m, _ in METHODS]
    args = ("overlay", 0.6, 0.0, "cityscapes", [], "")
    compare.grid(studio, 0, run_ids, *args)[0].to_json()  # models loaded, code paths warm
    fresh = iter(range(1, 10_000))
    new_image = timed(lambda: compare.grid(studio, next(fresh), run_ids, *args)[0].to_json(), 5)
    cached = timed(lambda: compare.grid(studio, 1, run_ids, *args)[0].to_json(), repeats)
    everything = timed(lambda: _all_compare(compare, studio, next(fresh), run_ids), 5)
    pixels = iter([(x * 37 % 512, x * 53 % 256) for x in range(1, 10_000)])
    readout = timed(lambda: compare.readout(studio, 1, run_ids, *next(pixels)), repeats)
    tps = iter([0.01 + 0.013 * i % 0.99 for i in range(10_000)])
    temperature.explain(studio, "run:dida", 1, 200, 100, 0.1, -1, "cityscapes")
    tp = timed(
        lambda: temperature.explain(studio, "run:dida", 1, 200, 100, next(tps), -1, "cityscapes")[
            0
        ].to_json(),
        repeats,
    )
    umap_lines = bench_umap(studio, umap)
    return [
        f"Compare, new image, 4 models (grid):      {new_image[0]:.3f} s median, {new_image[1]:.3f} s min",
        f"Compare, new image, all outputs:          {everything[0]:.3f} s median, {everything[1]:.3f} s min",
        f"Compare, cached image re-render (grid):   {cached[0]:.3f} s median, {cached[1]:.3f} s min",
        f"pixel readout, 4 models:                  {1000 * readout[0]:.1f} ms median, {1000 * readout[1]:.1f} ms min",
        f"tp slider (explain + figure JSON):        {1000 * tp[0]:.1f} ms median, {1000 * tp[1]:.1f} ms min",
        *umap_lines,
    ]  # fmt: skip


def _all_compare(compare, studio, key, run_ids) -> None:
    compare.grid(studio, key, run_ids, "overlay", 0.6, 0.0, "cityscapes", [], "")[0].to_json()
    compare.diff(studio, key, run_ids[0], run_ids[-1], "cityscapes")
    compare.iou_table(studio, key, run_ids)


def bench_umap(studio, umap) -> list[str]:
    """Warm umap (as the app does at start), then time one K = 300 map and the cached view."""
    from dida.analysis import Projector

    start = time.perf_counter()
    Projector().warm_up()
    warm = time.perf_counter() - start
    snap = studio.snapshot("run:dida", -1)
    assert len(snap.labels) == 300, "the DIDA bench run must have K = 300"
    key = studio._projection_key("run:dida", -1, None, 0)
    fit = timed(
        lambda: (
            studio._projectors.pop("run:dida", None),
            studio._fit_umap("run:dida", studio.points("run:dida"), key),
        ),
        3,
    )
    view = timed(
        lambda: umap.project(
            studio, "run:dida", None, "class", False, 300, "UMAP", 0, "cityscapes"
        )[0].to_json(),
        5,
    )
    return [
        f"umap import + numba compile (background): {warm:.1f} s",
        f"UMAP of a K=300 snapshot, warm (fit):     {fit[0]:.2f} s median, {fit[1]:.2f} s min",
        f"UMAP view, map cached (handler + JSON):   {1000 * view[0]:.1f} ms median",
    ]  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/dida_bench"))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--port", type=int, default=7895)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (launch.py's default)")
    p.add_argument("--fresh-clone", action="store_true", help="only the fresh-clone first launch")
    p.add_argument("--split-from", type=Path, default=None,
                   help="with --fresh-clone: copy this SynthCity root's val split into the clone first")  # fmt: skip
    p.add_argument("--screenshot", type=Path, default=None,
                   help="with --fresh-clone: save the usable page (full page) as this PNG")  # fmt: skip
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.fresh_clone:
        t = fresh_clone_seconds(args.work, args.port, args.split_from, args.screenshot)
        print(f"fresh clone -> first byte (progress page): {t['first_byte']:.1f} s")
        print(f"fresh clone -> usable page (Compare):      {t['usable']:.1f} s")
        print("the app's stages (its own clock):", *t.get("stages", []), sep="\n  ")
        print("the browser (the bench's clock):", *t.get("browser", []), sep="\n  ")
        print(
            f"load average (1 min) before / after:      {t['load_before']:.1f} / {t['load_after']:.1f}"
        )
        return
    data, runs_dir = prepare(args.work)
    serving, usable, how = fresh_page_seconds(data, runs_dir, args.port, args.threads)
    print(f"fresh process -> server answering:        {serving:.1f} s")
    print(f"fresh process -> usable page:             {usable:.1f} s ({how})")
    for line in bench_handlers(data, runs_dir, args.repeats):
        print(line)


if __name__ == "__main__":
    main()
