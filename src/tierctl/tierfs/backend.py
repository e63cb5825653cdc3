"""What every ``tier://`` handle of one policy file shares in a process: the config, one index
connection, the movers, the access log and the read cache.

fsspec makes a filesystem instance per thread (and per set of storage options); they all
share one Backend, so a thread pool does not open a connection and an S3 client per thread.
The index connection is used under a lock; WAL lets it read while an apply writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tierctl import api
from tierctl.index import Index
from tierctl.movers.base import Mover
from tierctl.policies.model import Config
from tierctl.tierfs.access import AccessLog
from tierctl.tierfs.cache import ReadCache

_backends: dict[tuple[str, str | None, int, int, int], Backend] = {}
_backends_lock = threading.Lock()


def backend_for(config_path: str | None, index_path: str | None) -> Backend:
    """The shared Backend of a policy file (as the CLI finds it: the path given, else
    $TIERCTL_CONFIG, else ./policies.yaml). An edited policy file gets a new one."""
    path = os.path.abspath(api.config_path(config_path))
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, 0)  # load() reports the missing file
    token = (path, index_path, os.getpid(), *stamp)
    with _backends_lock:
        backend = _backends.get(token)
        if backend is None:
            backend = Backend(api.load(path, index=index_path))
            _backends[token] = backend
        return backend


class Backend:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._index: Index | None = None
        self._movers: dict[str, Mover] = {}
        self.access = AccessLog(config.index_path)
        self.cache = ReadCache(config.cache, self) if config.cache is not None else None

    @contextmanager
    def index_read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._index is None:
                self._index = Index.open(self.config.index_path, create=False)
            yield self._index.conn

    @contextmanager
    def index_write(self, busy_timeout: float) -> Iterator[Index]:
        """A write transaction that waits at most ``busy_timeout`` s for the write lock."""
        with self.index_read():
            assert self._index is not None
            conn = self._index.conn
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            try:
                with self._index.transaction():
                    yield self._index
            finally:
                conn.execute("PRAGMA busy_timeout = 30000")

    def mover(self, tier: str) -> Mover:
        with self._lock:
            mover = self._movers.get(tier)
            if mover is None:
                mover = api.open_tier_mover(self.config, tier)
                self._movers[tier] = mover
            return mover

    def close(self) -> None:
        self.access.close()
        with self._lock:
            for mover in self._movers.values():
                mover.close()
            self._movers.clear()
            if self._index is not None:
                self._index.close()
                self._index = None
