"""Run a plan's units on a Dask distributed cluster (``tierctl apply --executor dask://HOST:8786``).

What runs where:
- The coordinating process (the CLI or the daemon) keeps the index and the run journal: it
  plans, groups actions into units (one object's actions, in order), ships units to the
  cluster in batches, and records each batch's results in one index transaction as it comes
  back (:func:`tierctl.executor.execute` does the recording; this module never touches the
  index).
- A worker runs a batch's units one after another with the same code as the local executor
  (:class:`tierctl.unit.Unit`): live preconditions, verified copies, and the safe-delete
  checks. Every action of a unit runs on the cluster, deletes included: a move's delete
  must follow its copy in one place, and its checks (every kept tier holds the content)
  are made against the stores, which look the same from any machine.

Credentials never travel in a task. A task carries each tier's name, URL, mover kind and
options *as written in the policy file*: a ``${NAME}`` reference is expanded by the mover
on the worker, from the worker's own environment; a credential written literally is refused
before anything is submitted (:class:`LiteralCredential`).

Failures: dask reschedules the tasks of a lost worker elsewhere (up to the scheduler's
``distributed.scheduler.allowed-failures``); a unit that ran partly on the dead worker is
safe to run again because every action re-checks the stores first (a copy already on the
target is verified, not redone; a delete already done is done). The coordinator takes each
batch's result once, so each action is recorded once. A batch that cannot finish (its
workers kept dying, an error in the task) is recorded as failed, with the reason.

``dask.distributed`` is imported only when a runner connects: ``tierctl --help`` stays fast.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tierctl
from tierctl.errors import TierctlError
from tierctl.executor import ActionResult, ApplyOptions, Events, UnitRunner
from tierctl.index.steps import Proof
from tierctl.movers.base import Mover
from tierctl.movers.registry import TierTarget, open_mover
from tierctl.movers.retry import Backoff, RetryingMover
from tierctl.plan import Action
from tierctl.unit import Unit

if TYPE_CHECKING:
    from distributed import Client, Future

log = logging.getLogger("tierctl.executor_dask")

CONNECT_TIMEOUT = 5.0  # seconds to reach the scheduler before giving up
MAX_BATCH_UNITS = 64  # objects per task: amortizes the scheduler's per-task cost (~1 ms)
MAX_BATCH_BYTES = 256 << 20  # bytes to copy or verify per task: bounds work redone on a lost worker
BATCHES_PER_SLOT = 4  # aim for at least this many batches per worker thread (load balance)
IN_FLIGHT_PER_SLOT = 2  # batches submitted per worker thread: one running, one queued
SLOTS_REFRESH = 5.0  # seconds between looks at the cluster's size (workers come and go)
NO_WORKERS_TIMEOUT = 600.0  # give up when work is waiting and the cluster has had no worker this long
POLL = 1.0  # seconds between checks of the cluster while waiting for results
_LOST = ("closing", "closed", "failed")  # client states after it gave up reconnecting

# Tier options that hold credentials and must arrive as ${NAME} references. A ``token``
# may also be a GCS mode or a key file path, which are not secrets.
_SECRET_OPTIONS = ("key", "secret", "session_token", "token")
_TOKEN_MODES = ("anon", "google_default", "cloud", "browser", "cache")
_REFERENCE = re.compile(r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*\}")


class ClusterUnavailable(TierctlError):
    """The Dask scheduler cannot be reached, was lost, or its workers cannot run tierctl."""

    default_hint = (
        "check the address and that the scheduler runs (`dask scheduler`, or your cluster's"
        " scheduler_address); every worker needs the same tierctl version installed"
    )


class LiteralCredential(TierctlError):
    """A tier's credential is written in the policy file and would be shipped to the cluster."""


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker needs to build its movers and run units; shipped with every batch.
    ``tiers`` hold the options as written (``${NAME}`` unexpanded): never a secret value."""

    tiers: tuple[TierTarget, ...]
    mover_retry: Backoff | None
    digest: str
    unit_retry: Backoff | None
    version: str = tierctl.__version__

    def cache_key(self, tier: str) -> str:
        target = next(t for t in self.tiers if t.name == tier)
        return repr((target.name, target.url, target.mover, sorted(target.options.items()), self.mover_retry))


# -- on the worker --------------------------------------------------------------------------------
_movers: dict[str, Mover] = {}  # per worker process: cache key -> open mover, shared by its threads
_movers_lock = threading.Lock()
_MAX_CACHED_MOVERS = 64


def _worker_mover(setup: WorkerSetup, tier: str) -> Mover:
    key = setup.cache_key(tier)
    with _movers_lock:
        mover = _movers.get(key)
        if mover is None:
            target = next(t for t in setup.tiers if t.name == tier)
            opened: Mover = open_mover(target)
            mover = RetryingMover(opened, setup.mover_retry) if setup.mover_retry else opened
            if len(_movers) >= _MAX_CACHED_MOVERS:  # old configs: forgotten, not closed (may be in use)
                _movers.pop(next(iter(_movers)))
            _movers[key] = mover
        return mover


def _tiers_of(unit: Sequence[Action]) -> list[str]:
    names: dict[str, None] = {}
    for a in unit:
        names[a.target] = None
        if a.source:
            names[a.source] = None
        names.update(dict.fromkeys(a.keep))
    return list(names)


def _failed(unit: Sequence[Action], error: str) -> list[ActionResult]:
    return [ActionResult(a, "failed", error=error) for a in unit]


def run_batch(
    setup: WorkerSetup, units: list[list[Action]], proofs: Mapping[int, Proof] | None = None
) -> list[list[ActionResult]]:
    """The task: run ``units`` in order on this worker; one result list per unit. Never raises
    for one unit's trouble (a tier that cannot be opened here, a bug): that unit fails with
    the reason and the others still run."""
    from distributed import get_worker

    try:
        where = f"worker {get_worker().address}"
    except ValueError:  # pragma: no cover - only outside a worker
        where = "worker"
    out: list[list[ActionResult]] = []
    for unit in units:
        try:
            movers = {name: _worker_mover(setup, name) for name in _tiers_of(unit)}
        except TierctlError as exc:
            hint = f" ({exc.hint})" if exc.hint else ""
            out.append(_failed(unit, f"{where}: {exc}{hint}"))
            continue
        try:
            worker = Unit(unit, movers, setup.digest, _no_progress, setup.unit_retry, None, proofs=proofs)
            out.append(worker.run())
        except Exception as exc:  # a bug: record it against this unit, log the traceback there
            log.exception("tierctl unit for %s failed on %s", unit[0].key, where)
            out.append(_failed(unit, f"{where}: {type(exc).__name__}: {exc}"))
    return out


def _no_progress(nbytes: int) -> None:
    """Bytes are reported per finished batch, from the coordinator."""


def worker_version() -> str:
    """Run on every worker before a run: proves it can import tierctl, and which version."""
    return tierctl.__version__


# -- in the coordinator ---------------------------------------------------------------------------
def check_credentials(tiers: Mapping[str, TierTarget]) -> None:
    """Refuse tiers whose credentials are written literally: with a cluster they would be
    pickled into every task. ``${NAME}`` references are resolved on each worker."""
    for tier in tiers.values():
        for option in _SECRET_OPTIONS:
            value = tier.options.get(option)
            if not isinstance(value, str) or not _REFERENCE.sub("", value):
                continue
            if option == "token" and (value in _TOKEN_MODES or "/" in value or value.endswith(".json")):
                continue
            raise LiteralCredential(
                f"tier {tier.name!r}: option {option!r} is written in the policy file; the Dask executor"
                " would ship it to every worker",
                hint=f"write `{option}: ${{SOME_VARIABLE}}` and set SOME_VARIABLE in each worker's"
                " environment, or leave it out and let workers use their own credentials"
                " (instance role, profile)",
            )


def plan_batches(units: list[list[Action]], slots: int) -> Iterator[list[list[Action]]]:
    """Consecutive units in batches: at most ``MAX_BATCH_UNITS`` units and ``MAX_BATCH_BYTES``
    of copying/verifying each (one big object is a batch of its own), and small enough that
    every worker thread gets several batches."""
    per_batch = max(1, min(MAX_BATCH_UNITS, math.ceil(len(units) / (max(1, slots) * BATCHES_PER_SLOT))))
    batch: list[list[Action]] = []
    batch_bytes = 0
    for unit in units:
        size = sum(a.size for a in unit if a.op in ("copy", "verify"))
        if batch and (len(batch) >= per_batch or batch_bytes + size > MAX_BATCH_BYTES):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(unit)
        batch_bytes += size
    if batch:
        yield batch


class DaskRunner:
    """A :class:`tierctl.executor.UnitRunner` that ships batches of units to a Dask cluster."""

    def __init__(self, client: Client, tiers: Mapping[str, TierTarget], mover_retry: Backoff | None) -> None:
        check_credentials(tiers)
        self.client = client
        self.tiers = tuple(tiers.values())
        self.mover_retry = mover_retry
        self._slots = 0
        self._slots_at = -math.inf

    def slots(self) -> int:
        """Worker threads in the cluster now (cached for ``SLOTS_REFRESH`` s)."""
        now = time.monotonic()
        if now - self._slots_at >= SLOTS_REFRESH:
            self._slots = sum(self.client.nthreads().values())
            self._slots_at = now
        return self._slots

    def __call__(
        self,
        units: list[list[Action]],
        options: ApplyOptions,
        events: Events,
        stopping: Callable[[], bool],
    ) -> Iterator[list[list[ActionResult]]]:
        setup = WorkerSetup(self.tiers, self.mover_retry, options.digest, options.retry)
        batches = plan_batches(units, self.slots())
        run_token = uuid.uuid4().hex[:12]
        finished: queue.Queue[Future] = queue.Queue()
        in_flight: dict[Future, list[list[Action]]] = {}
        submitted = 0
        no_workers_since: float | None = None
        exhausted = False
        try:
            while True:
                while not exhausted and not stopping() and self._connected():
                    if len(in_flight) >= self._in_flight_limit():
                        break
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    # Verifications a killed run made (the journal's proofs) travel with their
                    # actions, so a resumed copy is not read again on the cluster either.
                    proofs = {a.id: options.proofs[a.id] for u in batch for a in u if a.id in options.proofs}
                    future = self.client.submit(
                        run_batch,
                        setup,
                        batch,
                        proofs,
                        key=f"tierctl-apply-{run_token}-{submitted}",
                        pure=False,
                    )
                    submitted += 1
                    in_flight[future] = batch
                    future.add_done_callback(finished.put)
                if not in_flight and (exhausted or stopping()):
                    return
                try:
                    ready = [finished.get(timeout=POLL)]
                except queue.Empty:
                    if self.client.status in _LOST:
                        reason = "lost the Dask scheduler before this batch's result came back"
                        lost = [_failed(unit, reason) for batch in in_flight.values() for unit in batch]
                        in_flight.clear()
                        if lost:
                            yield lost
                        raise ClusterUnavailable(
                            f"lost the Dask scheduler ({self.client.status})",
                            hint="finished work is recorded; run the same command again to continue",
                        ) from None
                    if self._connected():
                        no_workers_since = self._watch(no_workers_since)
                    continue
                while not finished.empty():
                    ready.append(finished.get_nowait())
                # Each batch is taken once: a future reported twice is not recorded twice.
                batches_done = [(f, in_flight.pop(f)) for f in dict.fromkeys(ready) if f in in_flight]
                units_done = [u for f, batch in batches_done for u in self._collect(f, batch)]
                events.advanced(sum(r.bytes for unit in units_done for r in unit))
                yield units_done
        except KeyboardInterrupt:
            # Hurry: record what already came back; tasks still running may finish their
            # copies unrecorded, which the next run finds and verifies.
            done = [f for f in in_flight if f.done()]
            units_done = [u for f in done for u in self._collect(f, in_flight.pop(f))]
            if units_done:
                yield units_done
            raise
        finally:
            if in_flight and self.client.status == "running":
                self.client.cancel(list(in_flight))

    def _in_flight_limit(self) -> int:
        return IN_FLIGHT_PER_SLOT * max(1, self.slots())

    def _connected(self) -> bool:
        """False while the client reconnects to a scheduler it lost (or after it gave up)."""
        return self.client.status == "running"

    def _watch(self, no_workers_since: float | None) -> float | None:
        """Between results: workers to run the tasks, or give up after a while."""
        if self.slots():
            return None
        now = time.monotonic()
        if no_workers_since is None:
            log.warning("the Dask cluster has no workers; waiting for some to join")
            return now
        if now - no_workers_since > NO_WORKERS_TIMEOUT:
            raise ClusterUnavailable(
                f"the Dask cluster has had no workers for {NO_WORKERS_TIMEOUT:.0f} s",
                hint="start workers (`dask worker SCHEDULER:8786`) or scale the cluster up",
            )
        return no_workers_since

    @staticmethod
    def _collect(future: Future, batch: list[list[Action]]) -> list[list[ActionResult]]:
        """A finished batch's results, or the batch failed with the reason; taken once."""
        try:
            results = future.result()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the task's error, or a cancellation (asyncio's is a BaseException)
            from distributed.scheduler import KilledWorker

            if isinstance(exc, KilledWorker):
                reason = "the Dask workers running this batch kept dying (KilledWorker)"
            else:
                reason = f"the Dask task failed: {type(exc).__name__}: {exc}"
            return [_failed(unit, reason) for unit in batch]
        if len(results) != len(batch) or any(len(r) != len(u) for r, u in zip(results, batch, strict=True)):
            return [
                _failed(unit, "the Dask worker returned results that do not match the batch")
                for unit in batch
            ]
        return results


