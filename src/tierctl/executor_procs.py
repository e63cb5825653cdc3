"""Small local copies on worker processes: one Python thread per core, no shared GIL.

A copy of a 4 KiB file between two local folders is ~100 µs of Python (stat, open, read,
hash, write, rename, utime). On threads those units fight over one GIL: on 2 cores, 4
worker threads copy 10k small files slower than one. So :func:`tierctl.executor.local_runner`
hands the units that are only that (copies under :data:`PROCESS_MAX_BYTES`, plain local
folder on both sides) to processes forked after planning, and runs everything else on its
threads afterwards.

What stays as it is on threads:
- Each unit runs the same :class:`tierctl.unit.Unit` code; a worker never touches the
  index. Results (with their journal steps) come back over a pipe, and the caller records
  them in batches, in one transaction each, every ``RECORD_EVERY`` s or ``RECORD_BATCH``
  units. Units here have no delete and no durable step, so nothing waits for a commit.
- At most ``RECORD_BATCH`` units run ahead of the index. Once an action failed, every
  worker runs one unit at a time (a chunk's later units come back not started), so the
  error budget stops a failing run within a few units.
- A stop (daemon SIGTERM, error budget, Ctrl-C) starts no new unit; units running finish
  and are recorded. Workers ignore SIGINT and SIGTERM: the parent decides.
- A worker dies with the parent (:mod:`tierctl.forked`): a killed apply leaves no process
  writing behind it. A worker that dies alone has its units recorded as failed (each is
  found, verified or redone by the next run, as after any kill).

Linux only (the parent-death signal); elsewhere every unit runs on threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from tierctl import forked
from tierctl.errors import TierctlError
from tierctl.model import Entry
from tierctl.movers.base import Mover
from tierctl.movers.local import LocalMover
from tierctl.movers.retry import RetryingMover
from tierctl.plan import Action
from tierctl.unit import ActionResult

# A unit goes to a worker process when each of its actions is a copy of at most this many
# bytes between plain local folders: above it the copy is I/O and hashing, which release
# the GIL, and threads do as well.
PROCESS_MAX_BYTES = 1 << 20
# Fewer such units than this run on threads: forking and the pipes cost more than they save.
PROCESS_MIN_UNITS = 256
# Units per message: grows from FIRST_CHUNK (one unit's latency is seen early) to MAX_CHUNK.
FIRST_CHUNK = 4
MAX_CHUNK = 64
# Chunks queued per worker: enough that a worker still has work while the parent records
# a batch in the index.
QUEUED_CHUNKS = 4

_HALT = 0  # flag byte: start no unit
_FAILED = 1  # flag byte: an action failed; run only the first unit of each chunk

# What a worker sends back per unit: its results without their actions (the parent has them).
Wire = tuple[str, int, "str | None", Any, "str | None", bool, list[Any], "tuple[int, int] | None"]


def forkable(unit: list[Action], local: frozenset[str]) -> bool:
    """True when every action of ``unit`` is a small copy between ``local`` tiers
    (:func:`plain_local_tiers`)."""
    return all(
        a.op == "copy" and a.size <= PROCESS_MAX_BYTES and a.source in local and a.target in local
        for a in unit
    )


def plain_local_tiers(movers: Mapping[str, Mover]) -> frozenset[str]:
    """The tiers whose movers are plain local folders (retries aside)."""
    return frozenset(name for name, mover in movers.items() if _plain_local(mover))


def _plain_local(mover: Mover | None) -> bool:
    # Only retries may wrap it: a rate limiter or a metadata wrapper keeps state that would
    # be split between processes (a bandwidth cap would be exceeded once per worker).
    while isinstance(mover, RetryingMover):
        mover = mover.inner
    return type(mover) is LocalMover


def worker_count(jobs: int, units: int) -> int:
    """Worker processes for ``units`` forkable units at ``jobs``: 0 means use threads."""
    if not forked.AVAILABLE or units < PROCESS_MIN_UNITS:
        return 0
    return max(1, min(jobs, len(os.sched_getaffinity(0))))


@dataclass
class _Worker:
    pid: int
    conn: Connection
    chunks: deque[list[int]] = field(default_factory=deque)


def run_in_processes(
    units: list[list[Action]],
    workers: int,
    make_unit: Callable[[list[Action]], Any],
    stopping: Callable[[], bool],
    advanced: Callable[[int], None],
    record_every: float,
    record_batch: int,
) -> Iterator[list[list[ActionResult]]]:
    """Run ``units`` on ``workers`` forked processes (``make_unit(actions).run()`` in each);
    yield batches of finished units' results as :func:`tierctl.executor._run_units` does."""
    flags = mmap.mmap(-1, 2)
    pool: list[_Worker] = []
    todo: deque[int] = deque(range(len(units)))
    chunk = FIRST_CHUNK
    unrecorded = 0  # units sent whose results the caller has not recorded yet
    batch: list[list[ActionResult]] = []
    batch_failed = False
    deadline = 0.0
    look = record_every / 2
    # Units run ahead of the index: a batch being recorded, and the next one being copied.
    ahead = 2 * record_batch

    def halted() -> bool:
        if not flags[_HALT] and stopping():
            flags[_HALT] = 1
        return bool(flags[_HALT])

    def dispatch() -> None:
        nonlocal unrecorded, chunk
        failed = bool(flags[_FAILED])
        for w in pool:
            while todo and not halted() and len(w.chunks) < (1 if failed else QUEUED_CHUNKS):
                size = 1 if failed else min(chunk, len(todo), ahead - unrecorded)
                if size <= 0:
                    return
                ids = [todo.popleft() for _ in range(size)]
                w.conn.send(ids)
                w.chunks.append(ids)
                unrecorded += size
                chunk = min(MAX_CHUNK, chunk * 2)

    def receive(w: _Worker) -> bool:
        """Take one reply of ``w``; False when the worker is gone."""
        nonlocal unrecorded, deadline, batch_failed
        try:
            reply = w.conn.recv()
        except (EOFError, OSError):
            reply = None
        if isinstance(reply, tuple):  # a bug in the worker: raised here as the threads' would be
            raise RuntimeError(f"tierctl worker process {w.pid} failed:\n{reply[1]}")
        sent = w.chunks.popleft()
        if reply is None:  # the worker died (OOM killer, a signal): nothing of the chunk is known
            error = f"worker process {w.pid} died while copying; the next run checks the target"
            replies: list[tuple[int, list[Wire] | None]] = [(i, None) for i in sent]
            for chunk_ids in w.chunks:
                replies.extend((i, None) for i in chunk_ids)
            for i, _ in replies:
                batch.append([ActionResult(a, "failed", error=error) for a in units[i]])
            batch_failed = True
            flags[_FAILED] = 1
            w.chunks.clear()
            pool.remove(w)
            return False
        for i, wire in reply:
            if wire is None:  # not started (a stop, or a failure elsewhere): back to the queue
                unrecorded -= 1
                if not halted():
                    todo.appendleft(i)
                continue
            results = [_unwire(a, r) for a, r in zip(units[i], wire, strict=True)]
            if not batch:
                deadline = time.monotonic() + look
            batch.append(results)
            batch_failed = batch_failed or any(r.status == "failed" for r in results)
            advanced(sum(r.bytes for r in results))
        return True

    def drain() -> None:
        """Collect what running workers finish (a stop: they start nothing new)."""
        flags[_HALT] = 1
        for w in list(pool):
            while w.chunks and receive(w):
                pass

    try:
        for _ in range(workers):
            try:
                pool.append(_fork(units, make_unit, flags))
            except OSError as exc:  # out of processes or memory: go on with those there are
                if not pool:
                    raise TierctlError(
                        f"cannot start a worker process for the copies: {exc}",
                        hint="free memory or raise the process limit (ulimit -u), then run again",
                    ) from exc
                break
        while True:
            dispatch()
            if not pool and todo and not halted():  # every worker died: none is left to run these
                error = "no worker process left to run this copy"
                batch.extend([ActionResult(a, "failed", error=error) for a in units[i]] for i in todo)
                unrecorded += len(todo)
                todo.clear()
                batch_failed = True
            busy = [w for w in pool if w.chunks]
            if not busy and not batch:
                break
            if busy:
                timeout = max(0.0, deadline - time.monotonic()) if batch else look
                for conn in wait([w.conn for w in busy], timeout):
                    receive(next(w for w in busy if w.conn is conn))
            if batch and (
                batch_failed or not busy or len(batch) >= record_batch or time.monotonic() >= deadline
            ):
                yield batch
                unrecorded -= len(batch)
                batch, batch_failed = [], False
            halted()
    except KeyboardInterrupt:
        with contextlib.suppress(KeyboardInterrupt):
            drain()
        if batch:
            yield batch
        raise
    finally:
        flags[_HALT] = 1
        for w in pool:
            _stop(w)
        flags.close()


