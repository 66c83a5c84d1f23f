"""First launch answers at once: a progress page while the app prepares, then the app.

A fresh clone spends tens of seconds before the Blocks can be built (importing torch and gradio,
generating SynthCity's val split, opening runs and checkpoints). ``serve_progress`` answers on the
app's port within a second with a small page served by the standard library (``http.server``, so
nothing heavy is imported first): it shows the current stage and reloads itself into the app once
the app has taken over the port. ``Readiness`` is the state that page reads; ``open_app`` reports
its stages to it.

The page names stages and counts only, never paths, so it is safe on a login-protected host.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STAGES = (
    "loading libraries (torch, gradio) and preparing the val images",
    "opening runs and building the views",
    "starting the app",
)
"""The preparation's stages, in order (the page shows "step i of 3")."""
GENERATOR_NICE = 10
"""Niceness of the val split's generator processes: the pages served meanwhile come first."""
VAL_IMAGES = ("target", "leftImg8bit", "val")
"""Where a SynthCity root keeps its val images (their count is the generation's progress)."""


class Readiness:
    """Where the app's preparation stands: stage, detail, elapsed time, ready (thread-safe)."""

    def __init__(
        self, data_root: str | Path | None = None, echo: Callable[[str], Any] | None = None
    ) -> None:
        """``echo``: also report each stage with its elapsed time there (the console)."""
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._stage, self._ready = STAGES[0], False
        self._val_dir = None if data_root is None else Path(data_root, *VAL_IMAGES)
        self._echo = echo
        self._say(f"{STAGES[0]} (step 1 of {len(STAGES)})")

    def enter(self, stage: str) -> None:
        """Move to ``stage`` (one of ``STAGES``)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
        with self._lock:
            self._stage = stage
        self._say(f"{stage} (step {STAGES.index(stage) + 1} of {len(STAGES)})")

    def done(self) -> None:
        """The app is serving: the page may reload into it."""
        with self._lock:
            self._ready = True
        self._say("the app is serving")

    def _say(self, text: str) -> None:
        if self._echo is not None:
            self._echo(f"[{time.monotonic() - self._start:5.1f} s] {text}")

    def state(self) -> dict[str, Any]:
        """JSON-ready: stage, step, steps, detail, elapsed_s, ready."""
        with self._lock:
            stage, ready = self._stage, self._ready
        return {
            "stage": stage, "step": STAGES.index(stage) + 1, "steps": len(STAGES),
            "detail": self._detail(stage), "elapsed_s": round(time.monotonic() - self._start, 1),
            "ready": ready,
        }  # fmt: skip

    def _detail(self, stage: str) -> str:
        if stage != STAGES[0] or self._val_dir is None or not self._val_dir.is_dir():
            return ""
        written = sum(1 for _ in self._val_dir.rglob("*.png"))
        return f"{written} val images written (first launch only)" if written else ""


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>DIDA Studio — starting</title>
<style>
body {font-family: system-ui, sans-serif; margin: 15vh auto; max-width: 36em; color: #555;}
progress {width: 100%; height: 14px;}
</style></head>
<body><h2>DIDA Studio is starting…</h2>
<p id="stage">preparing</p><progress id="bar" value="0" max="3"></progress>
<p id="detail"></p>
<p><small>First launch on a fresh clone generates SynthCity's val split and compiles code once;
this page turns into the app by itself.</small></p>
<script>
const el = (id) => document.getElementById(id);
async function poll() {
  try {
    const r = await fetch('/startup/state', {cache: 'no-store'});
    const s = r.ok ? await r.json().catch(() => null) : null;
    if (!s || s.steps === undefined) { location.reload(); return; }  // the app (or its login)
    el('stage').textContent = `Step ${s.step} of ${s.steps}: ${s.stage} (${s.elapsed_s} s)`;
    el('bar').value = s.step - 0.5; el('detail').textContent = s.detail;
  } catch (e) { el('detail').textContent = 'the app is taking over this address…'; }
  setTimeout(poll, 200);
}
poll();
</script></body></html>
"""
"""The progress page: polls ``/startup/state``; once anything else answers there (the app's 404, or
its login page), it reloads into the app."""


