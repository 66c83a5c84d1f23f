"""Benchmark runs on a lent GPU machine, in one call of the ``device`` tool (issue 13 §6).

The machine starts bare and keeps nothing: this script generates SynthCity there (and checks its
pixels against this machine's tree), starts CUDA MPS when it can (kernels of the side-by-side runs
then share the GPU instead of time-slicing it), trains the named runs of a bench suite side by side
(``--first`` at nice 0, ``--then`` at nice 10 so that the first group finishes first), scores each
finished run on the GPU, optionally trains ``--check`` runs again into ``runs/gpucheck`` (the same
command as a CPU-trained run: does the GPU reproduce its curve?), runs the DIDA diagnostics on the
finished DIDA runs while time is left, and packs what came out into ``OUT/results.tar.gz`` (each
run's config, status, metrics, scores and log; with ``--weights`` also each finished run's model
and bank history beside it, so a GPU-trained model can be shipped). Unfinished runs at the deadline
are killed and listed; their records come back too, and with ``--weights`` their last checkpoint, in
parts of at most 16 MiB, so ``--import`` leaves them stopped here, to resume on this machine.

    python -m scripts.gpu_bench --suite fidelity --first dida_s1 dida_s2 --then rel_online_s0 \
        --check daformer_s0 --deadline 470 --out "$OUT"      # on the GPU machine
    python -m scripts.gpu_bench --import results.tar.gz      # back here: finished runs only
    python -m scripts.gpu_bench --compare runs/gpucheck/fidelity/daformer_s0 \
        runs/bench/fidelity/daformer_s0                      # the GPU run tracks the CPU run?

Start weights the runs need (e.g. ``runs/bench/curves/source_only_d32/``: config.json, status.json,
bench_eval.json, the snapshot) travel with the call's ``carry``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dida import runs
from dida.bench.jobs import Job
from dida.bench.suites import select, suite_jobs

DATA = Path("data/synthcity")
EXPECTED_PIXELS = {
    "source/images/00001.png": "7b9d536e0d42aec53b32521c70e2f138",
    "source/labels/01489.png": "b97f5698db58e74aa7528b3339a73ab8",
    "target/gtFine/train/pixelburg/pixelburg_000000_000019_gtFine_instanceIds.png":
        "f281016a3c48e88eaf2a9efef33ad788",
    "target/gtFine/train/voxelheim/voxelheim_000169_000019_gtFine_labelIds.png":
        "c7f352d56c5ac3854dab3440c8a5b20c",
    "target/leftImg8bit/val/shaderton/shaderton_000053_000019_leftImg8bit.png":
        "2735e5a4f1da8ebc43456a8c804a4acc",
}  # fmt: skip
"""md5 of the decoded pixels of a few files of the default SynthCity tree (this project's machine,
generator version 1): the GPU machine's tree must be the same data (PNG bytes may differ by zlib)."""
CHECK_ROOT = Path("runs/gpucheck")
RUN_FILES = ("config.json", "status.json", "metrics.jsonl", "bench_eval.json", "README.md")
WEIGHT_FILES = (runs.MODEL, runs.BANK_HISTORY)
"""What ``--weights`` brings back of a finished run, beside the archive (a showcase-recipe model
is 13.6 MB in fp32)."""
RESUME_FILES = (runs.CHECKPOINT, runs.BANK_HISTORY)
"""What ``--weights`` brings back of a run the deadline stopped, so that it resumes here (the
checkpoint, 54.6 MB for a DAFormer-style run, comes back in parts of at most 16 MiB)."""
OUT_FILES, OUT_FILE_BYTES = 8, 16 * 2**20
"""The device tool's limits on what comes back from OUT."""
DIDA_METHODS = ("dida", "dida_mic")


def pixel_md5(path: Path) -> str:
    """md5 of an image's decoded pixel array (independent of how the PNG was compressed)."""
    return hashlib.md5(np.asarray(Image.open(path)).tobytes()).hexdigest()


