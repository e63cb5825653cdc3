"""Reads through ``tier://`` recorded as the placement's last access (``placements.atime``),
so ``last_access`` rules work on every store, S3 and GCS included.

A read is recorded when its file is closed, in memory; a background thread writes what has
gathered every ``interval`` seconds (or sooner past ``batch`` reads) in one transaction, and
what is left is written at exit. A reader never waits for the index: the writer gives up after
``busy_timeout`` (an apply may hold the write lock) and keeps the times for the next round.
A time only ever moves forward (``atime < ?``), so two processes never undo each other.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import time

from tierctl.errors import TierctlError
from tierctl.index import Index

log = logging.getLogger(__name__)

Placement = tuple[str, str, str]  # dataset, key, tier


class AccessLog:
    """Last reads per placement, written to the index at ``index_path`` in batches."""

    def __init__(
        self, index_path: str, *, interval: float = 5.0, batch: int = 10_000, busy_timeout: float = 0.05
    ) -> None:
        self.index_path = index_path
        self.interval = interval
        self.batch = batch
        self.busy_timeout = busy_timeout
        self.written = 0  # placements updated so far (for tests and metrics)
        self.deferred = 0  # flushes put off because the index was busy
        self._pending: dict[Placement, float] = {}
        self._lock = threading.Lock()  # guards _pending
        self._writing = threading.Lock()  # one flush at a time, on the one connection
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._index: Index | None = None
        self._closed = False
        atexit.register(self.close)

    def record(self, dataset: str, key: str, tier: str, when: float | None = None) -> None:
        """Note a read; never blocks on the index."""
        when = time.time() if when is None else when
        with self._lock:
            slot = (dataset, key, tier)
            if when > self._pending.get(slot, 0.0):
                self._pending[slot] = when
            full = len(self._pending) >= self.batch
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="tierfs-access-log", daemon=True)
                self._thread.start()
        if full:
            self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self, *, busy_timeout: float | None = None) -> bool:
        """Write the gathered reads now; False (and keep them) if the index stayed busy."""
        with self._writing:
            return self._flush(self.busy_timeout if busy_timeout is None else busy_timeout)

    def _flush(self, busy_timeout: float) -> bool:
        with self._lock:
            taken, self._pending = self._pending, {}
        if not taken:
            return True
        try:
            self._write(taken, busy_timeout)
        except (sqlite3.OperationalError, TierctlError) as exc:
            with self._lock:
                for slot, when in taken.items():
                    if when > self._pending.get(slot, 0.0):
                        self._pending[slot] = when
                self.deferred += 1
            log.debug("tier:// reads not recorded yet (%s); will retry", exc)
            return False
        return True

    def _write(self, taken: dict[Placement, float], busy_timeout: float) -> None:
        if self._index is None:
            self._index = Index.open(self.index_path, create=False)
        index = self._index
        index.conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout * 1000))}")
        with index.transaction() as tx:
            tx.executemany(
                "UPDATE placements SET atime = ?"
                " WHERE dataset = ? AND key = ? AND tier = ? AND (atime IS NULL OR atime < ?)",
                [(when, dataset, key, tier, when) for (dataset, key, tier), when in taken.items()],
            )
        self.written += len(taken)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            if not self._closed:
                self.flush()

    def close(self) -> None:
        """Write what is left (waiting up to a second for the index) and stop."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        with self._writing:
            self._flush(1.0)
            if self._index is not None:
                self._index.close()
                self._index = None
        atexit.unregister(self.close)
