"""Run directories: config, metrics (JSON lines), checkpoints (safetensors), status and summary.

Layout of one run::

    runs/<name>/
      config.json              everything needed to rebuild data, model and method (+ command, seed, versions)
      metrics.jsonl            one JSON object per logged event ({"kind": "train" | "eval", "it": ...})
      checkpoint.safetensors   model + method state + optimizer (+ loop state in the metadata), for resuming
      model.safetensors        student weights only, for inference
      bank_history.safetensors DIDA instance-bank snapshots (DIDA runs only)
      snapshots/model_<it>.safetensors  eval-model copies at ``snapshot_iters`` (learning curves)
      status.json              {"state": "running" | "finished" | "stopped" | "failed", "it": progress,
                               "saved_it": last checkpointed iteration, ...}
      README.md                human-readable summary
      .lock                    advisory lock (flock) held by the training process, with its pid

Crash consistency: a checkpoint is written in the order bank history → ``checkpoint.safetensors`` →
``model.safetensors`` → ``status.json`` (``saved_it``), each file atomically, so nothing claims an
iteration that is not in the checkpoint; train records after ``saved_it`` are marked unsaved by the
status and dropped on resume. A run whose status says "running" but whose lock no process holds
was killed: :func:`run_state` reports it as "interrupted" (resumable with the same command).

Every file is written atomically (temporary file + fsync + rename), so a killed run never leaves a
checkpoint that cannot be read. No pickle is written: tensors go to safetensors, the rest to JSON.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from dida.model import (
    CheckpointError,
    ModelConfig,
    SegModel,
    fitted_model,
    nonfinite_message,
    nonfinite_tensors,
)

CONFIG, METRICS, STATUS, SUMMARY = "config.json", "metrics.jsonl", "status.json", "README.md"
LOCK = ".lock"
MODEL_CARD = "MODEL_CARD.md"
"""A shipped checkpoint folder's card (``dida.bench.ship`` writes it; the studio shows it)."""
SNAPSHOTS = "snapshots"
CHECKPOINT, MODEL, BANK_HISTORY = (
    "checkpoint.safetensors",
    "model.safetensors",
    "bank_history.safetensors",
)


class RunError(RuntimeError):
    """A run directory is missing, incomplete or unreadable."""


class RunNameError(RunError, ValueError):
    """A run name breaks the naming rule (:data:`RUN_NAME_RULE`)."""


MAX_RUN_NAME = 100
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
RUN_NAME_RULE = (
    f"1-{MAX_RUN_NAME} characters from A-Z a-z 0-9 _ . -, not starting with a dot or a dash "
    "(one folder directly under the runs folder)"
)


def check_run_name(name: str) -> str:
    """``name`` if it is a safe run-folder name (:data:`RUN_NAME_RULE`), else :class:`RunNameError`."""
    if not isinstance(name, str) or not name:
        raise RunNameError(f"a run name is required: {RUN_NAME_RULE}")
    if len(name) > MAX_RUN_NAME or not _RUN_NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise RunNameError(f"run name {shown!r} is not allowed: use {RUN_NAME_RULE}")
    return name


def run_path(runs_dir: str | Path, name: str) -> Path:
    """``runs_dir / name`` for a checked name, verified to resolve to a folder directly inside
    ``runs_dir`` (no traversal, no symlink out of it)."""
    root = Path(runs_dir).resolve()
    path = (root / check_run_name(name)).resolve()
    if path.parent != root:
        raise RunNameError(f"run name {name!r} resolves outside {runs_dir}; use {RUN_NAME_RULE}")
    return Path(runs_dir) / name