def check_pixels(root: Path = DATA) -> list[str]:
    """The files of ``EXPECTED_PIXELS`` whose pixels differ (or are missing) under ``root``."""
    return [
        rel
        for rel, md5 in EXPECTED_PIXELS.items()
        if not (root / rel).exists() or pixel_md5(root / rel) != md5
    ]


def check_argv(job: Job, runs_root: Path) -> list[str]:
    """The job's own training command, writing its run under ``CHECK_ROOT`` instead (the start
    weights stay the bench's)."""
    argv = job.argv(runs_root, 1)
    at = argv.index("--runs") + 1
    argv[at] = str(CHECK_ROOT / job.suite)
    return argv


@dataclass
class Launch:
    """One training (then scoring) subprocess."""

    name: str
    run_dir: Path
    method: str
    command: list[str]
    nice: int
    log: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        score = [sys.executable, "-m", "scripts.gpu_bench", "--score", str(self.run_dir)]
        shell = f"{shlex.join(self.command)} && {shlex.join(score)}"
        argv = ["nice", "-n", str(self.nice), "sh", "-c", shell]
        out = open(self.log, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def done(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)


def launches(args: argparse.Namespace, runs_root: Path) -> list[Launch]:
    """The runs to train: ``--first`` (nice 0), ``--then`` and ``--check`` (nice 10)."""
    jobs = suite_jobs(args.suite, None)
    logs = Path(args.work) / "logs"
    out = [_launch(j, runs_root, 0, logs) for j in select(jobs, args.first or [])]
    out += [_launch(j, runs_root, 10, logs) for j in select(jobs, args.then or [])]
    for job in select(jobs, args.check or []):
        run_dir = CHECK_ROOT / job.suite / job.name
        log = logs / f"check_{job.name}.log"
        out.append(
            Launch(f"check/{job.name}", run_dir, job.method, check_argv(job, runs_root), 10, log)
        )
    return out


def _launch(job: Job, runs_root: Path, nice: int, logs: Path) -> Launch:
    log = logs / f"{job.suite}_{job.name}.log"
    return Launch(job.name, job.run_dir(runs_root), job.method, job.argv(runs_root, 1), nice, log)


def progress_line(items: list[Launch], t0: float) -> str:
    """Elapsed seconds, then each run's iteration (``*`` once scored, ``!`` if it failed)."""
    parts = []
    for item in items:
        status = runs.read_status(item.run_dir)
        mark = ""
        if item.done():
            mark = "*" if item.proc.returncode == 0 else f"!{item.proc.returncode}"
        parts.append(f"{item.name}:{status.get('it', 0)}{mark}")
    return f"[{time.time() - t0:5.0f}s] " + " ".join(parts)


def gpu_line() -> str:
    """GPU utilisation and memory in use (nvidia-smi), or "-" without one."""
    if shutil.which("nvidia-smi") is None:
        return "-"
    query = "--query-gpu=utilization.gpu,memory.used"
    done = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True)
    return done.stdout.decode().strip()


def watch(items: list[Launch], t0: float, deadline: float, out: Path) -> None:
    """Print progress every 15 s (also to OUT/progress.log) until all are done or the deadline;
    kill what still runs then. A run that fails prints its log's tail at once."""
    reported: set[str] = set()
    with open(out / "progress.log", "a") as log:
        while time.time() < deadline and not all(i.done() for i in items):
            time.sleep(15)
            line = f"{progress_line(items, t0)} | gpu {gpu_line()}"
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
            _report_failures(items, reported)
    for item in items:
        item.kill()


def _report_failures(items: list[Launch], reported: set[str]) -> None:
    for item in items:
        if item.done() and item.proc.returncode != 0 and item.name not in reported:
            reported.add(item.name)
            tail = item.log.read_text(errors="replace")[-1500:]
            print(f"FAILED {item.name} (exit {item.proc.returncode}):\n{tail}", flush=True)


