"""Start DIDA Studio in the browser.

    python launch.py [--data DIR] [--runs DIR] [--assets DIR] [--host 127.0.0.1] [--port 7860]

Opens SynthCity's target val images under ``--data`` (only the val split is generated on first
launch, a few seconds), the shipped checkpoints under ``--assets/checkpoints`` and every run directory
under ``--runs`` (finished or in progress). Nothing is downloaded; the server listens on localhost
unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python launch.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default="data/synthcity", help="SynthCity root (val split generated if missing)"
    )
    p.add_argument(
        "--runs", action="append", help="folder of run directories (repeatable; default runs)"
    )
    p.add_argument("--assets", default="assets", help="folder holding checkpoints/<name>/")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes the app)"
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--data-preset", default="default", help="SynthCity preset of --data")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (1 keeps a shared 2-core machine responsive; a forward pass "
        "stalls with 2 threads under load, see docs/BENCHMARKS.md)",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    import torch

    from dida.analysis import numba_cache_dir
    from dida.data.synthcity import read_manifest
    from dida.studio import Studio

    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    if read_manifest(args.data) is None:
        print(f"generating SynthCity's val split under {args.data} (first launch, a few seconds)…")
    try:
        studio = Studio(
            args.data, args.runs or ["runs"], args.assets, args.device, args.data_preset
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from app import launch_app

    featured = studio.featured_runs()
    studio.prefetch(featured)  # after the imports: the GIL they hold would slow the forward passes
    _, url = launch_app(studio, args.host, args.port, prevent_thread_lock=True)
    print(
        f"DIDA Studio ready at {url} ({time.perf_counter() - start:.1f} s); Ctrl+C stops it",
        flush=True,
    )
    threading.Thread(target=_background, args=(studio, featured), daemon=True).start()
    _block(studio)
    return 0


def _background(studio, featured: list[str]) -> None:
    """Slow preparations, started once the first page's predictions are ready so they do not
    compete with it: the overlap index, source class statistics and the UMAP warm-up."""
    studio.worker.wait(("prefetch", tuple(featured), 0), timeout=300)
    studio.index_overlaps()
    studio.source_stats()
    studio.warm_up()


def _block(studio) -> None:
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        studio.shutdown()
        print("stopped")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
