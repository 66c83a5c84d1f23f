"""One SynthCity generator per output folder: an advisory lock on ``ROOT/.synthcity.lock``.

The holder writes its pid into the lock file. A second generator on the same folder says which pid
it waits for, waits up to a limit, then refuses with :class:`GeneratorBusyError`. ``flock`` locks
belong to the open file, so the OS drops the lock when its holder exits or is killed: a dead
generator never leaves a stale lock behind (the file stays, and means nothing by itself).
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".synthcity.lock"
DEFAULT_WAIT = 1800.0
"""Seconds a second generator waits (the default preset takes about 1 minute on 2 free cores)."""
POLL = 0.2
"""Seconds between two tries while waiting."""


class GeneratorBusyError(ValueError):
    """Another generator kept the folder longer than the wait (a ValueError, so the command lines
    that print ValueError messages print this one too)."""


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def lock_owner(fd: int) -> int | None:
    """The pid written in an open lock file, or None when it is empty or unreadable."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


def _holder(pid: int | None) -> str:
    return f"generator pid {pid}" if pid is not None else "another generator"


def _acquire(fd: int, root: Path, wait: float, say: Callable[[str], None]) -> None:
    """Take the lock on ``fd``, waiting up to ``wait`` seconds (saying once whom it waits for)."""
    deadline, announced = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            owner = lock_owner(fd)
        if time.monotonic() >= deadline:
            raise GeneratorBusyError(
                f"{_holder(owner)} is still writing SynthCity into {root} after {wait:.0f} s of "
                "waiting; let it finish (or stop it), then run this again"
            )
        if not announced:
            say(f"waiting for {_holder(owner)} writing {root} (up to {wait:.0f} s)…")
            announced = True
        time.sleep(POLL)


@contextmanager
def generator_lock(
    root: str | Path, wait: float = DEFAULT_WAIT, say: Callable[[str], None] = _say
) -> Iterator[None]:
    """Hold ``root``'s generator lock (creating ``root``) for the body of a ``with`` block."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, root, wait, say)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released: no pid left to name
    finally:
        os.close(fd)  # closing the file releases the flock