def start_mps(tmp: Path) -> bool:
    """Start the CUDA MPS daemon if the machine has it and a CUDA client then works; else leave
    the GPU in its default (time-sliced) sharing."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        print("MPS: nvidia-cuda-mps-control not found; runs time-slice the GPU", flush=True)
        return False
    for var, sub in (("CUDA_MPS_PIPE_DIRECTORY", "pipe"), ("CUDA_MPS_LOG_DIRECTORY", "log")):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(tmp / sub)
    subprocess.run([control, "-d"], check=False)
    if _cuda_works():
        print("MPS: started", flush=True)
        return True
    subprocess.run([control], input=b"quit\n", check=False)
    for var in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY"):
        os.environ.pop(var)
    print(f"MPS: a CUDA client failed under MPS (cuda ok without: {_cuda_works()})", flush=True)
    return False


def _cuda_works() -> bool:
    probe = "import torch; print(torch.ones(4, device='cuda').sum().item())"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=90)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def generate(workers: int) -> None:
    """SynthCity's default tree (the bench's data), then the pixel check (exit if it differs)."""
    command = [sys.executable, "-m", "dida.data.synthcity", "--out", str(DATA)]
    subprocess.run([*command, "--preset", "default", "--workers", str(workers)], check=True)
    wrong = check_pixels()
    if wrong:
        sys.exit(f"SynthCity here differs from the project machine's tree in {wrong}")
    print(f"SynthCity generated; pixels match in {len(EXPECTED_PIXELS)} sampled files", flush=True)


def diagnose(items: list[Launch], until: float, work: Path) -> None:
    """``scripts.dida_diagnostics`` on the finished DIDA runs, side by side, until ``until``."""
    todo = [i for i in items if i.method in DIDA_METHODS and _finished(i.run_dir)]
    procs = []
    for item in todo:
        path = work / "diagnostics" / f"{item.name.replace('/', '_')}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "scripts.dida_diagnostics",
            str(item.run_dir),
            "--images",
            "20",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out_file = open(path, "wb")  # noqa: SIM115 - owned by the child
        procs.append(subprocess.Popen(argv, stdout=out_file, stderr=subprocess.STDOUT, env=env))
    for proc in procs:
        try:
            proc.wait(timeout=max(1.0, until - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()


def _finished(run_dir: Path) -> bool:
    return runs.read_status(run_dir).get("state") == "finished"


def pack(items: list[Launch], work: Path, out: Path) -> Path:
    """OUT/results.tar.gz: every run's small files (under their runs/ paths), and the logs and
    diagnostics from ``work`` (OUT brings back at most 8 files)."""
    archive = out / "results.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in items:
            for name in RUN_FILES:
                if (item.run_dir / name).exists():
                    tar.add(item.run_dir / name, arcname=str(item.run_dir / name))
        for sub in ("logs", "diagnostics"):
            if (work / sub).exists():
                tar.add(work / sub, arcname=sub)
    return archive


def weight_name(run_dir: Path, file: str) -> str:
    """The OUT file name of a run's weight file: ``<suite>.<run>.<file>`` (OUT is flat)."""
    return f"{run_dir.parent.name}.{run_dir.name}.{file}"


def pack_weights(items: list[Launch], out: Path) -> list[str]:
    """Bring back each run's weights as parts of at most 16 MiB (:data:`WEIGHT_FILES` of a
    finished run, :data:`RESUME_FILES` of a stopped one), in launch order while OUT's 8 files
    allow; returns one line per run left out."""
    left, skipped = OUT_FILES - len(list(out.iterdir())) - 1, []  # summary.json comes after
    for item in items:
        names = WEIGHT_FILES if _finished(item.run_dir) else RESUME_FILES
        if names is RESUME_FILES and not (item.run_dir / runs.CHECKPOINT).exists():
            continue  # stopped before its first checkpoint: nothing to resume from
        files = [item.run_dir / f for f in names if (item.run_dir / f).exists()]
        needed = sum(max(1, math.ceil(f.stat().st_size / OUT_FILE_BYTES)) for f in files)
        if needed > left:
            skipped.append(f"{item.run_dir}: weights not brought back (OUT's file limits)")
            continue
        for f in files:
            split_into(f, out, weight_name(item.run_dir, f.name), OUT_FILE_BYTES)
        left -= needed
    return skipped


