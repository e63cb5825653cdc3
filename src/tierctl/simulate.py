"""What the layout will be, day by day, if the policies run and every plan succeeds.

Pure: the planner runs with a shifted clock over an in-memory copy of the placements,
and each day's plan is applied to that copy (copies add a placement, deletes remove
one). Nothing touches the index or a store.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from tierctl.errors import TierctlError
from tierctl.model import ObjectSnapshot, Placement
from tierctl.plan import Action
from tierctl.planner import make_plan
from tierctl.policies.model import Config
from tierctl.policies.units import parse_duration

DAY = 86400.0


@dataclass(frozen=True)
class TierLoad:
    objects: int
    bytes: int


@dataclass
class Day:
    """The layout after the plan made at ``at`` has been applied."""

    day: int
    at: float
    tiers: dict[str, TierLoad]
    actions: Counter[str] = field(default_factory=Counter)  # op -> count

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "date": _date(self.at),
            "at": self.at,
            "tiers": {t: {"objects": n.objects, "bytes": n.bytes} for t, n in self.tiers.items()},
            "actions": dict(self.actions),
        }


@dataclass
class Simulation:
    start: float
    initial: dict[str, TierLoad]
    days: list[Day]

    def changed_days(self) -> list[Day]:
        """Days on which the plan did something."""
        return [d for d in self.days if d.actions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "initial": {t: {"objects": n.objects, "bytes": n.bytes} for t, n in self.initial.items()},
            "days": [d.to_dict() for d in self.days],
        }


def simulate(
    config: Config, objects: Iterable[ObjectSnapshot], now: float, days: int, *, step: float = DAY
) -> Simulation:
    """Plan and apply in memory at ``now``, ``now + step``, ... for ``days`` steps.

    Delete limits are not enforced (a simulation shows what a forced run would do)."""
    state = {(o.dataset, o.key): o for o in objects}
    result = Simulation(now, _layout(config, state.values()), [])
    for day in range(days + 1):
        at = now + day * step
        plan = make_plan(config, list(state.values()), at, force=True)
        counts: Counter[str] = Counter()
        for action in plan.actions:
            counts[action.op] += 1
            _apply(config, state, action, at)
        result.days.append(Day(day, at, _layout(config, state.values()), counts))
    return result


def _apply(config: Config, state: dict[tuple[str, str], ObjectSnapshot], action: Action, at: float) -> None:
    obj = state.get((action.dataset, action.key))
    if obj is None:
        return
    others = tuple(p for p in obj.placements if p.tier != action.target)
    if action.op == "copy":
        source = next((p for p in obj.placements if p.tier == action.source), None)
        placement = Placement(
            action.dataset,
            action.key,
            action.target,
            action.size,
            action.mtime,
            action.checksum,
            config.tiers[action.target].storage_class,
            first_seen=at,
            verified_at=at,
            # A copy carries the object's tags and metadata (as Index.record_copy does).
            tags=None if source is None else source.tags,
            metadata=None if source is None else source.metadata,
        )
        state[(action.dataset, action.key)] = replace(obj, placements=(*others, placement))
    elif action.op == "verify":
        placements = tuple(
            replace(p, verified_at=at) if p.tier == action.target else p for p in obj.placements
        )
        state[(action.dataset, action.key)] = replace(obj, placements=placements)
    elif action.op == "delete":
        if others:
            state[(action.dataset, action.key)] = replace(obj, placements=others)
        else:
            del state[(action.dataset, action.key)]


def _layout(config: Config, objects: Iterable[ObjectSnapshot]) -> dict[str, TierLoad]:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in objects:
        for p in obj.placements:
            if p.state == "present":
                counts[p.tier] += 1
                sizes[p.tier] += p.size
    return {t: TierLoad(counts[t], sizes[t]) for t in config.tiers}


def parse_instant(text: str, now: float) -> float:
    """A point in time: an ISO date or date-time (UTC unless it says otherwise), or an
    offset from now such as ``+30d``."""
    text = text.strip()
    if text.startswith("+"):
        try:
            return now + parse_duration(text[1:])
        except ValueError as exc:
            raise TierctlError(str(exc), hint="e.g. --as-of +30d or --as-of 2026-11-28") from None
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TierctlError(
            f"bad date {text!r}", hint="give an ISO date (2026-11-28), a date-time, or an offset (+30d)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d")
