"""The app under load: N users doing Compare, pixel readout and the tp explain while the app
trains a run (docs/BENCHMARKS.md, "App under load").

    python -m scripts.bench_load [--users 8] [--duration 120] [--client gradio|raw] [--processes]

The users are gradio_client clients (``--client gradio``) or the browser-weight protocol client of
scripts/raw_client.py (``--client raw``), which takes far less of the shared cores.

Starts ``python launch.py`` on loopback (the shipped checkpoints, SynthCity's default val split
under ``data/synthcity``, an empty runs folder under ``--work``), starts a source-only training job
through the Train tab's API, then lets ``--users`` clients loop for ``--duration`` seconds: pick a
random val image (``/choose_index``), draw the Compare grid (``/grid``), read a random pixel
(``/readout``) and explain it (``/tp_explain``). Prints p50 / p95 / max latency and the error count
per endpoint, and the load average before and after. Loopback only; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

from scripts.raw_client import RawClient

REPO = Path(__file__).resolve().parents[1]
ENDPOINTS = ("/choose_index", "/grid", "/readout", "/tp_explain")
CALL_TIMEOUT_S = 120.0


def start_server(work: Path, port: int) -> subprocess.Popen:
    """``python launch.py`` on 127.0.0.1:``port`` with an empty runs folder under ``work``."""
    runs_dir = work / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    cmd = [sys.executable, "launch.py", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--runs", str(runs_dir), "--data", "data/synthcity"]
    log = open(work / "server.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, server: subprocess.Popen, timeout: float = 600.0) -> float:
    """Seconds until the server's info route answers (an error if the server process ends)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}; see server.log")
        try:
            if httpx.get(f"{url}gradio_api/info", timeout=5).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


PREDICTIONS = REPO / "data" / "synthcity" / ".studio" / "predictions"


def wait_precomputed(folder: Path, quiet_s: float = 30.0, timeout: float = 1800.0) -> int:
    """Block until the app's background precompute stops adding prediction files to ``folder``
    (no new file for ``quiet_s``); returns how many there are."""
    start, last_count, last_change = time.monotonic(), -1, time.monotonic()
    while time.monotonic() - start < timeout:
        count = len(list(folder.rglob("*.npz")))
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif count and time.monotonic() - last_change >= quiet_s:
            return count
        time.sleep(2.0)
    return last_count


class GradioClientUser:
    """gradio_client behind the same two calls as ``RawClient``: ``parameters`` and ``predict``."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.c = Client(url, verbose=False, analytics_enabled=False, download_files=False)

    def parameters(self, api_name: str) -> list[str]:
        """The parameter names of a named endpoint (labels as gradio_client reports them)."""
        info = self.c.view_api(print_info=False, return_format="dict")["named_endpoints"]
        return [p["parameter_name"] for p in info[api_name]["parameters"]]

    def predict(self, api_name: str, **kwargs):
        return self.c.submit(**kwargs, api_name=api_name).result(timeout=CALL_TIMEOUT_S)


CLIENTS = {"gradio": GradioClientUser, "raw": RawClient}
"""--client: gradio_client (heavy: ≈ 63 ms of CPU per call here) or the browser-weight raw
protocol client (scripts/raw_client.py)."""


TRAIN_ITERS = 1000
"""The job's iterations: the quick preset's whole schedule, longer than any measurement here (the
Train tab's default, the tiny preset's 4, ended the job in the first seconds of the load)."""


def start_training(url: str) -> str:
    """A source-only quick-preset job through the Train tab's API (runs during the measurement)."""
    c = GradioClientUser(url)
    names = c.parameters("/train_start")
    values = {
        "method": "source_only",
        "preset": "quick",
        "iters": TRAIN_ITERS,
        "name": "load_bench",
    }
    kwargs = {n: v for n, v in values.items() if n in names}
    status, _ = c.predict("/train_start", **kwargs)
    return str(status)


def training_progress(run_dir: Path) -> str:
    """How far the job got: its state and iteration (status.json), read right after the load."""
    status = run_dir / "status.json"
    if not status.exists():
        return "training: no status (no job ran)"
    info = json.loads(status.read_text())
    return f"training after the load: {info.get('state')} at iteration {info.get('it')}"


TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of ``root`` and every live descendant: pid → (name, seconds),
    from /proc (Linux); empty where /proc is missing."""
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = entry.read_text()
        except OSError:  # ended meanwhile
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :]
        parts = fields.split()
        stats[int(entry.parent.name)] = (
            int(parts[1]),
            name,
            (int(parts[11]) + int(parts[12])) / TICKS,
        )
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats:
            tree[pid] = stats[pid][1:]
            frontier += [child for child, (ppid, *_) in stats.items() if ppid == pid]
    return tree


def clients_cpu() -> float:
    """CPU seconds of this process and its reaped children (the client processes of --processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def cpu_line(before: dict, after: dict, server: int, clients_s: float, seconds: float) -> str:
    """Where the CPU went during the load: the server's own process, its child processes (the
    training job), and the clients."""
    used = {pid: cpu - before.get(pid, ("", 0.0))[1] for pid, (_, cpu) in after.items()}
    own = used.pop(server, 0.0)
    return (
        f"CPU during the load ({seconds:.0f} s x {os.cpu_count()} cores = {seconds * (os.cpu_count() or 1):.0f} "
        f"CPU-s): server {own:.0f} s, its child processes {sum(used.values()):.0f} s, "
        f"clients {clients_s:.0f} s"
    )


def call(c, api_name: str, kwargs: dict, record: dict[str, list], errors: dict[str, int]) -> None:
    start = time.perf_counter()
    try:
        c.predict(api_name, **kwargs)
    except Exception as err:  # every failure counts: timeouts, server errors, transport errors
        errors[api_name] += 1
        print(f"{api_name}: {type(err).__name__}: {str(err)[:200]}", file=sys.stderr)
        return
    record[api_name].append(time.perf_counter() - start)


def user(
    url: str, seed: int, stop_at: float, record: dict, errors: dict, kind: str = "gradio"
) -> None:
    """One client's loop: image → Compare grid → readout → tp explain, until ``stop_at``."""
    rng, c = random.Random(seed), CLIENTS[kind](url)
    xy = {n for n in c.parameters("/readout") if n in ("x", "y")}
    tp_xy = {n for n in c.parameters("/tp_explain") if n in ("x", "y")}
    while time.monotonic() < stop_at:
        x, y = rng.randrange(512), rng.randrange(256)
        call(c, "/choose_index", {"value": rng.randrange(250)}, record, errors)
        call(c, "/grid", {}, record, errors)
        call(c, "/readout", {k: v for k, v in (("x", x), ("y", y)) if k in xy}, record, errors)
        call(
            c, "/tp_explain", {k: v for k, v in (("x", x), ("y", y)) if k in tp_xy}, record, errors
        )


def run_users(url: str, users: int, duration: float, kind: str) -> tuple[dict, dict]:
    record: dict[str, list] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(target=user, args=(url, k, stop_at, record, errors, kind))
        for k in range(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return record, errors


def user_process(job: tuple[str, int, float, str]) -> tuple[dict, dict]:
    """``user`` in a process of its own for ``duration`` seconds → (latencies, errors)."""
    url, seed, duration, kind = job
    record: dict[str, list] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    user(url, seed, time.monotonic() + duration, record, errors, kind)
    return dict(record), dict(errors)


def run_user_processes(url: str, users: int, duration: float, kind: str) -> tuple[dict, dict]:
    """Like ``run_users`` with one process per user (as separate browsers are: no client shares
    another's interpreter lock); the processes' CPU still counts against the same cores."""
    with multiprocessing.get_context("spawn").Pool(users) as pool:
        results = pool.map(user_process, [(url, k, duration, kind) for k in range(users)])
    record: dict[str, list] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    for latencies, failures in results:
        for name, values in latencies.items():
            record[name] += values
        for name, count in failures.items():
            errors[name] += count
    return record, errors


def table(record: dict[str, list], errors: dict[str, int]) -> str:
    lines = ["| endpoint | calls | errors | p50 s | p95 s | max s |", "|---|---|---|---|---|---|"]
    for name in ENDPOINTS:
        t = sorted(record.get(name, []))
        if not t:
            lines.append(f"| {name} | 0 | {errors.get(name, 0)} | – | – | – |")
            continue
        p95 = t[min(len(t) - 1, round(0.95 * (len(t) - 1)))]
        cells = [name, str(len(t)), str(errors.get(name, 0)), f"{statistics.median(t):.2f}"]
        lines.append("| " + " | ".join([*cells, f"{p95:.2f}", f"{t[-1]:.2f}"]) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m scripts.bench_load", description=__doc__.split("\n")[0]
    )
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    p.add_argument("--port", type=int, default=7899)
    p.add_argument("--work", type=Path, default=Path("/tmp/dida_load"))
    p.add_argument(
        "--client", choices=sorted(CLIENTS), default="gradio",
        help="gradio: gradio_client users; raw: the browser-weight protocol client "
        "(scripts/raw_client.py), which leaves the cores to the server",
    )  # fmt: skip
    p.add_argument("--no-train", action="store_true", help="no training job during the load")
    p.add_argument(
        "--processes", action="store_true",
        help="one process per user instead of one thread per user in this process",
    )  # fmt: skip
    p.add_argument(
        "--precomputed", action="store_true",
        help="start the users once the app's background precompute of val predictions is done",
    )  # fmt: skip
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    url = f"http://127.0.0.1:{args.port}/"
    print(f"load average at start: {os.getloadavg()}")
    server = start_server(args.work, args.port)
    try:
        print(f"server answered after {wait_ready(url, server):.1f} s")
        if args.precomputed:
            began = time.monotonic()
            count = wait_precomputed(PREDICTIONS)
            print(f"{count} predictions precomputed after {time.monotonic() - began:.0f} s more")
        if not args.no_train:
            print("training:", start_training(url).splitlines()[0][:160])
        run = run_user_processes if args.processes else run_users
        before, clients = tree_cpu(server.pid), clients_cpu()
        record, errors = run(url, args.users, args.duration, args.client)
        after, clients = tree_cpu(server.pid), clients_cpu() - clients
        print(cpu_line(before, after, server.pid, clients, args.duration))
        print(training_progress(args.work / "runs" / "load_bench"))
    finally:
        server.terminate()
        server.wait(60)
    kind = "processes" if args.processes else "threads"
    print(
        f"{args.users} {args.client} users ({kind}) for {args.duration:.0f} s; load average at end: {os.getloadavg()}"
    )
    print(table(record, errors))
    return 0 if not sum(errors.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