def split_into(path: Path, out: Path, name: str, part_bytes: int) -> None:
    """Write ``path`` to ``out`` as ``name.part0``, ``name.part1``, … of at most ``part_bytes``."""
    data = path.read_bytes()
    for k, lo in enumerate(range(0, max(len(data), 1), part_bytes)):
        (out / f"{name}.part{k}").write_bytes(data[lo : lo + part_bytes])


def has_parts(folder: Path, name: str) -> bool:
    """Whether :func:`split_into` wrote ``name`` into ``folder``."""
    return (folder / f"{name}.part0").exists()


def join_parts(folder: Path, name: str) -> bytes | None:
    """The bytes :func:`split_into` wrote as ``name.part*`` in ``folder``; None if there are none."""
    parts = sorted(folder.glob(f"{name}.part*"), key=lambda p: int(p.name.rsplit("part", 1)[1]))
    return b"".join(p.read_bytes() for p in parts) if parts else None


def summary(items: list[Launch]) -> dict[str, dict]:
    """Each run's final state and, once scored, its mIoU."""
    result = {}
    for item in items:
        status = runs.read_status(item.run_dir)
        scores = item.run_dir / "bench_eval.json"
        miou = json.loads(scores.read_text())["all"]["mIoU"] if scores.exists() else None
        result[item.name] = {"state": status.get("state"), "it": status.get("it"), "mIoU": miou}
    return result


def score(run_dir: Path) -> None:
    """Score a finished run on the GPU when there is one (the bench's scores, ``bench_eval.json``)."""
    import torch

    from dida.bench.scores import score_run
    from dida.distributed import resolve_device

    torch.set_num_threads(1)  # 20 scorings at 16 threads each starved the trainings (2026-11-28)
    record = score_run(run_dir, str(resolve_device("auto")))
    print(f"scored {run_dir}: mIoU {record['all']['mIoU']['19']:.4f}", flush=True)


