"""The step journal (table ``steps``): how far each action of a run got.

The steps of an action, in order:

============  ==========================================================================
planned       every action, written when the run starts (detail: what it is)
copying       a copy began writing its target (the writer is the run's pid)
uploading     the target store started a multipart upload (detail: its id) — durable
copied        the write returned
verified      the copy's bytes were proved equal to the source's (detail: digest, how,
              and the target's size, mtime and version as listed then) — durable
              before the delete of a move of an object of ``DURABLE_VERIFY_MIN`` bytes
              or more (see :mod:`tierctl.executor`)
deleted       a delete removed its placement
============  ==========================================================================

The outcome (done, failed, skipped) stays in ``actions``. A later run adds to an
interrupted run's action ``resumed`` (it used that verification instead of reading both
sides again) or ``cleaned`` (it aborted that action's partial upload).

Workers never touch the index: they report steps to a :class:`StepSink` that the
coordinator drains into its transaction for each batch of results. A step marked durable
blocks its worker until that transaction has committed, so a kill right after it cannot
lose it; the others cost no commit of their own.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tierctl.model import MTIME_WINDOW, Entry

if TYPE_CHECKING:
    from tierctl.index.db import Index
    from tierctl.plan import Action

STEP_ORDER = ("planned", "copying", "uploading", "copied", "verified", "deleted", "resumed", "cleaned")
# A verification older than this is not reused: the copy is verified again.
PROOF_MAX_AGE = 7 * 86400.0
# Steps of runs that finished longer ago than this are dropped (the outcomes stay in `actions`).
STEPS_KEEP = 14 * 86400.0

# (action id, step, at, detail as JSON)
WorkerStep = tuple[int, str, float, "str | None"]


# What json.dumps(..., separators=(",", ":")[, sort_keys=True]) would make each time, without
# making an encoder per call (steps are encoded per action: 10,000 copies, 40,000 steps).
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_SORTED = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


def encode(detail: dict[str, Any] | None) -> str | None:
    return None if detail is None else _SORTED.encode(detail)


def entry_detail(entry: Entry) -> dict[str, Any]:
    """The parts of a stored object a later run compares with a fresh stat."""
    detail: dict[str, Any] = {"size": entry.size, "mtime": entry.mtime}
    if entry.etag is not None:
        detail["etag"] = entry.etag
    return detail


def _planned(text: str) -> dict[str, Any]:
    """The "planned" detail: [op, dataset, key, source, target, size, mtime] (compact: one per action)."""
    op, dataset, key, source, target, size, mtime = json.loads(text)
    return {
        "op": op,
        "dataset": dataset,
        "key": key,
        "source": source,
        "target": target,
        "size": size,
        "mtime": mtime,
    }


class StepSink:
    """Steps reported by workers, held for the coordinator's next transaction.

    ``add(..., durable=True)`` returns only after the coordinator committed the step (or
    after :meth:`release`, once the run is ending and no commit will come). The runner
    waits on :meth:`wake` beside its units so that a durable step is committed at once,
    not when the next unit happens to finish."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[WorkerStep] = []
        self._waiting: list[threading.Event] = []
        self._wake: Future[None] = Future()
        self._released = False

    def add(self, action_id: int, step: str, detail: str | None, *, durable: bool = False) -> None:
        committed: threading.Event | None = None
        with self._lock:
            self._rows.append((action_id, step, time.time(), detail))
            if durable and not self._released:
                committed = threading.Event()
                self._waiting.append(committed)
                wake = self._wake
        if committed is not None:
            with contextlib.suppress(InvalidStateError):  # already woken
                wake.set_result(None)
            committed.wait()

    def wake(self) -> Future[None]:
        """A future that completes when a durable step waits for a commit (already
        complete while one is waiting)."""
        with self._lock:
            if self._wake.done() and not self._waiting:
                self._wake = Future()
            return self._wake

    def drain(self) -> tuple[list[WorkerStep], list[threading.Event]]:
        """The steps to write in this transaction, and the waiters to free after its commit."""
        with self._lock:
            rows, self._rows = self._rows, []
            waiting, self._waiting = self._waiting, []
        return rows, waiting

    def release(self) -> None:
        """No more commits will come: free every waiter, now and later."""
        with self._lock:
            self._released = True
            waiting, self._waiting = self._waiting, []
        for event in waiting:
            event.set()


@dataclass(frozen=True)
class Proof:
    """An interrupted run verified a copy and did not live to record it: while the target
    still lists as it did then, that verification stands (no need to read both sides)."""

    run_id: int
    action_id: int
    checksum: str
    size: int
    mtime: float
    etag: str | None
    at: float

    def covers(self, entry: Entry) -> bool:
        """``entry`` (a fresh stat of the target) is the object that was verified."""
        if entry.size != self.size or abs(entry.mtime - self.mtime) > MTIME_WINDOW:
            return False
        return self.etag is None or entry.etag == self.etag


@dataclass(frozen=True)
class PartialUpload:
    """A multipart upload an interrupted run started and never completed."""

    run_id: int
    action_id: int
    tier: str
    key: str
    upload_id: str


@dataclass(frozen=True)
class Step:
    step: str
    at: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ActionSteps:
    """One action of a run with its steps; ``status`` is the outcome, or "unfinished"."""

    action_id: int
    op: str
    dataset: str
    key: str
    source: str | None
    target: str
    status: str
    steps: list[Step]


# -- writes (coordinator thread only) ----------------------------------------------------------
def record_planned(index: Index, run_id: int, actions: Iterable[Action], now: float) -> None:
    compact = _COMPACT.encode
    rows = (
        (run_id, a.id, "planned", now, compact([a.op, a.dataset, a.key, a.source, a.target, a.size, a.mtime]))
        for a in actions
    )
    with index.transaction() as tx:
        tx.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)", rows)


