"""Who may write the index: an ``flock`` on a file beside it, plus a record of the holder.

The kernel releases an ``flock`` when its process dies, however it dies, so a lock that
is held always has a live holder; a lock file left by a dead process is simply taken
over (its old record is reported as ``previous``). The file holds a JSON record
``{pid, host, since, command}`` so a refusal can name the holder.

Two locks per index:
- ``<index>.lock``: held by whoever applies (``tierctl apply``, a daemon cycle of
  scan -> plan -> apply), so a manual apply and the daemon exclude each other;
- ``<index>.daemon.lock``: held for a daemon's lifetime: one daemon per index, and
  ``tierctl status`` learns whether one runs.

Locks are re-entrant within a process (the daemon's cycle holds the apply lock when it
calls ``api.apply``, which takes it again). ``flock`` is local to one machine: an index
on a network file system shared by several hosts is not protected.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from tierctl.errors import IndexLocked

APPLY = "lock"
DAEMON = "daemon.lock"
POLL_SECONDS = 0.1
# Every acquirer retries at least this long before refusing, so a concurrent ``probe``
# (which holds a shared lock for microseconds) is never taken for a holder.
PROBE_GRACE = 0.5


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float
    command: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(self.since))
        return f"pid {self.pid} on {self.host} since {when} ({self.command})"


def lock_path(index_path: str, kind: str = APPLY) -> str:
    return f"{os.path.abspath(index_path)}.{kind}"


def current_command() -> str:
    args = [os.path.basename(sys.argv[0]) if sys.argv else "tierctl", *sys.argv[1:]]
    if args[0] in ("__main__.py", "-m"):
        args[0] = "tierctl"
    return " ".join(args)[:200]


def read_holder(path: str) -> Holder | None:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return Holder(int(doc["pid"]), str(doc["host"]), float(doc["since"]), str(doc["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.depth = 1


_held: dict[str, _Held] = {}
_held_guard = threading.Lock()


class Lock:
    """An acquired lock; release with :meth:`release` or use :func:`hold`."""

    def __init__(self, path: str, previous: Holder | None) -> None:
        self.path = path
        self.previous = previous  # the record of a dead holder whose lock file was taken over

    def release(self) -> None:
        with _held_guard:
            held = _held.get(self.path)
            if held is None:
                return
            held.depth -= 1
            if held.depth:
                return
            del _held[self.path]
        with contextlib.suppress(OSError):
            os.ftruncate(held.fd, 0)
        os.close(held.fd)  # closing the descriptor releases the flock


def acquire(
    path: str,
    *,
    wait: float = 0.0,
    command: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_wait: Callable[[Holder | None], None] | None = None,
    busy: str = "the index is in use by",
) -> Lock:
    """Take the lock at ``path``, waiting up to ``wait`` seconds (``math.inf``: forever,
    until ``should_stop()``); else raise :class:`IndexLocked` naming the holder."""
    with _held_guard:
        held = _held.get(path)
        if held is not None:
            held.depth += 1
            return Lock(path, None)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + max(wait, PROBE_GRACE)
    told = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            holder = read_holder(path)
            if time.monotonic() >= deadline or (should_stop is not None and should_stop()):
                raise IndexLocked(
                    f"{busy} {holder.describe() if holder else 'another process'}",
                    hint=f"wait for it to finish, or pass --wait SECONDS (lock file: {path})",
                )
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    except BaseException:
        os.close(fd)
        raise
    previous = read_holder(path)
    record = Holder(os.getpid(), socket.gethostname(), time.time(), command or current_command())
    data = json.dumps(asdict(record)).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    with _held_guard:
        _held[path] = _Held(fd)
    return Lock(path, previous)


@contextlib.contextmanager
def hold(path: str, **kwargs: object) -> Iterator[Lock]:
    lock = acquire(path, **kwargs)  # type: ignore[arg-type]
    try:
        yield lock
    finally:
        lock.release()


def probe(path: str) -> Holder | None:
    """The live holder of the lock at ``path``, or None if nobody holds it.

    Probes with a shared lock, which a holder's exclusive lock refuses; a process that
    is acquiring at that instant retries for a moment (``PROBE_GRACE``) rather than
    mistaking the probe for a holder.
    """
    with _held_guard:
        if path in _held:
            return read_holder(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return read_holder(path) or Holder(0, "?", 0.0, "unknown")
        return None
    finally:
        os.close(fd)  # also releases the probe's shared lock
