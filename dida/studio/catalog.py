"""The run catalog: which runs and shipped checkpoints exist, what they are, and their models.

Runs come from shipped checkpoints (``assets/checkpoints/<name>/`` with ``model.safetensors`` and
``config.json``), run directories (``runs/<name>/``, finished or in progress) and the files and run
folders named by ``--checkpoint`` (official mmseg ``.pth`` of DAFormer / DIDA / MIC: the student, or
the EMA teacher with ``PATH:teacher``). A run id is ``"shipped:<name>"``, ``"run:<name>"`` or
``"official:<file stem>"`` (``"official:<file stem>:teacher"``). Models and bank histories are loaded once and reloaded when
their file changes on disk (a run that checkpoints).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from dida import runs
from dida.bank import BankHistory, BankSnapshot
from dida.checkpoints import parse_checkpoint_arg, read_checkpoint_meta
from dida.inference import InferenceSettings
from dida.methods.dida import DIDAConfig
from dida.methods.registry import METHODS, method_config
from dida.model import SegModel, load_official

METHOD_TITLES: dict[str, str] = {
    "source_only": "source-only",
    "proda": "ProDA-style",
    "daformer": "DAFormer-style",
    "dida": "DIDA",
    "dida_mic": "DIDA + MIC",
    "oracle": "oracle",
    "mic": "MIC",
    "official": "official checkpoint",
}
"""Display name of each method (the app's labels and legends)."""

SHIPPED, RUN, OFFICIAL = "shipped", "run", "official"
MODEL_CARD = runs.MODEL_CARD
FEATURED_ORDER = {"dida": 0, "daformer": 1, "proda": 2, "source_only": 3}
"""The order of the methods the Compare tab shows first."""


@dataclass(frozen=True)
class RunSummary:
    """What the app lists about one run or shipped checkpoint."""

    run_id: str
    """``"shipped:<name>"`` or ``"run:<name>"``."""
    name: str
    """Folder name."""
    kind: str
    """``"shipped"`` or ``"run"``."""
    path: Path
    """The folder."""
    method: str
    """Method name (a key of ``METHOD_TITLES``)."""
    state: str
    """``finished``, ``running``, ``interrupted`` (its process died), ``stopped``, ``created``,
    ``failed``, ``shipped`` or ``unknown``."""
    iteration: int
    """Last recorded iteration (0 when unknown)."""
    max_iters: int
    """Planned iterations."""
    miou: float | None
    """Last evaluated mIoU (19 classes, fraction) or None."""
    has_model: bool
    """Whether ``model.safetensors`` exists (the run can predict)."""
    has_bank: bool
    """Whether a bank history exists (DIDA runs)."""
    method_options: dict = field(default_factory=dict, compare=False)
    """The run's method options (tp, bank_size, ...)."""
    weights: Path | None = None
    """An official checkpoint's ``.pth`` file (None: ``<path>/model.safetensors``)."""
    which: str = "model"
    """Segmentor of an official UDA checkpoint: ``model`` (student) or ``ema_model`` (teacher)."""
    test_cfg: dict = field(default_factory=dict, compare=False)
    """An official checkpoint's ``model.test_cfg`` (from its meta config), {} otherwise."""

    @property
    def weights_file(self) -> Path:
        """The file the model is loaded from."""
        return self.weights or self.path / runs.MODEL

    @property
    def inference(self) -> InferenceSettings:
        """How images are run: the checkpoint's ``test_cfg`` (default: DAFormer's whole-image
        test after resizing large images to fit 1024 x 512)."""
        return InferenceSettings.from_test_cfg(self.test_cfg)

    @property
    def short_title(self) -> str:
        """``DIDA · <name>`` (panel titles)."""
        return f"{METHOD_TITLES.get(self.method, self.method)} · {self.name}"

    @property
    def title(self) -> str:
        """Label for dropdowns and legends, e.g. ``DIDA · dida_quick_s0 (mIoU 41.2)``: the last
        evaluated target mIoU in percent, named so the number explains itself."""
        score = "" if self.miou is None else f" (mIoU {100 * self.miou:.1f})"
        tag = f" · {self.kind}" if self.kind in (SHIPPED, OFFICIAL) else f" · {self.state}"
        return f"{METHOD_TITLES.get(self.method, self.method)} · {self.name}{score}{tag}"


class DIDAOptions(NamedTuple):
    """The options of a run's DIDA config that the explain views follow."""

    tp: float
    """Temperature of the instance softmax the run trained with."""
    scatter_alpha: float
    """Weight α of p in the regenerated scores α p + (1 − α) a."""
    normalize: bool
    """Cosine similarity (L2-normalised features and bank)."""
    centre: bool
    """Bank mean subtracted from features and slots before the similarity."""
    mode: str = "paper"
    """'paper' (temperature softmax over the slots) or 'released' (s / Σ s, the released code)."""
    gather_from: str = "teacher"
    """What calibrated L_ins's target in training: 'teacher' (p, as the view shows) or 'student'
    (the student's raw logits, the released code)."""


def dida_options(summary: RunSummary) -> DIDAOptions:
    """A run's DIDA options read through its method's config (``method_config``: ``dida`` or
    ``dida_mic`` with the run's options, the mode's defaults filled in — e.g. normalize=False in
    released mode); a method without DIDA options (an official checkpoint) gets DIDAConfig()'s.
    Raises ValueError naming the options when the run's options are not valid for its method."""
    known = summary.method in METHODS
    cfg = method_config(summary.method, summary.method_options) if known else None
    if not isinstance(cfg, DIDAConfig):
        cfg = DIDAConfig()
    return DIDAOptions(
        cfg.tp, cfg.scatter_alpha, cfg.normalize, cfg.centre, cfg.mode, cfg.gather_from
    )


def run_id(kind: str, name: str) -> str:
    """``"shipped:<name>"`` or ``"run:<name>"``."""
    return f"{kind}:{name}"


def bank_path(folder: Path) -> Path | None:
    """The run's bank history file, or None when it has none."""
    path = folder / runs.BANK_HISTORY
    return path if path.is_file() else None


def summarize(kind: str, folder: Path) -> RunSummary:
    """A RunSummary from a run directory or a shipped checkpoint folder."""
    config = runs.read_json(folder / runs.CONFIG)
    info = runs.run_info(folder)
    state = SHIPPED if kind == SHIPPED and info.state == "unknown" else info.state
    return RunSummary(
        run_id=run_id(kind, folder.name),
        name=folder.name,
        kind=kind,
        path=folder,
        method=info.method,
        state=state,
        iteration=info.iteration,
        max_iters=info.max_iters,
        miou=info.miou,
        has_model=(folder / runs.MODEL).is_file(),
        has_bank=bank_path(folder) is not None,
        method_options=dict(config.get("method", {}).get("options", {})),
    )


def guess_method(text: str) -> str:
    """The method an official checkpoint's config text or file name names (``official`` if none)."""
    text = text.lower()
    found = (m for m in ("dida", "mic", "daformer") if re.search(rf"(?<![a-z]){m}(?![a-z])", text))
    return next(found, OFFICIAL)


def official_summary(path: Path, which: str = "model") -> RunSummary:
    """A RunSummary of an official mmseg ``.pth`` (its meta read with the safe loader)."""
    meta = read_checkpoint_meta(path)
    teacher = which == "ema_model"
    name = path.stem + (" (teacher)" if teacher else "")
    return RunSummary(
        run_id=run_id(OFFICIAL, path.stem + (":teacher" if teacher else "")),
        name=name,
        kind=OFFICIAL,
        path=path.parent,
        method=guess_method(f"{path.name}\n{meta.config}"),
        state=OFFICIAL,
        iteration=meta.iteration or 0,
        max_iters=meta.iteration or 0,
        miou=None,
        has_model=True,
        has_bank=False,
        weights=path,
        which=which,
        test_cfg=meta.test_cfg,
    )


def no_bank_message(summary: RunSummary) -> str:
    """Why a run has no bank to show, in words, and what to pick instead."""
    if summary.kind == OFFICIAL:
        return (
            f"{summary.name} is an official checkpoint: official checkpoints carry no instance "
            "bank (DIDA's bank is not saved in them); choose a DIDA run of this project "
            "(shipped or trained in the Train tab) to see a bank"
        )
    return f"{summary.name} has no bank snapshots (not a DIDA run?)"


def unique_runs(summaries: list[RunSummary], problems: list[str]) -> dict[str, RunSummary]:
    """Summaries by run id; a second folder with the same id (the same run name in two ``--runs``
    folders) is not listed and a note in ``problems`` names both folders."""
    found: dict[str, RunSummary] = {}
    for summary in summaries:
        first = found.setdefault(summary.run_id, summary)
        if first is not summary:
            problems.append(
                f"{summary.path}: not listed — run name {summary.name!r} is already taken by "
                f"{first.path}; rename one of the two folders to see both"
            )
    return found


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; any other name as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class RunCatalog:
    """Shipped checkpoints and run directories, their models and bank histories (thread-safe).

    Loading a model takes only that run's lock: a request about another run never waits for it.
    """

    def __init__(
        self,
        runs_dirs: Sequence[Path],
        assets_dir: Path | None,
        device: torch.device,
        checkpoints: Sequence[str] = (),
    ) -> None:
        self.runs_dirs, self.assets_dir, self.device = list(runs_dirs), assets_dir, device
        self.checkpoints = [parse_checkpoint_arg(str(c)) for c in checkpoints]
        """``--checkpoint`` entries: (path, segmentor) of official files and run folders."""
        self._official: dict[tuple[str, str], tuple[int, RunSummary]] = {}
        self.problems: list[str] = []
        """Folders that could not be listed, with the reason (never skipped silently)."""
        self._runs: dict[str, RunSummary] = {}
        self._models: dict[str, tuple[int, SegModel]] = {}
        self._banks: dict[str, tuple[int, BankHistory]] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def refresh(self) -> list[RunSummary]:
        """Rediscover shipped checkpoints and run directories (new, finished or changed runs)."""
        problems: list[str] = []
        found = unique_runs(self._discover(problems), problems)
        with self._lock:
            self._runs, self.problems = found, problems
        return self.runs()

    def _folders(self) -> list[tuple[str, Path]]:
        folders = []
        if self.assets_dir is not None and (self.assets_dir / "checkpoints").is_dir():
            folders += [(SHIPPED, p) for p in sorted((self.assets_dir / "checkpoints").iterdir())]
        for runs_dir in self.runs_dirs:
            if runs_dir.is_dir():
                folders += [(RUN, p) for p in sorted(runs_dir.iterdir())]
        folders += [(RUN, path) for path, _ in self.checkpoints if path.is_dir()]
        return [(kind, folder) for kind, folder in folders if (folder / runs.CONFIG).is_file()]

    def _discover(self, problems: list[str]) -> list[RunSummary]:
        summaries = []
        for kind, folder in self._folders():
            try:
                summaries.append(summarize(kind, folder))
            except (runs.RunError, KeyError, TypeError, ValueError) as err:
                problems.append(f"{folder}: cannot be listed ({err})")
        for path, which in self.checkpoints:
            if not path.is_dir():
                summaries += self._official_file(path, which, problems)
        return summaries

    def _official_file(self, path: Path, which: str, problems: list[str]) -> list[RunSummary]:
        """[summary] of one ``--checkpoint`` file (meta read once per file version), or [] after
        noting why it cannot be listed."""
        try:
            stamp = path.stat().st_mtime_ns
            cached = self._official.get((str(path), which))
            if cached is None or cached[0] != stamp:
                cached = (stamp, official_summary(path, which))
                self._official[(str(path), which)] = cached
            return [cached[1]]
        except (OSError, ValueError) as err:  # CheckpointError is a ValueError
            problems.append(f"{path}: cannot be listed ({err})")
            return []

    def runs(self, with_model: bool = False, with_bank: bool = False) -> list[RunSummary]:
        """Known runs, shipped first; optionally only those that can predict / have a bank."""
        with self._lock:
            found = list(self._runs.values())
        return [
            r for r in found if (r.has_model or not with_model) and (r.has_bank or not with_bank)
        ]

    def featured_runs(self, limit: int = 4) -> list[str]:
        """One run per method, DIDA, DAFormer, ProDA, source-only in that order: what the Compare
        tab shows first. Per method: shipped first, and among shipped the method's own folder (the
        shipped ``dida`` is paper-mode DIDA, whose bank the Instance bank tab opens on; the
        shipped ``dida_released`` is one tick away), then the best mIoU."""
        ranked = sorted(
            self.runs(with_model=True),
            key=lambda r: (r.kind != SHIPPED, r.name != r.method, -(r.miou or 0.0), r.name),
        )
        chosen: dict[str, str] = {}
        for summary in ranked:
            chosen.setdefault(summary.method, summary.run_id)
        by_method = sorted(chosen.items(), key=lambda kv: FEATURED_ORDER.get(kv[0], 9))
        return [rid for _, rid in by_method][:limit]

    def run(self, run_id: str) -> RunSummary:
        """The run's summary; a KeyError lists the known runs."""
        with self._lock:
            if run_id not in self._runs:
                known = ", ".join(sorted(self._runs)) or "none (train one in the Train tab)"
                raise KeyError(f"unknown run {run_id!r}; known runs: {known}")
            return self._runs[run_id]

    def model(self, run_id: str) -> SegModel:
        """The run's model, loaded once and reloaded when its weights file changes."""
        summary = self.run(run_id)
        path = summary.weights_file
        if not path.exists():
            raise runs.RunError(f"{summary.name} has no {path.name} yet (no checkpoint written)")
        stamp = path.stat().st_mtime_ns
        with self._run_lock(run_id):
            cached = self._models.get(run_id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, self._load(summary))
                self._models[run_id] = cached
            return cached[1]

    def _load(self, summary: RunSummary) -> SegModel:
        if summary.weights is None:
            return runs.load_run_model(summary.path, self.device)
        return load_official(summary.weights, summary.which).to(self.device).eval()

    def _run_lock(self, run_id: str) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(run_id, threading.Lock())

    def model_stamp(self, run_id: str) -> int:
        """Modification time of the run's weights (cache keys change when a run checkpoints)."""
        path = self.run(run_id).weights_file
        return path.stat().st_mtime_ns if path.exists() else 0

    def model_card(self, run_id: str) -> str:
        """The shipped MODEL_CARD.md or the run's README.md (empty when neither exists)."""
        folder = self.run(run_id).path
        for name in (MODEL_CARD, runs.SUMMARY):
            if (folder / name).is_file():
                return (folder / name).read_text()
        return ""

    def checkpoint_identity(self, run_id: str) -> str:
        """Path, size and mtime of the run's weights file and its segmentor: the key of its
        per-image results on disk (changes whenever the file is rewritten)."""
        summary = self.run(run_id)
        stat = summary.weights_file.stat()
        return f"{summary.weights_file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{summary.which}"

    def bank_note(self) -> str:
        """What the bank views say when official checkpoints are loaded ("" when none is): they
        carry no bank, and a DIDA run of this project has one."""
        official = [r.name for r in self.runs() if r.kind == OFFICIAL]
        if not official:
            return ""
        return (
            f"Official checkpoints carry no instance bank (DIDA does not save it): "
            f"{', '.join(official)}. Choose a DIDA run of this project (shipped, or trained in "
            "the Train tab) to see a bank."
        )

    def bank_history(self, run_id: str) -> BankHistory | None:
        """The run's bank snapshots (None for runs without a bank), reloaded when the file changes."""
        path = bank_path(self.run(run_id).path)
        if path is None:
            return None
        stamp = path.stat().st_mtime_ns
        with self._run_lock(run_id):
            cached = self._banks.get(run_id)
            if cached is None or cached[0] != stamp:
                cached = (stamp, BankHistory.load(path))
                self._banks[run_id] = cached
            return cached[1]

    def snapshot(self, run_id: str, index: int = -1) -> BankSnapshot:
        """Bank snapshot ``index`` (negative counts from the end) of a run."""
        history = self.bank_history(run_id)
        if history is None or len(history) == 0:
            raise runs.RunError(no_bank_message(self.run(run_id)))
        if not -len(history) <= index < len(history):
            raise IndexError(f"snapshot {index} out of range: the run has {len(history)} snapshots")
        return history[index]

    def metrics(self, run_id: str, kind: str | None = None) -> list[dict]:
        """The run's metric records (``runs.read_metrics``)."""
        return runs.read_metrics(self.run(run_id).path, kind)
