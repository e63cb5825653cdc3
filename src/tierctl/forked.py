"""Helper processes forked from tierctl itself (Linux): small local copies
(:mod:`tierctl.executor_procs`) and a scan's second tier walk (:mod:`tierctl.movers.local_walk`).

A child serves one end of a pipe and exits with ``os._exit`` (no atexit handlers, no
flushing of the parent's buffers, no finalizer touching the parent's SQLite connection,
which the child never uses). It ignores SIGINT and SIGTERM (the parent decides when work
stops) and dies with the parent (``PR_SET_PDEATHSIG``), so a killed tierctl leaves nothing
running behind it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection, Pipe

AVAILABLE = sys.platform == "linux"


def fork(serve: Callable[[Connection], None]) -> tuple[int, Connection]:
    """Fork a child that runs ``serve(conn)`` and exits; return its pid and the parent's end
    of the pipe. An exception in ``serve`` is sent as ``("error", traceback text)`` (when the
    pipe still takes it) and the child exits 1."""
    here, there = Pipe()
    parent = os.getpid()
    with warnings.catch_warnings():
        # Python 3.12+ warns on fork in a process with threads (a progress bar's, a pool's):
        # the children only read and write files, and never take a lock those threads hold.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; tests see it through what it does
        code = 1
        try:
            here.close()
            _die_with(parent)
            try:
                serve(there)
                code = 0
            except BaseException:
                there.send(("error", traceback.format_exc()))
        finally:
            os._exit(code)
    there.close()
    return pid, here


def _die_with(parent: int) -> None:  # pragma: no cover - runs in the child
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)


def reap(pid: int, *, kill: bool = False) -> None:
    """Wait for child ``pid`` (after SIGKILL with ``kill``)."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
