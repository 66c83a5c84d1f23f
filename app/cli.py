"""Start DIDA Studio in the browser (``dida-studio`` or ``python launch.py``).

    dida-studio [--data DIR] [--runs DIR] [--assets DIR] [--checkpoint PATH[:teacher]]
                [--source DIR] [--cache DIR] [--host 127.0.0.1] [--port 7860]

Opens the val images under ``--data`` — a SynthCity root (only its val split is generated on first
launch, a few seconds) or a Cityscapes root (read only: nothing is written into it; caches go to
``--cache`` or ``~/.cache/dida-studio``) — the shipped checkpoints under ``--assets/checkpoints``,
every run directory under ``--runs`` (finished or in progress) and each ``--checkpoint`` (an
official DAFormer / DIDA / MIC ``.pth``: its student, or its EMA teacher with ``PATH:teacher``; or
a run folder). ``--source`` names the GTA5 / SYNTHIA / SynthCity source data of the long-tail view.
Nothing is downloaded; the server listens on localhost
unless ``--host`` says otherwise, and then only with a login (``DIDA_STUDIO_AUTH`` or
``--auth-file``; see docs/SECURITY.md).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from app.auth import AuthError, Credentials, credentials_for, is_loopback
from dida.argtypes import positive_int

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def command_name() -> str:
    """How the user started the app: ``python launch.py`` or the ``dida-studio`` command."""
    return "python launch.py" if Path(sys.argv[0]).name == "launch.py" else "dida-studio"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of the app (``argv`` None: ``sys.argv[1:]``)."""
    p = argparse.ArgumentParser(prog=command_name(), description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", default="data/synthcity",
        help="SynthCity root (val split generated if missing) or Cityscapes root (read only)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint", action="append", default=[], metavar="PATH[:teacher]",
        help="official mmseg .pth (student; PATH:teacher for the EMA teacher) or run folder "
        "(repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--source", help="GTA5, SYNTHIA or SynthCity folder of the long-tail source statistics"
    )
    p.add_argument(
        "--cache", help="cache folder for a data root the app does not own "
        "(default ~/.cache/dida-studio/<name>-<hash of the path>)",
    )  # fmt: skip
    p.add_argument(
        "--runs", action="append", help="folder of run directories (repeatable; default runs)"
    )
    p.add_argument("--assets", default="assets", help="folder holding checkpoints/<name>/")
    _serving_args(p)
    return p.parse_args(argv)


def _serving_args(p: argparse.ArgumentParser) -> None:
    """Where and how the app serves: address, credentials, port, device, threads."""
    p.add_argument(
        "--host", default="127.0.0.1",
        help="address to listen on; any non-loopback address (0.0.0.0 exposes the app) needs "
        "credentials from DIDA_STUDIO_AUTH=user:password[,...] or --auth-file",
    )  # fmt: skip
    p.add_argument(
        "--auth-file",
        help="file of user:password lines (mode 600) required to log in to the app",
    )
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--data-preset", default="default", help="SynthCity preset of --data")
    p.add_argument(
        "--threads", type=positive_int, default=1,
        help="torch CPU threads (1 keeps a shared 2-core machine responsive; a forward pass "
        "stalls with 2 threads under load, see docs/BENCHMARKS.md)",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Serve the app until Ctrl+C or SIGTERM; 2 when the arguments or credentials are refused."""
    args = parse_args(argv)
    try:
        auth = credentials_for(args.host, args.port, args.auth_file, command=command_name())
    except AuthError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    from app.startup import open_app  # answers on the port at once with a progress page

    opened = open_app(args, auth, _open_studio)
    if opened is None:
        return 2
    studio, featured, demo = opened
    seconds = time.perf_counter() - start
    print(f"{ready_line(args.host, args.port, auth)} ({seconds:.1f} s)", flush=True)
    stopping = threading.Event()
    threading.Thread(target=_background, args=(studio, featured, stopping), daemon=True).start()
    _block(studio, stopping, demo)
    return 0


def run() -> None:
    """The console entry point (``dida-studio``, ``python launch.py``): ``main``, then end the
    process at once. Once the studio has stopped (its training job at a checkpoint), what may
    still run in background threads — a UMAP numba compile, a statistics pass — writes nothing
    or writes atomically, and joining it made Ctrl+C take 9-35 s; so the process does not wait
    (its download folder is removed first: ``os._exit`` skips ``atexit``)."""
    code = main()
    from app.views.exports import remove_exports  # os._exit skips atexit: the downloads go now

    remove_exports()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _open_studio(args: argparse.Namespace):
    """The engine façade over ``--data``, ``--runs`` and ``--assets``; None (after saying why)
    when a folder is refused."""
    import torch

    from dida.analysis import numba_cache_dir
    from dida.data.synthcity import read_manifest
    from dida.studio import Studio

    torch.set_num_threads(args.threads)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    if read_manifest(args.data) is None and not Path(args.data, "leftImg8bit").is_dir():
        print(f"opening {args.data} (a new SynthCity root's val split is generated: a few seconds)")
    try:
        return Studio(
            args.data, args.runs or ["runs"], args.assets, args.device, args.data_preset,
            checkpoints=args.checkpoint, source=args.source, cache_dir=args.cache,
            writing=getattr(args, "val_writing", None),
        )  # fmt: skip
    except ValueError as err:  # DatasetError, CheckpointError, RunError: all say what to do
        print(f"error: {err}", file=sys.stderr)
        return None


def bound_url(host: str, port: int) -> str:
    """The address the server is bound to, as a URL (IPv6 in brackets)."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"http://{host}:{port}"
    return f"http://[{literal}]:{port}" if literal.version == 6 else f"http://{literal}:{port}"


def ready_line(host: str, port: int, auth: Credentials | None) -> str:
    """What the console says once the server answers: the bound URL, who can reach it, the login."""
    url = bound_url(host, port)
    if is_loopback(host):
        reach = "this machine only"
    elif host.strip("[]") in ("0.0.0.0", "::"):
        reach = f"every address of this machine: open http://<this machine's name or IP>:{port}"
    else:
        reach = "other machines on the network"
    users = f"login required ({len(auth)} user(s))" if auth else "no login"
    return f"DIDA Studio ready at {url} — reachable from {reach}; {users}; Ctrl+C stops it"


def _background(studio, featured: list[str], stopping: threading.Event) -> None:
    """Slow preparations, started once the first page's predictions are ready so they do not
    compete with it: the overlap index, source class statistics and the UMAP warm-up."""
    studio.wait_prefetch(featured)
    try:
        for start in (studio.index_overlaps, studio.source_stats, studio.warm_up):
            start()
    except RuntimeError:  # "cannot schedule new futures after shutdown": the app is stopping
        if not stopping.is_set():
            raise


def _block(studio, stopping: threading.Event, demo=None) -> None:
    """Wait for Ctrl+C or SIGTERM (treated alike), then close the web server (no request or timer
    event starts while the process exits) and stop the studio's workers."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        stopping.set()
        if demo is not None:
            demo.close()
        studio.shutdown()
        print("stopped")


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: stop the way Ctrl+C does."""
    raise KeyboardInterrupt