def _umask() -> int:
    """The process's file-creation mask (read once, at import: reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""Mode of files written here: what ``open`` would give (``mkstemp`` alone gives 0600, so a run
folder would be unreadable to the other accounts that can read the folder)."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # POSIX
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False).encode())


def read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise RunError(f"{path} does not exist") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(
            f"{path} is not valid JSON ({e}); delete it or restore it from a copy"
        ) from e


# --- nested state <-> (flat tensors, JSON skeleton) -------------------------------------------------


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, JSON scalars) into flat tensors and a skeleton.

    Tensors are replaced by ``{"__tensor__": key}``; dicts with non-string keys become
    ``{"__items__": [[key, value], ...]}`` so integer keys (optimizer state) survive JSON.
    """
    tensors: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return tensors, {"__tensor__": prefix}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            t, skel = flatten_state(v, f"{prefix}.{k}" if prefix else str(k))
            tensors.update(t)
            items.append([k, skel])
        if all(isinstance(k, str) for k in obj):
            return tensors, dict(items)
        return tensors, {"__items__": items}
    if isinstance(obj, (list, tuple)):
        skels = []
        for i, v in enumerate(obj):
            t, skel = flatten_state(v, f"{prefix}.{i}" if prefix else str(i))
            tensors.update(t)
            skels.append(skel)
        return tensors, skels
    return tensors, obj


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__items__" in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton["__items__"]}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(
    path: str | Path, state: dict[str, Any], metadata: dict[str, Any] | None = None
) -> None:
    """Atomically save a nested state as one safetensors file (skeleton + metadata in its header)."""
    tensors, skeleton = flatten_state(state)
    meta = {"skeleton": json.dumps(skeleton), "metadata": json.dumps(metadata or {})}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_state(
    path: str | Path, device: str = "cpu", allow_nonfinite: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a file written by :func:`save_state` → (state, metadata).

    Raises :class:`RunError` naming the file when it is missing, unreadable (truncated, damaged),
    its header does not describe its tensors, or — unless ``allow_nonfinite`` — any tensor holds
    a NaN or an infinity (a diverged training wrote it)."""
    header, tensors = _read_tensors(path, device)
    _refuse_nonfinite(path, tensors, allow_nonfinite)
    if "skeleton" not in header:
        return tensors, {}
    try:
        state = unflatten_state(json.loads(header["skeleton"]), tensors)
        metadata = json.loads(header.get("metadata", "{}"))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise RunError(
            f"{path}: its header does not describe its tensors ({type(e).__name__}: {e}); "
            "it was not written by dida.runs.save_state: restore it or use another checkpoint"
        ) from e
    if not isinstance(state, dict) or not isinstance(metadata, dict):
        raise RunError(f"{path}: its header holds no state dict; it was not written by save_state")
    return state, metadata


def _read_tensors(
    path: str | Path, device: str = "cpu", prefix: str = ""
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors whose key starts with ``prefix``) of a safetensors file."""
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            keys = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118 (no __iter__)
            return f.metadata() or {}, {k: f.get_tensor(k) for k in keys}
    except FileNotFoundError as e:
        raise RunError(f"{path} does not exist") from e
    except Exception as e:  # SafetensorError, OSError, UnicodeDecodeError...: all mean unreadable
        raise RunError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); it is "
            "truncated or damaged: restore it, or resume from / load another checkpoint"
        ) from e


def _refuse_nonfinite(
    path: str | Path, tensors: dict[str, torch.Tensor], allow_nonfinite: bool
) -> None:
    bad = nonfinite_tensors(tensors)
    if bad and not allow_nonfinite:
        raise RunError(nonfinite_message(path, tensors, bad))


# --- the run directory ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """What a run directory says about itself (for listings in the CLI and the app)."""

    path: Path
    name: str
    method: str
    state: str
    iteration: int
    max_iters: int
    miou: float | None


class RunLockedError(RunError):
    """Another live process is writing the run folder."""


