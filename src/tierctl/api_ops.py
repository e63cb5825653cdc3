"""The facade's operational half: scheduled runs, the run journal, history and status.

Like :mod:`tierctl.api` (which it builds on), no printing here; the daemon and the CLI
call these and present the results.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tierctl import api, schedule
from tierctl.errors import IndexLocked, TierctlError, UnknownName
from tierctl.executor import ApplyOptions, ApplyReport
from tierctl.index import journal
from tierctl.index import lock as index_lock
from tierctl.index.db import TierUsage
from tierctl.index.journal import ActionRecord, HistoryEvent, RunRecord, RunTotals
from tierctl.policies.model import Config


def _scheduled(config: Config) -> list[schedule.Scheduled]:
    return [schedule.Scheduled(p.name, p.dataset, p.schedule) for p in config.policies]


def _completed_runs(config: Config) -> dict[str, float]:
    if not os.path.exists(config.index_path):
        return {}
    with api.open_index(config) as index:
        rows = journal.completed_daemon_runs(index, schedule.DAEMON_TRIGGERS)
    return schedule.last_runs_by_policy(rows)


def due_now(config: Config, now: float, *, watching_since: float | None) -> list[schedule.Due]:
    """Policies whose latest slot has no completed scheduled run after it."""
    return schedule.due_policies(
        _scheduled(config), _completed_runs(config), now, config.daemon.timezone, watching_since
    )


def next_wakeup(config: Config, now: float) -> float | None:
    return schedule.next_wakeup(_scheduled(config), now, config.daemon.timezone)


# -- one scheduled run --------------------------------------------------------------------------
@dataclass
class CycleResult:
    """One scheduled scan -> plan -> apply of a dataset, serving its due policies."""

    dataset: str
    policy: str  # the due policies' names, joined
    trigger: str
    outcome: str  # ok | partial | failed | interrupted
    run_id: int | None = None
    planned: int = 0
    report: ApplyReport | None = None
    error: str | None = None
    locked: bool = False  # could not run: another process held the index
    warnings: list[str] = field(default_factory=list)
    started_at: float = 0.0
    finished_at: float = 0.0


def run_cycle(
    config: Config,
    dataset: str,
    due: list[schedule.Due],
    *,
    stop: threading.Event,
    lock_wait: float = 0.0,
    on_lock_wait: Callable[[index_lock.Holder | None], None] | None = None,
) -> CycleResult:
    """Scan, plan and apply ``dataset`` under the index's apply lock, recorded as one run.

    Every policy of the dataset is evaluated (the first matching rule across them decides);
    the run is recorded under the due policies' names. A run that cannot start (a tier
    that cannot be listed, the index held by someone else) is recorded too: failed, or
    interrupted when locked out so the next run tries again.
    """
    label = schedule.policy_label(due)
    trigger = schedule.CATCH_UP if any(d.trigger == schedule.CATCH_UP for d in due) else schedule.SCHEDULED
    result = CycleResult(dataset, label, trigger, "failed", started_at=time.time())
    options = ApplyOptions(
        jobs=config.daemon.jobs,
        digest=config.digest_algorithm,
        trigger=trigger,
        policy=label,
        stop=stop,
        retry=api.retry_backoff(config),
        max_failure_share=config.daemon.error_budget,
    )
    try:
        with api.lock_index(config, wait=lock_wait, should_stop=stop.is_set, on_wait=on_lock_wait):
            reports = api.scan(config, [dataset])
            result.warnings = [e for r in reports for e in r.errors]
            plan = api.plan(config, [dataset])
            result.planned = len(plan.actions)
            report = api.apply(config, plan, options=options)
        result.report, result.run_id, result.outcome = report, report.run_id, report.outcome
        result.error = report.error
        if result.warnings:
            _annotate(config, report.run_id, "; ".join(result.warnings))
    except IndexLocked as exc:
        result.locked, result.outcome, result.error = True, "interrupted", f"did not run: {exc}"
        result.run_id = record_unstarted_run(config, trigger, label, result.error, outcome="interrupted")
    except TierctlError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.run_id = record_unstarted_run(config, trigger, label, result.error)
    result.finished_at = time.time()
    return result


def _annotate(config: Config, run_id: int, note: str) -> None:
    with api.open_index(config) as index:
        journal.annotate_run(index, run_id, note)


def record_unstarted_run(
    config: Config, trigger: str, policy: str, error: str, *, outcome: str = "failed"
) -> int | None:
    """Record a run that failed before applying anything (so every run stays visible)."""
    try:
        with api.open_index(config) as index:
            run_id = index.start_run(trigger=trigger, planned=0, policy=policy)
            index.finish_run(run_id, outcome=outcome, done=0, failed=0, skipped=0, bytes_done=0, error=error)
            return run_id
    except TierctlError:
        return None


# -- the journal ----------------------------------------------------------------------------------
def runs(config: Config, *, limit: int = 50, policy: str | None = None) -> list[RunRecord]:
    if not os.path.exists(config.index_path):
        return []
    with api.open_index(config, create=False) as index:
        return journal.runs(index, limit=limit, policy=policy)


@dataclass
class RunDetail:
    run: RunRecord
    counts: dict[str, int]  # actions recorded, per status
    problems: list[ActionRecord]  # failed and skipped actions, each with its error

    @property
    def not_started(self) -> int:
        return max(0, self.run.planned - sum(self.counts.values()))


def run_detail(config: Config, run_id: int) -> RunDetail:
    with api.open_index(config, create=False) as index:
        record = journal.run(index, run_id)
        if record is None:
            raise UnknownName(f"no run {run_id} in the index", hint="list runs with `tierctl runs`")
        return RunDetail(
            record,
            journal.action_counts(index, run_id),
            journal.run_actions(index, run_id, statuses=("failed", "skipped")),
        )


def history(config: Config, key: str) -> list[HistoryEvent]:
    """Everything recorded about one object: scans that found it, every action applied."""
    with api.open_index(config, create=False) as index:
        events = journal.history(index, key)
    if not events:
        raise UnknownName(
            f"the index has no history for {key!r}",
            hint="give an object's full key, as `tierctl ls` prints it",
        )
    return events


# -- status ----------------------------------------------------------------------------------------
@dataclass
class PolicyStatus:
    name: str
    dataset: str
    schedule: str | None
    last_run: RunRecord | None
    next_due: float | None  # None: not scheduled
    due_now: bool


@dataclass
class Status:
    daemon: index_lock.Holder | None  # the running daemon, if any
    applying: index_lock.Holder | None  # whoever holds the apply lock now
    timezone: str
    policies: list[PolicyStatus]
    usage: list[TierUsage]
    indexed: bool


def daemon_holder(config: Config) -> index_lock.Holder | None:
    return index_lock.probe(index_lock.lock_path(config.index_path, index_lock.DAEMON))


def status(config: Config, now: float | None = None) -> Status:
    now = time.time() if now is None else now
    indexed = os.path.exists(config.index_path)
    latest: dict[str, RunRecord] = {}
    usage: list[TierUsage] = []
    if indexed:
        with api.open_index(config, create=False) as index:
            for record in journal.last_run_per_policy(index):
                for name in (record.policy or "").split(schedule.POLICY_SEPARATOR):
                    if name not in latest or latest[name].id < record.id:
                        latest[name] = record
            usage = index.usage()
    completed = _completed_runs(config)
    tz = config.daemon.timezone
    policies = []
    for p in _scheduled(config):
        due = schedule.decide(p, completed.get(p.name), now, tz, None)
        next_due = None if not p.schedule else (due.slot if due else schedule.next_slot(p.schedule, now, tz))
        policies.append(
            PolicyStatus(p.name, p.dataset, p.schedule, latest.get(p.name), next_due, due is not None)
        )
    return Status(
        daemon_holder(config),
        index_lock.probe(index_lock.lock_path(config.index_path)),
        tz,
        policies,
        usage,
        indexed,
    )


# -- metrics -------------------------------------------------------------------------------------
@dataclass
class MetricsSnapshot:
    totals: list[RunTotals]
    usage: list[TierUsage]
    last_success: dict[str, float]  # policy name -> finished_at of its latest ok run
    policies: list[str]


def metrics_snapshot(config: Config) -> MetricsSnapshot:
    totals: list[RunTotals] = []
    usage: list[TierUsage] = []
    if os.path.exists(config.index_path):
        with api.open_index(config, create=False) as index:
            totals = journal.run_totals(index)
            usage = index.usage()
    last_success: dict[str, float] = {}
    for t in totals:
        if t.outcome != "ok" or t.last_finished is None:
            continue
        for name in t.policy.split(schedule.POLICY_SEPARATOR):
            if name:
                last_success[name] = max(last_success.get(name, 0.0), t.last_finished)
    return MetricsSnapshot(totals, usage, last_success, [p.name for p in config.policies])
