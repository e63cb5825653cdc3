"""Run a plan: parallel, verified, and safe to interrupt.

The actions of one object form a unit that runs on one worker thread, in plan order; units
run in parallel (small copies between local folders on worker processes instead:
:mod:`tierctl.executor_procs`). Every precondition is checked against the live stores, not the index:
an object that changed since it was planned is skipped, never overwritten or deleted.
Results reach the index from the calling thread only, one transaction per batch, so a
kill at any point leaves the index describing what is really on the stores (or less:
a copy done but not recorded is found and verified by the next run, not redone blindly).

Each action's steps go to the step journal (:mod:`tierctl.index.steps`) in the same
transactions; the few that matter after a kill (an upload id, a move's verification) are
committed before the worker goes on. The next run uses what an interrupted run left: a
copy it verified is not read again while the target still lists the same, and an upload it
started is aborted. The journal adds knowledge; every live precondition is still checked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from queue import Empty, SimpleQueue
from typing import Any, Protocol

from tierctl.errors import (
    MoverError,
    TierctlError,
)
from tierctl.index import Index
from tierctl.index import steps as journal_steps
from tierctl.index.steps import Proof, StepSink, encode
from tierctl.movers.base import Mover
from tierctl.movers.retry import Backoff
from tierctl.plan import Action, Plan, group_by_object
from tierctl.unit import ActionResult, StepReport, Unit


@dataclass(frozen=True)
class ApplyOptions:
    """Everything that shapes one apply run."""

    jobs: int = 8
    digest: str = "crc32c"
    trigger: str = "manual"
    plan_file: str | None = None
    policy: str | None = None
    # Set by a signal handler (daemon SIGTERM): no new units start, running ones finish
    # and are recorded, and the run ends as "interrupted".
    stop: threading.Event | None = None
    # A copy that fails with a retryable error is run again from the start (a fresh read of
    # the source: a write's chunk stream cannot be replayed), after a backoff with jitter.
    retry: Backoff | None = None
    # Error budget: once more than this share of the finished actions (counted from
    # BUDGET_MIN_ACTIONS on) failed, no new units start and the run ends "failed".
    max_failure_share: float | None = None
    # Set by ``execute`` for the runner: where units report steps (in-process runners; a
    # runner that leaves it out returns them on each ActionResult), and the copies of this
    # plan an interrupted run already verified (action id -> proof).
    journal: StepSink | None = None
    proofs: Mapping[int, Proof] = field(default_factory=dict)
    # Worker processes for small local-folder copies (at most ``jobs``, one per core);
    # 0 runs every unit on threads. See tierctl.executor_procs.
    processes: int = 64


BUDGET_MIN_ACTIONS = 10


@dataclass
class ApplyReport:
    run_id: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    problems: list[ActionResult] = field(default_factory=list)  # failed and skipped only
    error: str | None = None  # why the run stopped early (error budget)

    @property
    def outcome(self) -> str:
        if self.error:
            return "failed"
        if self.interrupted:
            return "interrupted"
        if self.failed or self.skipped:
            return "partial" if self.done else "failed"
        return "ok"


class Events(Protocol):
    """Progress hooks. ``advanced`` is called from worker threads."""

    def started(self, objects: int, total_bytes: int) -> None: ...
    def advanced(self, nbytes: int) -> None: ...
    def finished_object(self, results: list[ActionResult]) -> None: ...


class NoEvents:
    def started(self, objects: int, total_bytes: int) -> None:
        pass

    def advanced(self, nbytes: int) -> None:
        pass

    def finished_object(self, results: list[ActionResult]) -> None:
        pass


class UnitRunner(Protocol):
    """Runs units (the actions of one object, in order) somewhere and yields the results of
    those that finished together. The local runner uses a thread pool; another runner
    (tierctl.executor_dask) ships units to a cluster. The caller records every batch in the
    index, so a runner never touches the index."""

    def __call__(
        self,
        units: list[list[Action]],
        options: ApplyOptions,
        events: Events,
        stopping: Callable[[], bool],
    ) -> Iterator[list[list[ActionResult]]]: ...


def unit_for(
    actions: list[Action],
    movers: Mapping[str, Mover],
    options: ApplyOptions,
    on_bytes: Callable[[int], None],
    *,
    report_steps: bool = True,
) -> Unit:
    """The unit for ``actions`` as ``options`` shape it. A runner whose units run in other
    processes passes ``report_steps=False``: steps then travel back on the results."""
    journal = options.journal if report_steps else None
    on_step = None if journal is None else _reporter(journal)
    proofs = {a.id: options.proofs[a.id] for a in actions if a.id in options.proofs}
    return Unit(
        actions, movers, options.digest, on_bytes, options.retry, options.stop, on_step=on_step, proofs=proofs
    )


def _reporter(journal: StepSink) -> StepReport:
    def report(action_id: int, step: str, detail: str | None, durable: bool) -> None:
        journal.add(action_id, step, detail, durable=durable)

    return report


def local_runner(movers: Mapping[str, Mover]) -> UnitRunner:
    """Run units on this machine: small local-folder copies on up to ``options.jobs``
    forked processes (one per core, :mod:`tierctl.executor_procs`) when there are enough of
    them, then everything else on a pool of ``options.jobs`` threads."""

    def run(
        units: list[list[Action]], options: ApplyOptions, events: Events, stopping: Callable[[], bool]
    ) -> Iterator[list[list[ActionResult]]]:
        from tierctl import executor_procs as procs

        forked: list[list[Action]] = []
        rest: list[list[Action]] = []
        if options.processes:
            local = procs.plain_local_tiers(movers)
            for unit in units:
                (forked if procs.forkable(unit, local) else rest).append(unit)
        workers = procs.worker_count(min(options.jobs, options.processes), len(forked))
        if workers:
            units = rest

            def make(unit: list[Action]) -> Unit:
                return unit_for(unit, movers, options, _no_bytes, report_steps=False)

            yield from procs.run_in_processes(
                forked, workers, make, stopping, events.advanced, RECORD_EVERY, RECORD_BATCH
            )
        if units and not stopping():
            yield from _run_units(units, movers, options, events, stopping)

    return run


def _no_bytes(nbytes: int) -> None:
    pass


def execute(
    plan: Plan,
    movers: Mapping[str, Mover],
    index: Index,
    options: ApplyOptions,
    events: Events | None = None,
    runner: UnitRunner | None = None,
) -> ApplyReport:
    """Apply ``plan``; returns counts and every failed or skipped action with its reason.
    ``runner`` (default: threads in this process over ``movers``) says where units run."""
    events = events or NoEvents()
    runner = runner or local_runner(movers)
    started = time.monotonic()
    units = group_by_object(plan.actions)
    events.started(len(units), sum(a.size for a in plan.actions if a.op == "copy"))
    run_id = index.start_run(
        trigger=options.trigger, planned=len(plan.actions), plan_file=options.plan_file, policy=options.policy
    )
    now = time.time()
    journal_steps.prune(index, now)
    journal_steps.record_planned(index, run_id, plan.actions, now)
    _clean_partial_uploads(index, movers, run_id)
    sink = StepSink()
    options = replace(
        options,
        journal=sink,
        proofs=journal_steps.match_proofs(journal_steps.proofs(index, now), plan.actions),
    )
    report = ApplyReport(run_id)
    budget_spent = threading.Event()

    def stopping() -> bool:
        return budget_spent.is_set() or (options.stop is not None and options.stop.is_set())

    try:
        for batch in runner(units, options, events, stopping):
            _record(index, run_id, [r for results in batch for r in results], report, sink)
            for results in batch:
                events.finished_object(results)
            if not budget_spent.is_set() and _over_budget(report, options.max_failure_share):
                report.error = (
                    f"error budget spent: {report.failed} of {report.done + report.failed + report.skipped}"
                    f" finished actions failed (budget {options.max_failure_share:.0%}); run stopped"
                )
                budget_spent.set()
        if options.stop is not None and options.stop.is_set():
            report.interrupted = True
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        sink.release()  # a worker still waiting for a commit goes on without it
        report.seconds = time.monotonic() - started
        index.finish_run(
            run_id,
            outcome=report.outcome,
            done=report.done,
            failed=report.failed,
            skipped=report.skipped,
            bytes_done=report.bytes,
            error=report.error,
        )
    return report


def _over_budget(report: ApplyReport, share: float | None) -> bool:
    finished = report.done + report.failed + report.skipped
    return share is not None and finished >= BUDGET_MIN_ACTIONS and report.failed > share * finished


# Results wait at most this long (or until this many finished) for their index transaction:
# one commit per batch, not per object. Small transactions rewrite the same B-tree pages into
# the WAL over and over (10k small copies: ~100k page writes). A kill loses at most this
# much finished work to the index (the next run finds those copies and verifies them again,
# or takes a move's committed verification from the journal). Deletes are bounded: at most
# ``2 * jobs`` units with a delete run or wait unrecorded (a worker waits for the record
# before it starts another), so after a kill at most that many objects' deleted placements
# are still listed by the index (the next run stats the store before acting on any of them).
RECORD_EVERY = 0.05
RECORD_BATCH = 512

_FINISHED = object()  # a worker has no more units
_WAKE = object()  # a durable step waits for a commit


def _run_units(
    units: list[list[Action]],
    movers: Mapping[str, Mover],
    options: ApplyOptions,
    events: Events,
    stopping: Callable[[], bool],
) -> Iterator[list[list[ActionResult]]]:
    """Yield the results of finished units in batches (one index transaction per batch,
    not per object): every ``RECORD_EVERY`` seconds or ``RECORD_BATCH`` units, and at once
    when a worker waits for a durable step, an action failed (for the error budget) or
    ``2 * jobs`` deletes wait to be recorded. ``options.jobs`` worker threads each take the
    next unit when they finish one, at most ``RECORD_BATCH`` units ahead of what the caller
    recorded; once an action failed, at most ``jobs`` ahead, so that the error budget stops
    a failing run within a few units; units with a delete at most ``2 * jobs`` ahead. On
    KeyboardInterrupt, units not started are dropped
    and running ones are finished and yielded before the interrupt propagates.

    The coordinator is not woken by every finished unit (with small units that costs more
    than the units: a GIL hand-off each): it looks at the inbox every ``RECORD_EVERY / 2``
    seconds, and at once when a worker sets ``urgent`` (a failure, a delete, a durable
    step, a worker at its limit or finished)."""
    halt = threading.Event()

    def halted() -> bool:
        return halt.is_set() or stopping()

    jobs = max(1, options.jobs)
    inbox: SimpleQueue[Any] = SimpleQueue()
    urgent = threading.Event()  # something in the inbox must be seen before the next look
    starved = threading.Event()  # a worker waits for results to be recorded: record now

    def send(item: Any, now: bool = True) -> None:
        inbox.put(item)
        if now:
            urgent.set()

    todo = iter(units)
    ahead = threading.Condition()  # guards todo, unrecorded, deleting and limit
    unrecorded = 0  # units taken whose results the caller has not recorded yet
    deleting = 0  # of those, units with a delete: at most 2 * jobs (what a kill can leave listed)
    limit = RECORD_BATCH

    def wait_for_records() -> None:
        starved.set()
        urgent.set()  # the coordinator records sooner than its next look
        ahead.wait(0.1)  # also wakes to see a stop set from outside

    def take() -> list[Action] | None:
        nonlocal unrecorded, deleting
        with ahead:
            while unrecorded >= limit and not halted():
                wait_for_records()
            unit = None if halted() else next(todo, None)
            if unit is not None and _deletes(unit):
                while deleting >= 2 * jobs and not halted():
                    wait_for_records()
                if halted():
                    return None  # not started: dropped like the units after it
                deleting += 1
            unrecorded += unit is not None
            return unit

    def recorded(batch: list[list[ActionResult]]) -> None:
        nonlocal unrecorded, deleting
        with ahead:
            unrecorded -= len(batch)
            deleting -= sum(_deletes([r.action for r in results]) for results in batch)
            ahead.notify_all()

    def work() -> None:
        nonlocal limit
        try:
            while (unit := take()) is not None:
                results = unit_for(unit, movers, options, events.advanced).run()
                failed = any(r.status == "failed" for r in results)
                if failed:
                    with ahead:
                        limit = jobs
                send(results, failed or _deletes(unit))
        except BaseException as exc:  # a bug, not a failed action: the coordinator re-raises it
            send(exc)
        finally:
            send(_FINISHED)

    journal = options.journal

    def arm_wake() -> None:
        if journal is not None:
            journal.wake().add_done_callback(lambda _: send(_WAKE))

    workers = [
        threading.Thread(target=work, name=f"tierctl-apply-{i}", daemon=True)
        for i in range(min(jobs, len(units)))
    ]
    for worker in workers:
        worker.start()
    arm_wake()
    running = len(workers)
    batch: list[list[ActionResult]] = []
    deadline = 0.0
    deletes = 0
    look = RECORD_EVERY / 2  # a result waits at most two looks for its transaction
    try:
        while running:
            urgent.wait(max(0.0, deadline - time.monotonic()) if batch else look)
            urgent.clear()  # before draining: a later send sets it again
            woken = due = False
            while True:
                try:
                    item = inbox.get_nowait()
                except Empty:
                    break
                if item is _FINISHED:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                elif item is _WAKE:
                    woken = True
                else:
                    if not batch:
                        deadline = time.monotonic() + look
                    batch.append(item)
                    deletes += _deletes([r.action for r in item])
                    failed = any(r.status == "failed" for r in item)
                    if failed or len(batch) >= RECORD_BATCH or deletes >= 2 * jobs:
                        due = True
                        urgent.set()  # what is left in the inbox is seen right after this batch
                        break
            if batch and (starved.is_set() or time.monotonic() >= deadline):
                due = True  # a worker waits for it, or the oldest result waited long enough
            if not (due or woken):
                continue
            # A wake yields even an empty batch: the caller's transaction commits the step
            # a worker waits for.
            starved.clear()  # before recording: a worker still waiting afterwards sets it again
            yield batch
            recorded(batch)
            batch, deletes = [], 0
            if woken:
                arm_wake()
        if batch:
            yield batch
    except KeyboardInterrupt:
        halt.set()
        if journal is not None:
            journal.release()  # no more batches will be recorded: let waiting workers go on
        try:
            while running:
                item = inbox.get()
                if item is _FINISHED:
                    running -= 1
                elif isinstance(item, list):
                    batch.append(item)
            if batch:
                yield batch
        except KeyboardInterrupt:
            pass
        raise
    finally:
        halt.set()
        with ahead:
            ahead.notify_all()
        for worker in workers:
            worker.join()


def _deletes(unit: list[Action]) -> bool:
    return any(a.op == "delete" for a in unit)


def _clean_partial_uploads(index: Index, movers: Mapping[str, Mover], run_id: int) -> None:
    """Abort the multipart uploads interrupted runs started and never completed (exactly
    those, by id), on the tiers this run has movers for; note each as "cleaned"."""
    cleaned = []
    for upload in journal_steps.partial_uploads(index):
        abort = getattr(movers.get(upload.tier), "abort_upload", None)
        if abort is None:
            continue
        try:
            existed = abort(upload.key, upload.upload_id)
        except TierctlError:
            continue  # tried again by the next run; the bucket's lifecycle rule is the backstop
        detail = encode({"upload_id": upload.upload_id, "aborted": bool(existed), "by_run": run_id})
        cleaned.append((upload.run_id, upload.action_id, "cleaned", time.time(), detail))
    if cleaned:
        with index.transaction():
            journal_steps.write(index, cleaned)


def _record(
    index: Index, run_id: int, results: list[ActionResult], report: ApplyReport, sink: StepSink | None = None
) -> None:
    now = time.time()
    streamed, waiting = sink.drain() if sink is not None else ([], [])
    try:
        with index.transaction():
            _record_steps(index, run_id, results, streamed)
            _record_results(index, run_id, results, report, now)
    finally:
        for committed in waiting:
            committed.set()


def _record_steps(
    index: Index,
    run_id: int,
    results: list[ActionResult],
    streamed: list[tuple[int, str, float, str | None]],
) -> None:
    rows = [(run_id, action_id, step, at, detail) for action_id, step, at, detail in streamed]
    for r in results:
        if r.steps:
            action_id = r.action.id
            rows += [(run_id, action_id, step, at, detail) for step, at, detail in r.steps]
        if r.resumed_from is not None and r.status == "done":
            detail = encode({"by_run": run_id, "action": r.action.id})
            rows.append((*r.resumed_from, "resumed", time.time(), detail))
    if rows:
        journal_steps.write(index, rows)


def _record_results(
    index: Index, run_id: int, results: list[ActionResult], report: ApplyReport, now: float
) -> None:
    from tierctl.index.db import action_row, copy_row

    # The placement writes of the batch go in rounds: round n holds the n-th write of each
    # object, so an object's writes keep their order (a move's copy, its source's
    # verification, then its delete). Writes of different objects touch different rows: a
    # round runs as one statement per kind, not one per result (10,000 copies: 2 statements).
    rounds: dict[tuple[int, str], list[tuple[Any, ...]]] = {}  # (round, kind) -> rows
    writes_of: dict[tuple[str, str], int] = {}  # object -> its writes so far
    for number, r in enumerate(results):
        a = r.action
        if r.status == "done":
            report.done += 1
            report.bytes += r.bytes
            writes: list[tuple[str, tuple[Any, ...]]] = []
            if a.op == "copy" and r.entry is not None and r.checksum:
                row = copy_row(
                    a.dataset, a.key, a.target, r.entry, r.checksum, now, verified=r.verified, source=a.source
                )
                writes.append(("copy", row))
                if a.source and r.verified:
                    writes.append(("verified", (a.dataset, a.key, a.source, r.checksum, now)))
            elif a.op == "verify" and r.checksum:
                writes.append(("verified", (a.dataset, a.key, a.target, r.checksum, now)))
                if a.source:
                    writes.append(("verified", (a.dataset, a.key, a.source, r.checksum, now)))
            elif a.op == "delete":
                writes.append(("delete", (number, a.dataset, a.key, a.target)))
            elif a.op == "transition" and a.source and r.entry is not None:
                writes.append(("transition", (a.dataset, a.key, a.source, a.target, r.entry)))
            elif a.op == "restore" and r.entry is not None:
                writes.append(("restore", (a.dataset, a.key, a.target, r.entry.restore_state)))
            if writes:
                done_before = writes_of.get((a.dataset, a.key), 0)
                writes_of[(a.dataset, a.key)] = done_before + len(writes)
                for n, (kind, row) in enumerate(writes, start=done_before):
                    rounds.setdefault((n, kind), []).append(row)
        else:
            if r.status == "failed":
                report.failed += 1
            else:
                report.skipped += 1
            report.problems.append(r)
    first_seen: dict[int, float | None] = {}  # of the placement a delete (result number) removed
    for (_, kind), rows in sorted(rounds.items(), key=lambda item: item[0][0]):  # (stable: kinds as met)
        if kind == "copy":
            index.record_copies(rows)
        elif kind == "verified":
            index.record_verifications(rows)
        elif kind == "delete":
            for number, dataset, key, tier in rows:
                first_seen[number] = index.record_delete(dataset, key, tier)
        elif kind == "transition":
            for dataset, key, source, target, entry in rows:
                index.record_transition(dataset, key, source, target, entry, now=now)
        else:
            for dataset, key, tier, state in rows:
                index.record_restore_state(dataset, key, tier, state)
    index.record_actions(
        action_row(
            run_id,
            r.action,
            r.status,
            bytes_done=r.bytes,
            checksum=r.checksum,
            error=r.error,
            now=now,
            placement_first_seen=first_seen.get(number),
        )
        for number, r in enumerate(results)
    )


__all__ = [
    "ActionResult",
    "ApplyOptions",
    "ApplyReport",
    "Events",
    "MoverError",
    "NoEvents",
    "UnitRunner",
    "execute",
    "local_runner",
    "unit_for",
]