def import_results(archive: Path, dest: Path = Path(".")) -> list[str]:
    """Unpack a results archive's finished runs into ``dest`` (never over an existing run folder),
    score each from its final evaluation and add the weight files ``--weights`` put beside the
    archive; returns what was done, one line per run (unfinished runs are listed, not unpacked)."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith("runs/")]
        by_run: dict[str, list[tarfile.TarInfo]] = {}
        for m in members:
            by_run.setdefault(str(Path(m.name).parent), []).append(m)
        return [
            _import_run(tar, Path(run), files, dest, archive.parent)
            for run, files in sorted(by_run.items())
        ]


def _import_run(tar: tarfile.TarFile, run: Path, files: list, dest: Path, archive_dir: Path) -> str:
    from dida.bench.scores import BENCH_EVAL, score_from_final_eval

    status = json.load(tar.extractfile(str(run / "status.json")))
    checking = run.is_relative_to(CHECK_ROOT)  # a check run's records, finished or not
    if checking and not (dest / run).exists():
        tar.extractall(dest, members=files, filter="data")
        return f"{run}: imported (check run, {status.get('state')} at {status.get('it')})"
    finished = status.get("state") == "finished"
    resumable = has_parts(archive_dir, weight_name(run, runs.CHECKPOINT))
    if not finished and not resumable:
        return f"{run}: not finished ({status.get('state')} at {status.get('it')}); not imported"
    if (dest / run).exists():
        return f"{run}: already here; not imported"
    tar.extractall(dest, members=files, filter="data")
    weights = _place_weights(archive_dir, run, dest, WEIGHT_FILES if finished else RESUME_FILES)
    if not finished:
        saved = status.get("saved_it", 0)
        runs.write_status(dest / run, "stopped", it=saved, saved_it=saved)
        return f"{run}: imported to resume here (stopped at {saved}) with {', '.join(weights)}"
    if not (dest / run / BENCH_EVAL).exists():
        score_from_final_eval(dest / run)
    return f"{run}: imported" + (f" with {', '.join(weights)}" if weights else "")


def _place_weights(archive_dir: Path, run: Path, dest: Path, names: tuple[str, ...]) -> list[str]:
    placed = []
    for name in names:
        data = join_parts(archive_dir, weight_name(run, name))
        if data is not None:
            runs.atomic_write_bytes(dest / run / name, data)
            placed.append(name)
    return placed


def loss_windows(run_dir: Path, windows: tuple[tuple[int, int], ...]) -> dict[str, list[float]]:
    """Mean of each logged training loss over the iterations ``lo..hi`` of each window (None
    where the run has no record there)."""
    train = {r["it"]: r for r in runs.read_metrics(run_dir, "train")}
    keys = sorted(k for k in train[min(train)] if k.startswith("loss_")) if train else []
    out = {}
    for key in keys:
        means = []
        for lo, hi in windows:
            values = [r[key] for it, r in train.items() if lo <= it <= hi and key in r]
            means.append(float(np.mean(values)) if values else None)
        out[key] = means
    return out


def compare_curves(run_dirs: list[Path], width: int = 400) -> str:
    """A table of the runs' training losses over windows of ``width`` iterations, up to the
    shortest run's last record: does a GPU run track the CPU run of the same command?"""
    last = min(max((r["it"] for r in runs.read_metrics(d, "train")), default=0) for d in run_dirs)
    windows = tuple((lo, lo + width - 1) for lo in range(1, last - width + 2, width))
    lines = ["| run | loss | " + " | ".join(f"{lo}–{hi}" for lo, hi in windows) + " |"]
    lines.append("|---|---|" + "---|" * len(windows))
    for run_dir in run_dirs:
        for key, means in loss_windows(run_dir, windows).items():
            cells = " | ".join("-" if m is None else f"{m:.4f}" for m in means)
            lines.append(f"| {run_dir} | {key} | {cells} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="fidelity")
    p.add_argument("--first", nargs="*", help="runs trained at nice 0")
    p.add_argument("--then", nargs="*", help="runs trained at nice 10")
    p.add_argument("--check", nargs="*", help="runs trained again into runs/gpucheck (nice 10)")
    p.add_argument("--runs", type=Path, default=Path("runs/bench"))
    p.add_argument("--deadline", type=float, default=470.0, help="seconds: kill trainings then")
    p.add_argument("--finish", type=float, default=540.0, help="seconds: diagnostics stop then")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_out")))
    p.add_argument("--work", type=Path, default=Path("gpu_work"), help="logs, diagnostics")
    p.add_argument(
        "--import", dest="import_archive", type=Path, help="unpack a results.tar.gz's finished runs"
    )
    p.add_argument("--compare", nargs="+", type=Path, help="training-loss windows of these runs")
    p.add_argument("--score", type=Path, help="only score this run folder (used by the children)")
    p.add_argument(
        "--weights",
        action="store_true",
        help="bring back finished runs' model and bank history, stopped runs' checkpoint",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.import_archive is not None:
        print("\n".join(import_results(args.import_archive)))
        return 0
    if args.compare:
        print(compare_curves(args.compare))
        return 0
    if args.score is not None:
        score(args.score)
        return 0
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    if shutil.which("nvidia-smi"):
        subprocess.run(["nvidia-smi", "-L"], check=False)
    generate(os.cpu_count() or 2)
    mps = start_mps(Path("/tmp/mps"))
    items = launches(args, args.runs)
    for item in items:
        item.start()
    watch(items, t0, t0 + args.deadline, args.out)
    diagnose(items, t0 + args.finish, args.work)
    pack(items, args.work, args.out)
    skipped = pack_weights(items, args.out) if args.weights else []
    result = {"mps": mps, "elapsed_s": round(time.time() - t0), "runs": summary(items)}
    result["weights_left_out"] = skipped
    (args.out / "summary.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
