"""When policies run. Pure: the clock and the last run times come in as arguments.

Schedules are cron expressions read by croniter: five fields (minute hour day month
weekday) or six with a leading seconds field (``*/2 * * * * *``: every two seconds),
evaluated in a configurable time zone (default UTC), daylight-saving moves included.

A policy is due when its latest slot (the newest schedule time at or before now) has
passed with no completed run since. So a window missed while the machine was off runs
once, on start, not once per missed tick; a run that was interrupted does not count,
so the next start picks it up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from functools import lru_cache

SCHEDULE_HINT = (
    'five fields "minute hour day month weekday" (e.g. "0 3 * * *"), '
    'or six with seconds first (e.g. "*/30 * * * * *")'
)

SCHEDULED = "schedule"
CATCH_UP = "catch-up"
MANUAL = "manual"
DAEMON_TRIGGERS = (SCHEDULED, CATCH_UP)


def problem(expression: str) -> str | None:
    """Why ``expression`` is not a schedule tierctl accepts, or None if it is."""
    from croniter import croniter

    fields = expression.split()
    if len(fields) not in (5, 6):
        return f"bad cron expression {expression!r}: a schedule has 5 or 6 fields, not {len(fields)}"
    if not croniter.is_valid(expression, second_at_beginning=True):
        return f"bad cron expression {expression!r}"
    return None


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The IANA time zone ``name``; ValueError if unknown."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def _iterator(expression: str, start: float, tz: str):  # type: ignore[no-untyped-def]
    from croniter import croniter

    return croniter(expression, datetime.fromtimestamp(start, zone(tz)), second_at_beginning=True)


def latest_slot(expression: str, now: float, tz: str = "UTC") -> float:
    """The newest schedule time at or before ``now``."""
    # croniter's get_prev is strict; start just past the current whole second to include it.
    return float(_iterator(expression, math.floor(now) + 1, tz).get_prev(float))


def slot_before(expression: str, slot: float, tz: str = "UTC") -> float:
    """The schedule time strictly before ``slot``."""
    return float(_iterator(expression, slot, tz).get_prev(float))


def next_slot(expression: str, now: float, tz: str = "UTC") -> float:
    """The first schedule time strictly after ``now``."""
    return float(_iterator(expression, now, tz).get_next(float))


@dataclass(frozen=True)
class Due:
    """A policy whose latest slot has no completed run after it."""

    policy: str
    dataset: str
    slot: float
    trigger: str  # schedule | catch-up


@dataclass(frozen=True)
class Scheduled:
    """What the scheduler needs to know of a policy."""

    name: str
    dataset: str
    schedule: str | None


def decide(
    policy: Scheduled, last_run: float | None, now: float, tz: str, watching_since: float | None
) -> Due | None:
    """Whether ``policy`` is due at ``now`` given when its last completed run started.

    The trigger is ``catch-up`` when the slot passed while nobody was watching: with a
    running daemon (``watching_since`` = when it started), a slot before its start; with
    ``--once`` from cron or a timer (``watching_since`` None), a policy that has never run
    or missed the whole window before this one. A policy that has never run counts as
    having missed its latest slot.
    """
    if not policy.schedule:
        return None
    slot = latest_slot(policy.schedule, now, tz)
    if last_run is not None and last_run >= slot:
        return None
    if watching_since is not None:
        late = slot < watching_since
    else:
        late = last_run is None or last_run < slot_before(policy.schedule, slot, tz)
    return Due(policy.name, policy.dataset, slot, CATCH_UP if late else SCHEDULED)


def due_policies(
    policies: Iterable[Scheduled],
    last_runs: Mapping[str, float],
    now: float,
    tz: str = "UTC",
    watching_since: float | None = None,
) -> list[Due]:
    """Every due policy, in file order."""
    out = []
    for policy in policies:
        due = decide(policy, last_runs.get(policy.name), now, tz, watching_since)
        if due is not None:
            out.append(due)
    return out


def group_by_dataset(due: Iterable[Due]) -> dict[str, list[Due]]:
    """Due policies per dataset: all policies of a dataset are planned together (the first
    matching rule across them decides), so one run serves every due policy of a dataset."""
    groups: dict[str, list[Due]] = {}
    for d in due:
        groups.setdefault(d.dataset, []).append(d)
    return groups


def next_wakeup(policies: Iterable[Scheduled], now: float, tz: str = "UTC") -> float | None:
    """The earliest schedule time after ``now`` over all policies; None if none is scheduled."""
    times = [next_slot(p.schedule, now, tz) for p in policies if p.schedule]
    return min(times) if times else None


# A run serving several policies of one dataset records their names joined by this.
POLICY_SEPARATOR = ", "


def policy_label(due: Iterable[Due]) -> str:
    return POLICY_SEPARATOR.join(d.policy for d in due)


def last_runs_by_policy(rows: Iterable[tuple[str | None, float]]) -> dict[str, float]:
    """Latest start per policy name from (policy label, started_at) rows of completed runs."""
    latest: dict[str, float] = {}
    for label, started in rows:
        for name in (label or "").split(POLICY_SEPARATOR):
            if name and started > latest.get(name, -math.inf):
                latest[name] = started
    return latest
