"""Reads of the run journal and audit trail (tables ``runs``, ``actions`` and ``steps``).

Every apply, by hand or by the daemon, writes a ``runs`` row and one ``actions`` row per
action (see :mod:`tierctl.executor`); these stay, so an object's whole life can be told.
The steps of each action (:mod:`.steps`) are kept for ``steps.STEPS_KEEP`` after a run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tierctl.index import steps
from tierctl.index.db import Index
from tierctl.index.steps import ActionSteps

RUN_COLUMNS = (
    "id, started_at, finished_at, trigger, policy, plan_file, outcome, planned, done, failed, skipped,"
    " bytes, error, pid, host"
)


@dataclass(frozen=True)
class RunRecord:
    id: int
    started_at: float
    finished_at: float | None
    trigger: str
    policy: str | None
    plan_file: str | None
    outcome: str | None
    planned: int
    done: int
    failed: int
    skipped: int
    bytes: int
    error: str | None
    pid: int | None
    host: str | None


@dataclass(frozen=True)
class ActionRecord:
    run_id: int
    action_id: int
    op: str
    dataset: str
    key: str
    source: str | None
    target: str
    status: str
    bytes: int
    checksum: str | None
    reason: str | None
    error: str | None
    finished_at: float


@dataclass(frozen=True)
class HistoryEvent:
    """One thing that happened to an object: an applied action, or what a scan noticed."""

    at: float
    dataset: str
    event: str  # copy | verify | delete | seen | gone
    tier: str
    source: str | None
    status: str
    reason: str
    run_id: int | None = None
    trigger: str | None = None
    error: str | None = None
    bytes: int = 0


def runs(index: Index, *, limit: int = 50, policy: str | None = None) -> list[RunRecord]:
    """The newest runs first."""
    sql = f"SELECT {RUN_COLUMNS} FROM runs"
    params: list[Any] = []
    if policy:
        sql += " WHERE policy = ? OR (', ' || policy || ', ') LIKE ?"
        params += [policy, f"%, {policy}, %"]
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [RunRecord(*row) for row in index.conn.execute(sql, params)]


def run(index: Index, run_id: int) -> RunRecord | None:
    row = index.conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return RunRecord(*row) if row else None


def run_actions(index: Index, run_id: int, *, statuses: Iterable[str] | None = None) -> list[ActionRecord]:
    sql = (
        "SELECT run_id, action_id, op, dataset, key, source, target, status, bytes, checksum, reason,"
        " error, finished_at FROM actions WHERE run_id = ?"
    )
    params: list[Any] = [run_id]
    if statuses is not None:
        wanted = list(statuses)
        sql += f" AND status IN ({', '.join('?' * len(wanted))})"
        params += wanted
    return [ActionRecord(*row) for row in index.conn.execute(sql + " ORDER BY action_id", params)]


def action_counts(index: Index, run_id: int) -> dict[str, int]:
    rows = index.conn.execute(
        "SELECT status, count(*) FROM actions WHERE run_id = ? GROUP BY status", (run_id,)
    )
    return dict(rows.fetchall())


def completed_daemon_runs(index: Index, triggers: tuple[str, ...]) -> list[tuple[str | None, float]]:
    """(policy label, latest start) of runs with one of ``triggers`` that ran to an end:
    interrupted runs, and runs whose process died ('running' forever), do not count."""
    marks = ", ".join("?" * len(triggers))
    return list(
        index.conn.execute(
            f"SELECT policy, max(started_at) FROM runs WHERE trigger IN ({marks})"
            " AND outcome NOT IN ('running', 'interrupted') GROUP BY policy",
            triggers,
        )
    )


def last_run_per_policy(index: Index) -> list[RunRecord]:
    """The newest run of each policy label (any trigger)."""
    rows = index.conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id IN"
        " (SELECT max(id) FROM runs WHERE policy IS NOT NULL GROUP BY policy) ORDER BY policy"
    )
    return [RunRecord(*row) for row in rows]


def close_abandoned_runs(index: Index) -> int:
    """Mark runs still 'running' as interrupted. Call only while holding the apply lock:
    then no live process is running one, so such a row belongs to a process that died."""
    with index.transaction() as tx:
        cur = tx.execute(
            "UPDATE runs SET outcome = 'interrupted', finished_at = coalesce(finished_at, ?),"
            " error = coalesce(error, 'the process ended before the run finished (killed?)')"
            " WHERE outcome = 'running'",
            (time.time(),),
        )
        return cur.rowcount


def partial_upload_tiers(index: Index) -> set[str]:
    """Tiers on which interrupted runs left multipart uploads (see :mod:`.steps`)."""
    return {upload.tier for upload in steps.partial_uploads(index)}


def run_steps(
    index: Index, run_id: int, *, key_prefix: str = "", everything: bool = False
) -> list[ActionSteps]:
    """The run's actions with their steps (those that started, or all with ``everything``)."""
    return steps.action_steps(index, run_id, key_prefix=key_prefix, started_only=not everything)