class RunLock:
    """An exclusive advisory lock (``flock``) on ``run_dir/.lock`` holding the owner's pid.

    The operating system releases it when the owner dies, so a killed run never leaves a stale lock.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            owner = lock_owner(run_dir)
            raise RunLockedError(
                f"{run_dir} is being written by another process (pid {owner}); wait for it to "
                f"finish, stop it (kill {owner}), or choose another run name"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_owner(run_dir: str | Path) -> int | None:
    """The pid of the live process holding ``run_dir``'s lock, or None when nobody holds it."""
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    with contextlib.suppress(ValueError):
        return int(os.pread(fd, 32, 0).decode() or "0")
    return 0


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that writes interrupted by a kill left (call with the lock held)."""
    root = Path(run_dir)
    stale = [p for p in (*root.glob(".*.tmp"), *root.glob(f"{SNAPSHOTS}/.*.tmp")) if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def create_run(runs_dir: str | Path, name: str, config: dict[str, Any]) -> Path:
    """Create ``runs_dir/name`` with its config; refuses to overwrite a different existing run."""
    run_dir = run_path(runs_dir, name)
    if (run_dir / CONFIG).exists():
        old = read_json(run_dir / CONFIG)
        if _comparable(old) != _comparable(config):
            raise RunError(
                f"{run_dir} already holds a run with a different config; choose another --name "
                "or delete that folder"
            )
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / CONFIG, config)
    write_status(run_dir, "created")
    return run_dir


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """Config without fields that legitimately differ between a run and its resumption."""
    kept = {k: v for k, v in config.items() if k not in ("command", "environment", "created")}
    return json.loads(json.dumps(kept))  # tuples and lists compare equal, as on disk


def write_status(run_dir: Path, state: str, **info: Any) -> None:
    atomic_write_json(Path(run_dir) / STATUS, {"state": state, "time": time.time(), **info})


def read_status(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / STATUS
    return read_json(path) if path.exists() else {"state": "unknown"}


LIVE_STATES = ("created", "running")
"""States only a live process may be in; without the lock's owner they mean "interrupted"."""


def run_state(run_dir: Path) -> dict[str, Any]:
    """``status.json`` as it really is: a live state whose owner died becomes ``"interrupted"`` at
    the last checkpoint (``it`` = ``saved_it``; ``unsaved_it`` = the progress the status claimed)."""
    status = read_status(run_dir)
    if status.get("state") not in LIVE_STATES or lock_owner(run_dir) is not None:
        return status
    saved = status.get("saved_it", checkpoint_it(run_dir))
    return {**status, "state": "interrupted", "it": saved, "saved_it": saved,
            "unsaved_it": status.get("it", saved)}  # fmt: skip


def checkpoint_it(run_dir: Path) -> int:
    """The iteration ``checkpoint.safetensors`` holds (0 when there is none or it is unreadable)."""
    try:
        with safe_open(str(Path(run_dir) / CHECKPOINT), framework="pt") as f:
            return int(json.loads((f.metadata() or {}).get("metadata", "{}")).get("it", 0))
    except Exception:
        return 0


def state_text(status: dict[str, Any]) -> str:
    """One line for listings: "running at 720/1000", "interrupted at 500 (resumable)", …"""
    state, it = status.get("state", "unknown"), status.get("it", 0)
    if state == "interrupted":
        return f"interrupted at {it} (resumable with the same command)"
    if state == "failed" and status.get("reason"):
        return f"failed: {status['reason']}"
    return f"{state} at {it}"


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (flushed and fsynced, so a crash loses at most the line being written)."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """All complete metric records (a torn last line from a killed run is ignored)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if kind is None or r.get("kind") == kind]


def truncate_metrics(run_dir: Path, after_it: int) -> None:
    """Drop records logged after iteration ``after_it`` (used when resuming from a checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r.get("it", 0) <= after_it]
    atomic_write_bytes(
        Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept).encode()
    )


def iter_runs(runs_dir: str | Path) -> Iterator[RunInfo]:
    """Every run directory under ``runs_dir`` (sorted by name)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return
    for path in sorted(p for p in root.iterdir() if (p / CONFIG).exists()):
        yield run_info(path)