def _connect(address: str, timeout: float) -> Client:
    from distributed import Client

    try:
        return Client(address, timeout=timeout, set_as_default=False, name="tierctl")
    except (OSError, TimeoutError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        detail = "" if reason.startswith("Timed out") else f": {reason}"
        raise ClusterUnavailable(
            f"cannot reach the Dask scheduler at {address} within {timeout:g} s{detail}"
        ) from None


def _check_workers(client: Client) -> None:
    """Every connected worker imports tierctl at this version (workers joining later are
    checked by their tasks: a failed import fails that batch, with the reason)."""
    try:
        versions: dict[str, Any] = client.run(worker_version, on_error="return")
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailable(f"the Dask workers did not answer: {exc}") from None
    for worker, version in sorted(versions.items()):
        if isinstance(version, BaseException):
            raise ClusterUnavailable(
                f"Dask worker {worker} cannot run tierctl: {type(version).__name__}: {version}",
                hint=f"install tierctl {tierctl.__version__} (and the movers your tiers need) on every"
                " worker",
            )
        if version != tierctl.__version__:
            raise ClusterUnavailable(
                f"Dask worker {worker} runs tierctl {version}, this process {tierctl.__version__}",
                hint="install the same tierctl version on the workers and here",
            )


@contextmanager
def dask_runner(
    executor: str | Client,
    tiers: Mapping[str, TierTarget],
    *,
    mover_retry: Backoff | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> Iterator[UnitRunner]:
    """A runner on the cluster at ``executor`` (``tcp://HOST:PORT`` or ``tls://...``), or on an
    already connected ``distributed.Client`` (left open). Raises :class:`ClusterUnavailable`
    (unreachable, workers without tierctl) or :class:`LiteralCredential` before any work."""
    check_credentials(tiers)
    own = isinstance(executor, str)
    client = _connect(executor, connect_timeout) if isinstance(executor, str) else executor
    try:
        _check_workers(client)
        yield DaskRunner(client, tiers, mover_retry)
    finally:
        if own:
            client.close()


__all__ = [
    "ClusterUnavailable",
    "DaskRunner",
    "LiteralCredential",
    "WorkerSetup",
    "check_credentials",
    "dask_runner",
    "plan_batches",
    "run_batch",
]
