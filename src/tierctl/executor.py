"""Run a plan: parallel, verified, and safe to interrupt.

The actions of one object form a unit that runs on one worker thread, in plan order; units
run in parallel. Every precondition is checked against the live stores, not the index:
an object that changed since it was planned is skipped, never overwritten or deleted.
Results reach the index from the calling thread only, one transaction per batch, so a
kill at any point leaves the index describing what is really on the stores (or less:
a copy done but not recorded is found and verified by the next run, not redone blindly).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from tierctl.errors import (
    MoverError,
    ObjectArchived,
    ObjectChanged,
    ObjectNotFound,
    TierctlError,
    VerificationFailed,
)
from tierctl.index import Index
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.movers.base import Mover
from tierctl.movers.digest import algorithm_of, digest_of
from tierctl.movers.retry import Backoff, is_retryable
from tierctl.movers.transfer import copy_verified, verify_same
from tierctl.plan import Action, Plan, group_by_object


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


BUDGET_MIN_ACTIONS = 10


@dataclass
class ActionResult:
    action: Action
    status: str  # done | failed | skipped
    bytes: int = 0
    checksum: str | None = None
    entry: Entry | None = None
    error: str | None = None
    verified: bool = True  # False: the digest is the target's own, with no source left to compare


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


def _holds(entry: Entry, size: int, mtime: float) -> bool:
    return entry.size == size and abs(entry.mtime - mtime) <= MTIME_WINDOW


def _stat_or_none(mover: Mover, key: str) -> Entry | None:
    try:
        return mover.stat(key)
    except ObjectNotFound:
        return None


class _Unit:
    """The actions of one object, run in order on one worker thread."""

    def __init__(
        self,
        actions: list[Action],
        movers: Mapping[str, Mover],
        digest: str,
        on_bytes: Callable[[int], None],
        retry: Backoff | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.actions = actions
        self.movers = movers
        self.digest = digest
        self.on_bytes = on_bytes
        self.retry = retry
        self.stop = stop
        # Copies that a delete depends on must be on stable storage before that delete.
        self.durable = any(a.op == "delete" and not a.explicit for a in actions)

    def run(self) -> list[ActionResult]:
        results: list[ActionResult] = []
        status: dict[int, str] = {}
        for action in self.actions:
            if any(status.get(r) != "done" for r in action.requires):
                result = ActionResult(
                    action, "skipped", error="an earlier step for this object did not succeed"
                )
            else:
                result = self.run_one(action)
            status[action.id] = result.status
            results.append(result)
        return results

    def run_one(self, action: Action) -> ActionResult:
        # Only whole copies are retried here; the mover wrapper (movers.retry) retries the
        # repeatable single calls that verify and delete are made of.
        retries = self.retry.attempts - 1 if self.retry is not None and action.op == "copy" else 0
        for retry in itertools.count():
            try:
                if action.op == "copy":
                    return self.copy(action)
                if action.op == "verify":
                    return self.verify(action)
                if action.op == "delete":
                    return self.delete(action)
                if action.op == "transition":
                    return self.transition(action)
                if action.op == "restore":
                    return self.restore(action)
                return ActionResult(action, "failed", error=f"unknown action {action.op!r}")
            except ObjectChanged as exc:
                return ActionResult(action, "skipped", error=str(exc))
            except ObjectArchived as exc:
                # A restore is under way (or must be asked for): this waits, it has not failed.
                return ActionResult(action, "skipped", error=f"waiting for a restore: {exc}")
            except (TierctlError, OSError) as exc:
                if retry < retries and is_retryable(exc) and self.pause(retry):
                    continue
                message = str(exc) if isinstance(exc, TierctlError) else f"{type(exc).__name__}: {exc}"
                return ActionResult(action, "failed", error=message)
        raise AssertionError("unreachable")  # pragma: no cover

    def pause(self, retry: int) -> bool:
        """Back off before retry ``retry``; False if the run is being stopped meanwhile."""
        assert self.retry is not None
        delay = self.retry.delay(retry)
        if self.stop is None:
            time.sleep(delay)
            return True
        return not self.stop.wait(delay)

    def copy(self, a: Action) -> ActionResult:
        assert a.source is not None
        src, dst = self.movers[a.source], self.movers[a.target]
        existing = _stat_or_none(dst, a.key)
        if existing is not None:
            if _holds(existing, a.size, a.mtime):
                # Already there (an interrupted run copied it): prove it, don't redo it.
                try:
                    checksum = verify_same(src, dst, a.key, self.digest)
                except ObjectNotFound:
                    # The interrupted run also removed the source (a move finished before
                    # it was recorded): the target is all there is; record it as found.
                    checksum = digest_of(dst.read_chunks(a.key), self.digest)
                    return ActionResult(a, "done", checksum=checksum, entry=existing, verified=False)
                return ActionResult(a, "done", checksum=checksum, entry=existing)
            if a.expect is None or not _holds(existing, a.expect.size, a.expect.mtime):
                return ActionResult(
                    a, "skipped", error=f"{a.target} holds a different {a.key} than planned; not overwritten"
                )
        result = copy_verified(
            src,
            a.key,
            dst,
            expected=Entry(a.key, a.size, a.mtime),
            algorithm=self.digest,
            durable=self.durable,
            storage_class=a.storage_class,
            on_bytes=self.on_bytes,
        )
        return ActionResult(a, "done", bytes=result.bytes, checksum=result.checksum, entry=result.entry)

    def verify(self, a: Action) -> ActionResult:
        assert a.source is not None
        src, dst = self.movers[a.source], self.movers[a.target]
        entries = [src.stat(a.key), dst.stat(a.key)]
        for mover, entry in zip((src, dst), entries, strict=True):
            if not _holds(entry, a.size, a.mtime):
                return ActionResult(a, "skipped", error=f"{mover.url}/{a.key} changed since it was planned")
        target = entries[1]
        if target.restore_state in ("archived", "restoring"):
            # Never read an archived object: compare the source with the store's checksum.
            if not target.checksum:
                return ActionResult(
                    a,
                    "failed",
                    error=f"{dst.url}/{a.key} is archived and its store gives no checksum to verify",
                )
            digest = digest_of(src.read_chunks(a.key), algorithm_of(target.checksum))
            if digest != target.checksum:
                raise VerificationFailed(
                    f"{a.key}: {src.url} has {digest}, archived {dst.url} has {target.checksum}"
                )
            return ActionResult(a, "done", checksum=digest)
        return ActionResult(a, "done", checksum=verify_same(src, dst, a.key, self.digest))

    def transition(self, a: Action) -> ActionResult:
        assert a.source is not None and a.storage_class is not None
        store = self.movers[a.source]
        entry = store.stat(a.key)
        if not _holds(entry, a.size, a.mtime):
            return ActionResult(a, "skipped", error=f"{store.url}/{a.key} changed since it was planned")
        if entry.restore_state in ("archived", "restoring"):
            raise ObjectArchived(f"{store.url}/{a.key} must be restored before it leaves its archive class")
        return ActionResult(a, "done", entry=store.set_storage_class(a.key, a.storage_class))

    def restore(self, a: Action) -> ActionResult:
        store = self.movers[a.target]
        entry = store.stat(a.key)
        if not _holds(entry, a.size, a.mtime):
            return ActionResult(a, "skipped", error=f"{store.url}/{a.key} changed since it was planned")
        if entry.restore_state == "archived":
            store.restore(a.key, days=a.restore_days or 7, tier=a.restore_speed or "Standard")
            entry = replace(entry, restore_state="restoring")
        return ActionResult(a, "done", entry=entry)

    def delete(self, a: Action) -> ActionResult:
        target = self.movers[a.target]
        current = _stat_or_none(target, a.key)
        if current is None:
            return ActionResult(a, "done")  # already gone: the goal holds
        expect = a.expect or Entry(a.key, a.size, a.mtime)
        if not _holds(current, expect.size, expect.mtime):
            return ActionResult(
                a, "skipped", error=f"{a.target}/{a.key} changed since it was planned; not deleted"
            )
        if not a.explicit:
            if not a.keep:
                return ActionResult(a, "failed", error="refusing to delete: no tier would keep a copy")
            for tier in a.keep:
                kept = _stat_or_none(self.movers[tier], a.key)
                if kept is None or not _holds(kept, a.size, a.mtime):
                    return ActionResult(
                        a, "failed", error=f"refusing to delete: {tier} does not hold the current copy"
                    )
        target.delete(a.key)
        return ActionResult(a, "done")


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


def local_runner(movers: Mapping[str, Mover]) -> UnitRunner:
    """Run units on a pool of ``options.jobs`` threads in this process."""

    def run(
        units: list[list[Action]], options: ApplyOptions, events: Events, stopping: Callable[[], bool]
    ) -> Iterator[list[list[ActionResult]]]:
        return _run_units(units, movers, options, events, stopping)

    return run


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
    report = ApplyReport(run_id)
    budget_spent = threading.Event()

    def stopping() -> bool:
        return budget_spent.is_set() or (options.stop is not None and options.stop.is_set())

    try:
        for batch in runner(units, options, events, stopping):
            _record(index, run_id, [r for results in batch for r in results], report)
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


def _run_units(
    units: list[list[Action]],
    movers: Mapping[str, Mover],
    options: ApplyOptions,
    events: Events,
    stopping: Callable[[], bool] | None = None,
) -> Iterator[list[list[ActionResult]]]:
    """Yield the results of the units that completed together (one index transaction per
    batch, not per object); at most ``4 * jobs`` units in flight. On KeyboardInterrupt,
    units not started are dropped and running ones are finished and yielded before the
    interrupt propagates."""
    if stopping is None:

        def stopping() -> bool:
            return options.stop is not None and options.stop.is_set()

    pending: set[Future[list[ActionResult]]] = set()
    queue = iter(units)
    jobs = max(1, options.jobs)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="tierctl-apply")
    try:
        while True:
            for unit in queue:
                if stopping():
                    break
                worker = _Unit(unit, movers, options.digest, events.advanced, options.retry, options.stop)
                pending.add(pool.submit(worker.run))
                if len(pending) >= 4 * jobs:
                    break
            if not pending:
                return
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield [future.result() for future in finished]
    except KeyboardInterrupt:
        for future in pending:
            future.cancel()
        for future in pending:
            if not future.cancelled():
                try:
                    yield [future.result()]
                except KeyboardInterrupt:
                    break
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record(index: Index, run_id: int, results: list[ActionResult], report: ApplyReport) -> None:
    now = time.time()
    with index.transaction():
        for r in results:
            a = r.action
            first_seen = None
            if r.status == "done":
                report.done += 1
                report.bytes += r.bytes
                if a.op == "copy" and r.entry is not None and r.checksum:
                    index.record_copy(
                        a.dataset, a.key, a.target, r.entry, r.checksum, now, verified=r.verified
                    )
                    if a.source and r.verified:
                        index.record_verified(a.dataset, a.key, a.source, r.checksum, now)
                elif a.op == "verify" and r.checksum:
                    index.record_verified(a.dataset, a.key, a.target, r.checksum, now)
                    if a.source:
                        index.record_verified(a.dataset, a.key, a.source, r.checksum, now)
                elif a.op == "delete":
                    first_seen = index.record_delete(a.dataset, a.key, a.target)
                elif a.op == "transition" and a.source and r.entry is not None:
                    index.record_transition(a.dataset, a.key, a.source, a.target, r.entry)
                elif a.op == "restore" and r.entry is not None:
                    index.record_restore_state(a.dataset, a.key, a.target, r.entry.restore_state)
            else:
                if r.status == "failed":
                    report.failed += 1
                else:
                    report.skipped += 1
                report.problems.append(r)
            index.record_action(
                run_id,
                a,
                r.status,
                bytes_done=r.bytes,
                checksum=r.checksum,
                error=r.error,
                now=now,
                placement_first_seen=first_seen,
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
]
