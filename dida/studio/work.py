"""Background work and request priorities: who waits for whom in the studio.

A cheap request (a pixel readout, an explanation or tp sweep, a bank step) must never queue behind an
expensive one (the panels of a comparison, a whole-split val pass, a UMAP fit, per-image scores).
Four rules keep it so:

1. **Two lanes in the web server.** The app puts cheap events in the Gradio concurrency group
   ``interactive`` (no limit: they start at once) and expensive ones in ``heavy`` (two at a time, one
   per core); see ``app.views.common.CHEAP`` / ``HEAVY``. An expensive event never takes a cheap
   one's place in the queue.
2. **Batch work off the request threads.** Whole-split work (val passes, the overlap index, source
   statistics, prefetching) runs as keyed :class:`Tasks` on the studio's one-thread batch executor,
   UMAP fits on their own; a request only reads their state and result.
3. **One model forward at a time, users first.** Every forward pass holds the studio's
   :class:`InferenceGate`; a batch task holds it one image at a time and only while no request's
   forward is waiting, so a user waits at most one image of a val pass, never the whole pass.
   Cached results (predictions, image features) need no forward and no gate.
4. **Nothing computed twice at once.** A prediction being computed (by a request, the start-up
   prefetch or the background precompute) holds its key in :class:`KeyedLocks`; another caller of
   the same key waits for it and then reads the stored result instead of repeating the forward.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class InferenceGate:
    """One model forward pass at a time; a waiting interactive forward goes before any batch one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._interactive_waiting = 0

    @contextmanager
    def hold(self, batch: bool = False) -> Iterator[None]:
        """Hold the gate for one forward pass (``batch``: yield to every waiting request)."""
        with self._changed:
            self._interactive_waiting += not batch
            try:
                self._changed.wait_for(lambda: self._free_for(batch))
            finally:
                self._interactive_waiting -= not batch
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()

    @property
    def requests_waiting(self) -> int:
        """Interactive forwards waiting for the gate now."""
        with self._changed:
            return self._interactive_waiting

    def _free_for(self, batch: bool) -> bool:
        return not self._busy and not (batch and self._interactive_waiting)


class KeyedLocks:
    """One lock per key, made on first use and dropped when its last holder leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        """Hold ``key``'s lock for the ``with`` block (waiting while another caller holds it)."""
        with self._lock:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        """Keys held or waited for now."""
        with self._lock:
            return len(self._locks)


class Tasks:
    """Keyed background tasks on a ``ThreadPoolExecutor``: a key queued, running or done is not
    submitted again (a failed one is); its state and result are read by key."""

    def __init__(self, name: str, workers: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._futures: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self.closing = threading.Event()
        """Set by ``close``: long tasks check it between steps and stop early."""

    def submit(self, key: Hashable, fn: Callable[[], Any]) -> str:
        """Queue ``fn`` under ``key`` unless it is queued, running or done; returns its state."""
        with self._lock:
            future = self._futures.get(key)
            if future is None or _state(future).startswith("failed"):
                future = self._start(key, fn)
                self._futures[key] = future
        return _state(future)

    def _start(self, key: Hashable, fn: Callable[[], Any]) -> Future:
        """``fn`` on the pool; after ``close`` a cancelled future (the task never runs)."""
        if not self.closing.is_set():
            return self._pool.submit(_logged, key, fn)
        future: Future = Future()
        future.cancel()
        return future

    def state(self, key: Hashable) -> str | None:
        """``queued``, ``running``, ``done``, ``failed: <message>`` or None (never submitted)."""
        future = self._future(key)
        return None if future is None else _state(future)

    def result(self, key: Hashable) -> Any | None:
        """The task's value once done (None before, and for a failed task)."""
        future = self._future(key)
        return future.result() if future is not None and _state(future) == "done" else None

    def wait(self, key: Hashable, timeout: float = 60.0) -> Any | None:
        """Block until ``key`` is done or failed (or ``timeout`` s); returns its result."""
        future = self._future(key)
        if future is not None:
            futures.wait([future], timeout)
        return self.result(key)

    def forget(self, key: Hashable) -> None:
        """Drop a finished key's state and result, so it can be submitted again."""
        with self._lock:
            future = self._futures.get(key)
            if future is not None and future.done():
                del self._futures[key]

    def close(self) -> None:
        """Drop the queued tasks and ask the running one to stop (``closing``); returns at once.
        Tasks submitted later never run (their state says the studio is shutting down)."""
        with self._lock:
            self.closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _future(self, key: Hashable) -> Future | None:
        with self._lock:
            return self._futures.get(key)


def _state(future: Future) -> str:
    if future.running():
        return "running"
    if not future.done():
        return "queued"
    if future.cancelled():
        return "failed: cancelled (the studio is shutting down)"
    err = future.exception()
    return "done" if err is None else f"failed: {type(err).__name__}: {err}"


def _logged(key: Hashable, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a failure is logged with its traceback (and reported by ``Tasks.state``)."""
    try:
        return fn()
    except Exception:
        log.warning("background task %s failed", key, exc_info=True)
        raise
