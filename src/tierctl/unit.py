"""One unit of a run: the actions of one object, in plan order, on one worker.

Every precondition is checked against the live stores, not the index: an object that
changed since it was planned is skipped, never overwritten or deleted; a delete runs only
when each kept tier holds the current content. Units run on the executor's threads
(:mod:`tierctl.executor`) or on Dask workers (:mod:`tierctl.executor_dask`); they never
touch the index: they report steps through ``on_step`` or return them on their results.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tierctl.errors import (
    ObjectArchived,
    ObjectChanged,
    ObjectExists,
    ObjectNotFound,
    TierctlError,
    VerificationFailed,
)
from tierctl.index.steps import Proof, encode, entry_detail
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.movers.base import Mover, MoverWrapper
from tierctl.movers.digest import algorithm_of, digest_of
from tierctl.movers.retry import Backoff, is_retryable
from tierctl.movers.transfer import copy_verified, verify_same
from tierctl.plan import Action, Expect

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


def _holds(entry: Entry, size: int, mtime: float) -> bool:
    return entry.size == size and abs(entry.mtime - mtime) <= MTIME_WINDOW


def _described(entry: Entry | Expect) -> str:
    return f"{entry.size} bytes, mtime {entry.mtime:.6f}"


def _stat_or_none(mover: Mover, key: str) -> Entry | None:
    try:
        return mover.stat(key)
    except ObjectNotFound:
        return None


class _JournaledWrites(MoverWrapper):
    """The target of one copy: reports when its write starts and returns, and the id of
    any multipart upload the store starts on the way. ``if_absent``: every write is one."""

    def __init__(
        self,
        inner: Mover,
        note: Callable[[str, dict[str, Any] | None, bool], None],
        *,
        if_absent: bool = False,
    ) -> None:
        super().__init__(inner)
        self.note = note
        self.if_absent = if_absent

    def write(self, key: str, chunks: Iterable[bytes], **options: Any) -> Entry:
        from tierctl.movers.s3 import UPLOAD_STARTED

        if self.if_absent:
            options["if_absent"] = True
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


class Unit:
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
        # Planned onto an absent target of a store that can refuse to replace an object: the
        # write itself checks, no stat first (on small objects that stat is every other
        # request). An object that appeared since the scan, or a source that is gone (the
        # target may be all there is), is then handled as it always is, from a stat.
        # (A copy an interrupted run verified is most likely there: stat it, send no bytes.)
        target = self.movers[a.target]
        if a.expect is None and target.capabilities.conditional_create and a.id not in self.proofs:
            try:
                return self._copy(a, create_only=True)
            except (ObjectExists, ObjectNotFound):
                pass
        return self._copy(a, create_only=False)

    def _copy(self, a: Action, *, create_only: bool) -> ActionResult:
        assert a.source is not None
        src, dst = self.movers[a.source], self.movers[a.target]
        existing = None if create_only else _stat_or_none(dst, a.key)
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
                planned = "nothing" if a.expect is None else _described(a.expect)
                return ActionResult(
                    a,
                    "skipped",
                    error=f"{a.target} holds a different {a.key} than planned; not overwritten"
                    f" (found {_described(existing)}, planned {planned})",
                )
        result = copy_verified(
            src,
            a.key,
            _JournaledWrites(
                dst, lambda step, detail, durable: self.note(a, step, detail, durable), if_absent=create_only
            ),
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