def history(index: Index, key: str) -> list[HistoryEvent]:
    """Everything the index knows happened to ``key`` (on any dataset), oldest first."""
    events: list[HistoryEvent] = []
    rows = index.conn.execute(
        "SELECT a.finished_at, a.dataset, a.op, a.target, a.source, a.status, a.reason, a.run_id,"
        " r.trigger, a.error, a.bytes, a.placement_first_seen"
        " FROM actions a LEFT JOIN runs r ON r.id = a.run_id"
        " WHERE a.key = ? ORDER BY a.finished_at, a.run_id, a.action_id",
        (key,),
    )
    deleted_sightings = []
    for at, dataset, op, target, source, status, reason, run_id, trigger, error, nbytes, seen in rows:
        if op == "delete" and status == "done" and seen is not None:
            deleted_sightings.append((dataset, target, seen))
        events.append(
            HistoryEvent(
                at, dataset, op, target, source, status, reason or "", run_id, trigger, error, nbytes
            )
        )
    rows = index.conn.execute(
        "SELECT dataset, tier, first_seen, state, changed_at, size FROM placements WHERE key = ?", (key,)
    )
    copied_to = {(e.dataset, e.tier) for e in events if e.event == "copy" and e.status == "done"}
    for dataset, tier, seen in deleted_sightings:  # placements since deleted: where it was
        if (dataset, tier) not in copied_to:
            events.append(HistoryEvent(seen, dataset, "seen", tier, None, "done", "found by a scan"))
            copied_to.add((dataset, tier))
    for dataset, tier, first_seen, state, changed_at, size in rows:
        if (dataset, tier) not in copied_to:
            events.append(
                HistoryEvent(first_seen, dataset, "seen", tier, None, "done", "found by a scan", bytes=size)
            )
        if state == "gone" and changed_at is not None:
            events.append(
                HistoryEvent(
                    changed_at, dataset, "gone", tier, None, "done", "missing from the tier at a scan"
                )
            )
    events.sort(key=lambda e: (e.at, e.run_id or 0))
    return events


def annotate_run(index: Index, run_id: int, note: str) -> None:
    """Attach ``note`` (e.g. scan warnings) to a run that has no error of its own."""
    with index.transaction() as tx:
        tx.execute("UPDATE runs SET error = coalesce(error, ?) WHERE id = ?", (note, run_id))


@dataclass(frozen=True)
class RunTotals:
    """Per (policy label, trigger class, outcome): for metrics."""

    policy: str
    outcome: str
    runs: int
    bytes: int
    failed: int
    last_finished: float | None


def run_totals(index: Index) -> list[RunTotals]:
    rows = index.conn.execute(
        "SELECT coalesce(policy, ''), coalesce(outcome, 'running'), count(*), coalesce(sum(bytes), 0),"
        " coalesce(sum(failed), 0), max(finished_at) FROM runs GROUP BY 1, 2 ORDER BY 1, 2"
    )
    return [RunTotals(*row) for row in rows]