def run_info(run_dir: Path) -> RunInfo:
    config, status = read_json(run_dir / CONFIG), run_state(run_dir)
    saved = status["saved_it"] if status.get("state") == "interrupted" else None
    evals = [r for r in read_metrics(run_dir, "eval") if saved is None or r["it"] <= saved]
    return RunInfo(
        path=run_dir,
        name=run_dir.name,
        method=config.get("method", {}).get("name", "?"),
        state=status.get("state", "unknown"),
        iteration=int(status.get("it", 0)),
        max_iters=int(config.get("iters", 0)),
        miou=evals[-1]["mIoU"]["19"] if evals else None,
    )


def write_summary(run_dir: Path) -> None:
    """README.md of a run: what was trained, how to reproduce it, and its last evaluation."""
    config, status = read_json(run_dir / CONFIG), read_status(run_dir)
    evals = read_metrics(run_dir, "eval")
    lines = [
        f"# Run `{run_dir.name}`",
        "",
        f"- method: `{config['method']['name']}` options `{json.dumps(config['method']['options'])}`",
        f"- state: {status.get('state')} at iteration {status.get('it')} of {config.get('iters')}",
        f"- seed: {config.get('seed')}",
        f"- command: `{config.get('command', '?')}`",
        "",
    ]
    if evals:
        last = evals[-1]
        lines += [
            f"## Target validation (iteration {last['it']})",
            "",
            "| class | IoU |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_pct(v)} |" for k, v in last.get("IoU", {}).items()]
        lines += [f"| **mIoU{k}** | **{_pct(v)}** |" for k, v in last.get("mIoU", {}).items()]
    lines += ["", "Full config: `config.json`; metrics: `metrics.jsonl`.", ""]
    atomic_write_bytes(run_dir / SUMMARY, "\n".join(lines).encode())


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def load_checkpoint_model(
    folder: Path, prefix: str = "method.teacher.", allow_nonfinite: bool = False
) -> SegModel:
    """A network stored inside a run's training checkpoint, e.g. the EMA teacher
    (``method.teacher.``) or ProDA's warm-up model (``method.warmup.``); eval mode, CPU.
    Raises :class:`RunError` naming the file (non-finite weights refused unless allowed)."""
    folder = Path(folder)
    config = _model_config(folder)
    _, tensors = _read_tensors(folder / CHECKPOINT, prefix=prefix)
    if not tensors:
        raise RunError(f"{folder / CHECKPOINT} holds no {prefix}* tensors")
    _refuse_nonfinite(folder / CHECKPOINT, tensors, allow_nonfinite)
    state = {k[len(prefix) :]: v for k, v in tensors.items()}
    return _model_with(config, state, f"{folder / CHECKPOINT} ({prefix}*)", folder).eval()


def load_run_model(
    folder: Path, device: torch.device | str = "cpu", allow_nonfinite: bool = False
) -> SegModel:
    """The SegModel of a run folder: architecture from ``config.json``, weights from
    ``model.safetensors`` (strict). Raises :class:`RunError` naming the file at fault."""
    folder = Path(folder)
    config = _model_config(folder)
    state, _ = load_state(folder / MODEL, allow_nonfinite=allow_nonfinite)
    return _model_with(config, state, str(folder / MODEL), folder).to(device).eval()


def _model_config(folder: Path) -> ModelConfig:
    """The model section of ``folder/config.json``."""
    config = read_json(folder / CONFIG)
    try:
        return ModelConfig.from_dict(config["model"])
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise RunError(
            f"{folder / CONFIG} has no usable model section ({type(err).__name__}: {err}); "
            "restore the run's config.json"
        ) from err


def _model_with(config: ModelConfig, state: Any, source: str, folder: Path) -> SegModel:
    """A ``config`` model holding ``state`` (strict; the fit is checked before any allocation)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"{source} is not a flat dict of tensors; it is not a model file")
    try:
        return fitted_model(config, state, f"{source} (model of {folder / CONFIG})")
    except CheckpointError as err:
        raise RunError(str(err)) from err
