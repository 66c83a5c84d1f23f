"""Bank snapshots (``BankSnapshot``) and their history: a bounded list saved as ONE safetensors file
(JSON description in its metadata) for the app. Histories saved before provenance was recorded
load with ``boxes = None``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor


@dataclass
class BankSnapshot:
    """The bank at one iteration, on CPU, for the app (features stored as float16)."""

    iteration: int
    features: Tensor
    """(K, D) float16."""
    labels: Tensor
    """(K,) int64 slot classes."""
    ages: Tensor
    """(K,) int64 iteration of each slot's last write (-1 = never)."""
    source_ids: Tensor
    """(K,) int64 dataset index of the source image of the slot's last write (for a momentum
    update the latest contributing image); -1 = never written or not recorded."""
    changed: Tensor
    """(K,) bool, slots written since the previous snapshot."""
    boxes: Tensor | None = None
    """(K, 4) int64 box (x0, y0, x1, y1) of the class region in that source image's pixels, -1
    when unknown; None in histories saved before provenance was recorded."""


SNAPSHOT_KEYS = ("features", "labels", "ages", "source_ids", "changed", "boxes")
HISTORY_FORMAT = "dida-bank-history"
HISTORY_VERSION = 1


class BankHistory:
    """A bounded list of bank snapshots with strictly increasing iterations.

    When a new snapshot exceeds ``max_snapshots``, one interior snapshot is dropped: the one whose
    removal leaves the smallest gap (earliest on ties). The first and the last are always kept,
    and snapshots recorded at a regular interval stay (nearly) evenly spread over the run.
    """

    def __init__(self, max_snapshots: int = 100) -> None:
        if max_snapshots < 2:
            raise ValueError(f"max_snapshots must be >= 2 (first and last), got {max_snapshots}")
        self.max_snapshots = max_snapshots
        self.snapshots: list[BankSnapshot] = []

    def __len__(self) -> int:
        return len(self.snapshots)

    def __getitem__(self, index: int) -> BankSnapshot:
        return self.snapshots[index]

    @property
    def iterations(self) -> list[int]:
        return [s.iteration for s in self.snapshots]

    def append(self, snapshot: BankSnapshot) -> None:
        """Add a snapshot (iteration after the last one), thinning if over ``max_snapshots``."""
        if self.snapshots and snapshot.iteration <= self.snapshots[-1].iteration:
            raise ValueError(
                f"snapshot iteration {snapshot.iteration} is not after the last one "
                f"({self.snapshots[-1].iteration}); call drop_after(it) when resuming a run"
            )
        self.snapshots.append(snapshot)
        if len(self.snapshots) > self.max_snapshots:
            its = self.iterations
            gaps = [its[i + 1] - its[i - 1] for i in range(1, len(its) - 1)]
            del self.snapshots[1 + gaps.index(min(gaps))]

    def thinned(self, max_snapshots: int) -> BankHistory:
        """A copy holding at most ``max_snapshots`` of these snapshots, chosen by the same rule as
        ``append`` (first and last kept, the rest nearly evenly spread); the tensors are shared."""
        history = BankHistory(max_snapshots)
        for snapshot in self.snapshots:
            history.append(snapshot)
        return history

    def drop_after(self, iteration: int) -> None:
        """Forget snapshots taken after ``iteration`` (resuming from an earlier checkpoint)."""
        self.snapshots = [s for s in self.snapshots if s.iteration <= iteration]

    def save(self, path: str | Path) -> None:
        """Write all snapshots to ONE safetensors file (JSON description in its metadata)."""
        tensors: dict[str, Tensor] = {}
        for i, snap in enumerate(self.snapshots):
            for key in SNAPSHOT_KEYS:
                value = getattr(snap, key)
                if value is not None:
                    tensors[f"{i}.{key}"] = value.contiguous()
        meta = {
            "format": HISTORY_FORMAT,
            "version": HISTORY_VERSION,
            "max_snapshots": self.max_snapshots,
            "iterations": self.iterations,
        }
        save_file(tensors, str(path), metadata={"dida": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> BankHistory:
        """Read a file written by ``save``; raises naming the file if it is something else."""
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("dida", "{}"))
            if meta.get("format") != HISTORY_FORMAT or meta.get("version") != HISTORY_VERSION:
                raise ValueError(
                    f"{path} is not a bank history (format {HISTORY_FORMAT} v{HISTORY_VERSION}); "
                    "write it with BankHistory.save"
                )
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        history = cls(int(meta["max_snapshots"]))
        for i, it in enumerate(meta["iterations"]):
            fields = {key: tensors.get(f"{i}.{key}") for key in SNAPSHOT_KEYS}
            history.snapshots.append(BankSnapshot(iteration=int(it), **fields))
        return history
