"""Run a plan: parallel, verified, and safe to interrupt.

The actions of one object form a unit that runs on one worker thread, in plan order; units
run in parallel. Every precondition is checked against the live stores, not the index:
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

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tierctl.errors import (
    MoverError,
    ObjectArchived,
    ObjectChanged,
    ObjectNotFound,
    TierctlError,
    VerificationFailed,
)
from tierctl.index import Index
from tierctl.index import steps as journal_steps
from tierctl.index.steps import Proof, StepSink, encode, entry_detail
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.movers.base import Mover, MoverWrapper
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
    # Set by ``execute`` for the runner: where units report steps (in-process runners; a
    # runner that leaves it out returns them on each ActionResult), and the copies of this
    # plan an interrupted run already verified (action id -> proof).
    journal: StepSink | None = None
    proofs: Mapping[int, Proof] = field(default_factory=dict)


BUDGET_MIN_ACTIONS = 10
# A move's verification is committed before its delete (the worker waits for the commit)
# only from this size on: a smaller object costs less to read again after a kill than a
# wait for a commit costs every move.
DURABLE_VERIFY_MIN = 1 << 20

# A step as a unit reports it: (action id, step, detail JSON, durable).
StepReport = Callable[[int, str, "str | None", bool], None]


@dataclass
class ActionResult:
    action: Action
    status: str  # done | failed | skipped
    bytes: int = 0
    checksum: str | None = None
    entry: Entry | None = None
    error: str | None = None
    verified: bool = True  # False: the digest is the target's own, with no source left to compare
    # Steps not already reported through ``ApplyOptions.journal``: (step, at, detail JSON).
    steps: list[tuple[str, float, str | None]] = field(default_factory=list)
    # (run, action) of the interrupted run whose verification this copy used.
    resumed_from: tuple[int, int] | None = None


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


class _JournaledWrites(MoverWrapper):
    """The target of one copy: reports when its write starts and returns, and the id of
    any multipart upload the store starts on the way."""

    def __init__(self, inner: Mover, note: Callable[[str, dict[str, Any] | None, bool], None]) -> None:
        super().__init__(inner)
        self.note = note

    def write(self, key: str, chunks: Iterable[bytes], **options: Any) -> Entry:
        from tierctl.movers.s3 import UPLOAD_STARTED

        self.note("copying", None, False)
        token = UPLOAD_STARTED.set(
            lambda _key, upload_id: self.note("uploading", {"upload_id": upload_id}, True)
        )
        try:
            stored = self.inner.write(key, chunks, **options)
        finally:
            UPLOAD_STARTED.reset(token)
        self.note("copied", None, False)
        return stored


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
        *,
        on_step: StepReport | None = None,
        proofs: Mapping[int, Proof] | None = None,
    ) -> None:
        self.actions = actions
        self.movers = movers
        self.digest = digest
        self.on_bytes = on_bytes
        self.retry = retry
        self.stop = stop
        self.on_step = on_step
        self.proofs = proofs or {}
        # Copies that a delete depends on must be on stable storage before that delete.
        self.durable = any(a.op == "delete" and not a.explicit for a in actions)
        self._steps: list[tuple[str, float, str | None]] = []

    def run(self) -> list[ActionResult]:
        results: list[ActionResult] = []
        status: dict[int, str] = {}
        for action in self.actions:
            self._steps = []
            if any(status.get(r) != "done" for r in action.requires):
                result = ActionResult(
                    action, "skipped", error="an earlier step for this object did not succeed"
                )
            else:
                result = self.run_one(action)
            result.steps = self._steps
            status[action.id] = result.status
            results.append(result)
        return results

    def note(self, action: Action, step: str, detail: dict[str, Any] | None, durable: bool = False) -> None:
        """Journal a step: through ``on_step`` (``durable``: returns once it is committed),
        or on the action's result for runners that have no channel back."""
        text = encode(detail)
        if self.on_step is not None:
            self.on_step(action.id, step, text, durable)
        else:
            self._steps.append((step, time.time(), text))

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
                proof = self.proofs.get(a.id)
                if proof is not None and proof.covers(existing):
                    return self.resume(a, src, existing, proof)
                # Already there (an interrupted run copied it): prove it, don't redo it.
                try:
                    checksum = verify_same(src, dst, a.key, self.digest)
                except ObjectNotFound:
                    # The interrupted run also removed the source (a move finished before
                    # it was recorded): the target is all there is; record it as found.
                    checksum = digest_of(dst.read_chunks(a.key), self.digest)
                    return ActionResult(a, "done", checksum=checksum, entry=existing, verified=False)
                self.note(a, "verified", {"checksum": checksum, "by": "found", **entry_detail(existing)})
                return ActionResult(a, "done", checksum=checksum, entry=existing)
            if a.expect is None or not _holds(existing, a.expect.size, a.expect.mtime):
                return ActionResult(
                    a, "skipped", error=f"{a.target} holds a different {a.key} than planned; not overwritten"
                )
        result = copy_verified(
            src,
            a.key,
            _JournaledWrites(dst, lambda step, detail, durable: self.note(a, step, detail, durable)),
            expected=Entry(a.key, a.size, a.mtime),
            algorithm=self.digest,
            durable=self.durable,
            storage_class=a.storage_class,
            on_bytes=self.on_bytes,
        )
        # Before a move deletes its source, its verification is committed: a kill during the
        # delete then leaves a journal the next run resumes from without reading either side.
        detail = {"checksum": result.checksum, "by": result.verified_by, **entry_detail(result.entry)}
        self.note(a, "verified", detail, durable=self.durable and a.size >= DURABLE_VERIFY_MIN)
        return ActionResult(a, "done", bytes=result.bytes, checksum=result.checksum, entry=result.entry)

    def resume(self, a: Action, src: Mover, existing: Entry, proof: Proof) -> ActionResult:
        """The target is the very object an interrupted run verified against the source:
        record it without reading either side again."""
        assert a.source is not None
        source = _stat_or_none(src, a.key)
        # A source changed since then is not given the target's digest (its delete, if any,
        # is skipped by its own live check).
        verified = source is None or _holds(source, a.size, a.mtime)
        detail = {
            "checksum": proof.checksum,
            "by": "journal",
            "run": proof.run_id,
            "action": proof.action_id,
            **entry_detail(existing),
        }
        self.note(a, "verified", detail)
        return ActionResult(
            a,
            "done",
            checksum=proof.checksum,
            entry=existing,
            verified=verified,
            resumed_from=(proof.run_id, proof.action_id),
        )

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
            self.note(a, "verified", {"checksum": digest, "by": "store-checksum", **entry_detail(target)})
            return ActionResult(a, "done", checksum=digest)
        checksum = verify_same(src, dst, a.key, self.digest)
        self.note(a, "verified", {"checksum": checksum, "by": "read-back", **entry_detail(target)})
        return ActionResult(a, "done", checksum=checksum)

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
        self.note(a, "deleted", None)
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