def _fork(units: list[list[Action]], make_unit: Callable[[list[Action]], Any], flags: mmap.mmap) -> _Worker:
    pid, conn = forked.fork(lambda there: _serve(there, units, make_unit, flags))
    return _Worker(pid, conn)


def _serve(
    conn: Connection, units: list[list[Action]], make_unit: Callable[[list[Action]], Any], flags: mmap.mmap
) -> None:  # pragma: no cover - runs in the worker
    while True:
        try:
            ids = conn.recv()
        except EOFError:
            return
        if ids is None:
            return
        out: list[tuple[int, list[Wire] | None]] = []
        for n, i in enumerate(ids):
            if flags[_HALT] or (n and flags[_FAILED]):
                out.append((i, None))
                continue
            results = make_unit(units[i]).run()
            if any(r.status == "failed" for r in results):
                flags[_FAILED] = 1
            out.append((i, [_wire(r) for r in results]))
        conn.send(out)


def _stop(w: _Worker) -> None:
    with contextlib.suppress(OSError):
        w.conn.send(None)
    w.conn.close()
    forked.reap(w.pid)


# Entry travels as a tuple of its fields: unpickling a slotted frozen dataclass costs more
# than the rest of a small copy's result.
_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))


def _wire(r: ActionResult) -> Wire:
    entry = None if r.entry is None else tuple(getattr(r.entry, name) for name in _ENTRY_FIELDS)
    return (r.status, r.bytes, r.checksum, entry, r.error, r.verified, r.steps, r.resumed_from)


def _unwire(action: Action, w: Wire) -> ActionResult:
    status, nbytes, checksum, entry, error, verified, steps, resumed_from = w
    stored = None if entry is None else Entry(*entry)
    return ActionResult(action, status, nbytes, checksum, stored, error, verified, steps, resumed_from)
