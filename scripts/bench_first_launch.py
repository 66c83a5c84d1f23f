"""First launch of a fresh clone, repeated: the spread of the usable-page time (issue 16's aim).

    python -m scripts.bench_first_launch --runs 15 --trainings renice
    python -m scripts.bench_first_launch --runs 6 --trainings pause renice   # alternating

Each run is ``scripts.bench_app``'s fresh-clone measurement (the repository copied without data/,
runs/ or caches, ``python launch.py`` with its defaults, headless Chromium until the Compare panels
show), its clone removed afterwards. ``--trainings`` says what happens meanwhile to this machine's
background trainings (processes running ``dida.train``): ``leave`` them, ``pause`` them (SIGSTOP, 20 s
to let the load settle) or ``renice`` them to 19 (the app's processes then take the cores whenever they
want them; the trainings use what is left). Several modes alternate run by run, so they share the
machine's state. The trainings are always continued and set back to nice 0 on exit.
Prints each run, then per mode the median, the range and how many runs met the aim.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path

from scripts.bench_app import fresh_clone_seconds

AIM_S = 15.0
"""Issue 16: a usable page within 15 s on idle cores from a fresh clone."""
MODES = ("leave", "pause", "renice")
SETTLE_S = {"leave": 0.0, "pause": 20.0, "renice": 5.0}


def training_pids() -> list[int]:
    """Processes running ``python -m dida.train`` on this machine."""
    found = subprocess.run(["pgrep", "-f", "dida.train "], capture_output=True, text=True)
    return [int(p) for p in found.stdout.split() if int(p) != os.getpid()]


def set_trainings(pids: list[int], mode: str) -> None:
    """Put the trainings in ``mode``'s state (``leave``: running at nice 0)."""
    for pid in pids:
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19 if mode == "renice" else 0)
            os.kill(pid, signal.SIGSTOP if mode == "pause" else signal.SIGCONT)
        except ProcessLookupError:
            continue


def one_run(work: Path, port: int, mode: str, pids: list[int]) -> float:
    """One fresh-clone first launch with the trainings in ``mode``; the usable-page seconds."""
    set_trainings(pids, mode)
    time.sleep(SETTLE_S[mode])
    load = os.getloadavg()[0]
    try:
        usable = fresh_clone_seconds(work, port)["usable"]
    finally:
        set_trainings(pids, "leave")
        shutil.rmtree(work, ignore_errors=True)
    print(f"{mode:7s} load {load:4.1f}  usable page {usable:5.1f} s", flush=True)
    return usable


def summary(mode: str, times: list[float]) -> str:
    met = sum(t <= AIM_S for t in times)
    return (
        f"{mode}: median {statistics.median(times):.1f} s, range {min(times):.1f}–{max(times):.1f} s, "
        f"≤ {AIM_S:g} s in {met} of {len(times)}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="runs per mode")
    p.add_argument("--trainings", nargs="+", choices=MODES, default=["leave"])
    p.add_argument("--work", type=Path, default=Path("/tmp/dida_first_launch"))
    p.add_argument("--port", type=int, default=7963)
    args = p.parse_args()
    if args.runs < 1 or args.work.exists():
        p.error("--runs must be ≥ 1 and --work must not exist yet (each run's clone goes there)")
    if "renice" in args.trainings and os.geteuid() != 0:
        p.error(
            "--trainings renice needs root: only root can set the trainings' niceness back to 0"
        )
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    pids, times = training_pids(), {mode: [] for mode in args.trainings}
    print(f"{len(pids)} background training(s): {pids}; modes {args.trainings}", flush=True)
    try:
        for _ in range(args.runs):
            for mode in args.trainings:
                times[mode].append(one_run(args.work, args.port, mode, pids))
    finally:
        set_trainings(pids, "leave")
    print(*(summary(mode, t) for mode, t in times.items()), sep="\n")


if __name__ == "__main__":
    main()