def unit_for(
    actions: list[Action],
    movers: Mapping[str, Mover],
    options: ApplyOptions,
    on_bytes: Callable[[int], None],
    *,
    report_steps: bool = True,
) -> _Unit:
    """The unit for ``actions`` as ``options`` shape it. A runner whose units run in other
    processes passes ``report_steps=False``: steps then travel back on the results."""
    journal = options.journal if report_steps else None
    on_step = None if journal is None else _reporter(journal)
    proofs = {a.id: options.proofs[a.id] for a in actions if a.id in options.proofs}
    return _Unit(
        actions, movers, options.digest, on_bytes, options.retry, options.stop, on_step=on_step, proofs=proofs
    )


def _reporter(journal: StepSink) -> StepReport:
    def report(action_id: int, step: str, detail: str | None, durable: bool) -> None:
        journal.add(action_id, step, detail, durable=durable)

    return report


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
    journal = options.journal
    try:
        while True:
            for unit in queue:
                if stopping():
                    break
                pending.add(pool.submit(unit_for(unit, movers, options, events.advanced).run))
                if len(pending) >= 4 * jobs:
                    break
            if not pending:
                return
            # A worker waiting for its durable step to be committed wakes us: an empty batch
            # lets the caller commit it.
            wake: Future[Any] | None = None if journal is None else journal.wake()
            finished, _ = wait(pending if wake is None else pending | {wake}, return_when=FIRST_COMPLETED)
            done = [future for future in finished if future is not wake]
            pending.difference_update(done)
            yield [future.result() for future in done]
    except KeyboardInterrupt:
        if journal is not None:
            journal.release()  # no more batches will be recorded: let waiting workers go on
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
        rows.extend((run_id, r.action.id, step, at, detail) for step, at, detail in r.steps)
        if r.resumed_from is not None and r.status == "done":
            detail = encode({"by_run": run_id, "action": r.action.id})
            rows.append((*r.resumed_from, "resumed", time.time(), detail))
    if rows:
        journal_steps.write(index, rows)


def _record_results(
    index: Index, run_id: int, results: list[ActionResult], report: ApplyReport, now: float
) -> None:
    for r in results:
        a = r.action
        first_seen = None
        if r.status == "done":
            report.done += 1
            report.bytes += r.bytes
            if a.op == "copy" and r.entry is not None and r.checksum:
                index.record_copy(
                    a.dataset, a.key, a.target, r.entry, r.checksum, now, verified=r.verified, source=a.source
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
    "unit_for",
]
