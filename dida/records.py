"""What the loop records for the app besides metrics: histories of method state (bank snapshots).

A method returns ``{"bank": BankSnapshot}`` from ``records(it)`` when it has something to record; the
loop appends it here and saves each history next to the checkpoint as ``<name>_history.safetensors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dida.bank import BankHistory

HISTORIES: dict[str, type[BankHistory]] = {"bank": BankHistory}
"""Record name → history class (with append / drop_after / save / load)."""


def history_path(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"{name}_history.safetensors"


class Recorder:
    """Bounded histories of recorded snapshots, one per record name."""

    def __init__(self, max_snapshots: int = 200) -> None:
        self.max_snapshots = max_snapshots
        self.histories: dict[str, BankHistory] = {}

    def add(self, records: dict[str, Any]) -> None:
        for name, snapshot in records.items():
            if name not in HISTORIES:
                raise KeyError(f"no history kind {name!r}; known: {sorted(HISTORIES)}")
            history = self.histories.setdefault(name, HISTORIES[name](self.max_snapshots))
            history.append(snapshot)

    def save(self, run_dir: Path) -> None:
        for name, history in self.histories.items():
            history.save(history_path(run_dir, name))

    def load(self, run_dir: Path, after_it: int | None = None) -> None:
        """Reload saved histories (dropping snapshots after ``after_it`` when resuming)."""
        for name, cls in HISTORIES.items():
            path = history_path(run_dir, name)
            if path.exists():
                history = cls.load(path)
                if after_it is not None:
                    history.drop_after(after_it)
                self.histories[name] = history