def _handler(readiness: Readiness) -> type[BaseHTTPRequestHandler]:
    class Progress(BaseHTTPRequestHandler):
        """``/startup/state`` → JSON of ``readiness``; the app's API (``/gradio_api/...``) → 503
        (clients waiting for the app keep waiting); any other GET → the progress page."""

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?")[0]
            is_state = path == "/startup/state"
            body = (json.dumps(readiness.state()) if is_state else PAGE).encode()
            self.send_response(503 if path.startswith("/gradio_api/") else 200)
            self.send_header("Content-Type", "application/json" if is_state else "text/html")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            """Quiet: the console shows only the app's own lines."""

    return Progress


class ProgressServer(ThreadingHTTPServer):
    """The progress page's server (IPv4 or IPv6 by the host's form; daemon request threads)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, readiness: Readiness) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host.strip("[]"), port), _handler(readiness))


def serve_progress(host: str, port: int, readiness: Readiness) -> ProgressServer:
    """Serve the progress page on (host, port) in a daemon thread; ``stop`` frees the port."""
    server = ProgressServer(host, port, readiness)
    threading.Thread(target=server.serve_forever, name="progress-page", daemon=True).start()
    return server


def stop(server: ProgressServer) -> None:
    """Stop the progress page and free its port for the app."""
    server.shutdown()
    server.server_close()


def open_app(args: Any, auth: Any, open_studio: Callable[[Any], Any]) -> tuple | None:
    """Answer on ``args.host:args.port`` at once with the progress page; meanwhile generate a fresh
    SynthCity val split (in a thread, its worker processes overlapping the imports at niceness
    ``GENERATOR_NICE``), import the app, open the Studio (``open_studio(args)``: None after saying
    why) as soon as the tree's manifest exists — the val images are read as they are written — and
    build the views; then hand the port to the app. Returns (studio, featured run ids, demo), or
    None when refused."""
    readiness = Readiness(args.data, echo=lambda line: print(line, flush=True))
    try:
        server = serve_progress(args.host, args.port, readiness)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}", file=sys.stderr)
        return None
    try:
        prepared = _prepare(args, open_studio, readiness)
    finally:
        stop(server)
    if prepared is None:
        return None
    readiness.enter(STAGES[-1])
    from app.main import launch_app

    studio, featured, demo = prepared
    launch_app(
        studio, args.host, args.port, prevent_thread_lock=True, quiet=True, auth=auth, demo=demo
    )
    readiness.done()
    return prepared


def _prepare(args: Any, open_studio: Callable[[Any], Any], readiness: Readiness) -> tuple | None:
    """(studio, featured run ids, built demo), or None when the Studio was refused."""
    generating = threading.Thread(target=_generate_val, args=(args,), name="val-split", daemon=True)
    generating.start()
    from app.main import build_app  # gradio, torch, plotly: the long imports of a fresh process

    _wait_for_manifest(Path(args.data), generating)
    readiness.enter(STAGES[1])
    args.val_writing = generating.is_alive  # the Studio reads the split as it is written
    studio = open_studio(args)
    if studio is None:
        return None
    featured = studio.featured_runs()
    studio.prefetch(featured)
    studio.precompute(featured)
    return studio, featured, build_app(studio)


def _wait_for_manifest(root: Path, generating: threading.Thread) -> None:
    """Return once the generator has written the tree's manifest (the split's names are then
    known: the Studio opens while the images are written) or has finished."""
    while generating.is_alive() and not (root / "synthcity.json").exists():
        generating.join(0.05)


def _generate_val(args: Any) -> None:
    """Generate the val split of a new SynthCity root early (only a missing folder or one this
    project generated: never anything written into a folder of another dataset). Errors are left
    to ``open_studio``, which says what to do."""
    root = Path(args.data)
    if root.exists() and not (root / "synthcity.json").exists():
        return
    from dida.data.synthcity import ensure_synthcity

    try:
        ensure_synthcity(root, args.data_preset, ("val",), nice=GENERATOR_NICE)
    except (ValueError, OSError):
        return