def write(index: Index, rows: Iterable[tuple[int, int, str, float, str | None]]) -> None:
    """(run, action, step, at, detail) rows, inside the caller's transaction."""
    index.conn.executemany("INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?)", rows)


def prune(index: Index, now: float) -> None:
    with index.transaction() as tx:
        tx.execute(
            "DELETE FROM steps WHERE run_id IN (SELECT id FROM runs WHERE finished_at < ?)",
            (now - STEPS_KEEP,),
        )


# -- what interrupted runs left -------------------------------------------------------------------
_UNFINISHED = (
    " JOIN steps p ON p.run_id = s.run_id AND p.action_id = s.action_id AND p.step = 'planned'"
    " WHERE r.outcome = 'interrupted'"
    " AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.run_id = s.run_id AND a.action_id = s.action_id)"
)


def _not_marked(*steps: str) -> str:
    marks = ", ".join(f"'{s}'" for s in steps)
    return (
        " AND NOT EXISTS (SELECT 1 FROM steps x WHERE x.run_id = s.run_id AND x.action_id = s.action_id"
        f" AND x.step IN ({marks}))"
    )


def proofs(index: Index, now: float) -> dict[tuple[str, str, str, str], Proof]:
    """Verified copies of interrupted runs that no run recorded or resumed since, newest
    first per (dataset, key, source, target)."""
    rows = index.conn.execute(
        "SELECT s.run_id, s.action_id, s.at, p.detail, s.detail FROM runs r"
        " JOIN steps s ON s.run_id = r.id AND s.step = 'verified'"
        + _UNFINISHED
        + _not_marked("resumed")
        + " AND r.started_at >= ? ORDER BY s.run_id",
        (now - PROOF_MAX_AGE,),
    )
    found: dict[tuple[str, str, str, str], Proof] = {}
    for run_id, action_id, at, planned_text, verified_text in rows:
        planned, verified = _planned(planned_text), json.loads(verified_text or "{}")
        if planned.get("op") != "copy" or not verified.get("checksum"):
            continue
        key = (planned["dataset"], planned["key"], planned["source"], planned["target"])
        found[key] = Proof(
            run_id,
            action_id,
            verified["checksum"],
            int(verified["size"]),
            float(verified["mtime"]),
            verified.get("etag"),
            at,
        )
    return found


def match_proofs(
    found: dict[tuple[str, str, str, str], Proof], actions: Iterable[Action]
) -> dict[int, Proof]:
    """action id -> proof, for the copies of this plan an interrupted run already verified
    (same object, same tiers, same planned content)."""
    if not found:
        return {}
    matched: dict[int, Proof] = {}
    for a in actions:
        if a.op != "copy" or a.source is None:
            continue
        proof = found.get((a.dataset, a.key, a.source, a.target))
        if proof is not None and proof.size == a.size and abs(proof.mtime - a.mtime) <= MTIME_WINDOW:
            matched[a.id] = proof
    return matched


def partial_uploads(index: Index) -> list[PartialUpload]:
    """Uploads started by interrupted runs for actions that never finished their write."""
    rows = index.conn.execute(
        "SELECT s.run_id, s.action_id, p.detail, s.detail FROM runs r"
        " JOIN steps s ON s.run_id = r.id AND s.step = 'uploading'"
        + _UNFINISHED
        + _not_marked("copied", "cleaned")
        + " ORDER BY s.run_id, s.action_id"
    )
    out = []
    for run_id, action_id, planned_text, upload_text in rows:
        planned, upload = _planned(planned_text), json.loads(upload_text or "{}")
        if upload.get("upload_id"):
            out.append(
                PartialUpload(run_id, action_id, planned["target"], planned["key"], upload["upload_id"])
            )
    return out


# -- reads ------------------------------------------------------------------------------------------
def action_steps(
    index: Index, run_id: int, *, key_prefix: str = "", started_only: bool = True
) -> list[ActionSteps]:
    """The run's actions under ``key_prefix`` with their steps in order: those that got
    further than "planned" (or every planned one, without ``started_only``)."""
    outcomes = {
        row[0]: row[1:]
        for row in index.conn.execute(
            "SELECT action_id, op, dataset, key, source, target, status, finished_at FROM actions"
            " WHERE run_id = ?",
            (run_id,),
        )
    }
    grouped: dict[int, list[Step]] = {}
    identity: dict[int, tuple[str, str, str, str | None, str]] = {}
    rows = index.conn.execute(
        "SELECT action_id, step, at, detail FROM steps WHERE run_id = ? ORDER BY action_id", (run_id,)
    )
    for action_id, step, at, detail_text in rows:
        detail = (_planned if step == "planned" else json.loads)(detail_text) if detail_text else {}
        if step == "planned":
            identity[action_id] = (
                detail["op"],
                detail["dataset"],
                detail["key"],
                detail.get("source"),
                detail["target"],
            )
            detail = {}
        grouped.setdefault(action_id, []).append(Step(step, at, detail))
    order = {name: n for n, name in enumerate(STEP_ORDER)}
    out: list[ActionSteps] = []
    for action_id in sorted(set(grouped) | set(outcomes)):
        steps = grouped.get(action_id, [])
        if action_id in outcomes:
            op, dataset, key, source, target, status, finished_at = outcomes[action_id]
            steps = [*steps, Step(status, finished_at)]
        elif action_id in identity and not (started_only and len(steps) == 1):
            op, dataset, key, source, target = identity[action_id]
            status = "unfinished"
        else:
            continue
        if not key.startswith(key_prefix):
            continue
        steps.sort(key=lambda s: (s.at, order.get(s.step, len(order))))
        out.append(ActionSteps(action_id, op, dataset, key, source, target, status, steps))
    return out
