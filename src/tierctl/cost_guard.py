"""The cost guard: which copies and transitions of a plan lose money, and leaving them out.

A write into a class with a minimum billable size or a minimum storage duration loses money
when the object is smaller than the minimum, or when the policies will take it off that class
before the minimum is up (the rest is billed anyway); a transition out of such a class loses
money when the placement last changed there less than the minimum ago; a restore loses money
when every copy and transition it is made for would be held. A held action is left out with
every action that waits for it; a policy with ``allow_costly`` is exempt, and
``tierctl plan --allow-costly`` turns the guard off (:func:`tierctl.cost.assess`).
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tierctl.explain import NextChange, next_change
from tierctl.model import ObjectSnapshot
from tierctl.plan import Action, Plan
from tierctl.planner import after_restore
from tierctl.policies.evaluate import current_version, decide
from tierctl.policies.model import Config
from tierctl.policies.units import format_size

if TYPE_CHECKING:
    from tierctl.cost import CostModel, Prices

DAY = 86400.0


@dataclass(frozen=True)
class Skipped:
    """An action the guard left out, why, and the actions dropped with it."""

    action: Action
    reason: str
    dropped: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        a = self.action
        return {
            "id": a.id,
            "op": a.op,
            "dataset": a.dataset,
            "key": a.key,
            "source": a.source,
            "target": a.target,
            "bytes": a.size,
            "reason": self.reason,
            "dropped": list(self.dropped),
        }


def costly(
    action: Action, model: CostModel, config: Config, obj: ObjectSnapshot | None, now: float
) -> str | None:
    """Why writing ``action``'s object into its target class loses money, or None."""
    if action.op not in ("copy", "transition") or action.expect is not None or not model.guarded:
        return None
    label = f"tier {action.target!r}" + (f" ({model.source})" if model.source != "none" else "")
    if action.size < model.min_billable:
        return (
            f"{format_size(action.size)} is below the minimum billable size of {label},"
            f" {format_size(model.min_billable)} per object"
        )
    change = leaves_early(action.target, model, config, obj, now) if obj is not None else None
    if change is not None:
        days = (change.at - now) / DAY
        fate = "deleted" if change.delete else f"moved to [{', '.join(change.desired)}]"
        return (
            f"it would be {fate} in {days:.0f} days (policy {change.policy!r} rule {change.rule}),"
            f" before the {model.min_duration / DAY:.0f}-day minimum storage duration of {label}"
        )
    return None


def leaves_class_early(
    action: Action, model: CostModel, obj: ObjectSnapshot | None, now: float
) -> str | None:
    """Why ``action``, a transition out of its source class (priced by ``model``), loses
    money now, or None: the placement's last recorded change (``changed_at``: a class change
    tierctl made, or new content, tags or metadata a scan found) is more recent than the
    class's minimum duration, so the rest of the minimum would be billed on top of the new
    class's storage. A placement with no recorded change counts as old enough: its first
    sighting says it was there by then, not when it entered its class."""
    if action.op != "transition" or action.source is None or model.min_duration <= 0 or obj is None:
        return None
    placement = next((p for p in obj.placements if p.tier == action.source and p.state == "present"), None)
    if placement is None or placement.changed_at is None:
        return None
    days_in = max(0.0, now - placement.changed_at) / DAY
    days_left = model.min_duration / DAY - days_in
    if days_left <= 0:
        return None
    label = f"tier {action.source!r}" + (f" ({model.source})" if model.source != "none" else "")
    return (
        f"its placement on {label} last changed {days_in:.0f} days ago; leaving that class before its"
        f" {model.min_duration / DAY:.0f}-day minimum storage duration bills the other {days_left:.0f} days"
        f" on top of tier {action.target!r}"
    )


def leaves_early(
    tier: str, model: CostModel, config: Config, obj: ObjectSnapshot, now: float
) -> NextChange | None:
    """The first change of the policies, within ``tier``'s minimum duration, that deletes the
    object or takes it off ``tier`` (found with explain.next_change), else None."""
    if model.min_duration <= 0:
        return None
    present = tuple(p for p in obj.placements if p.state == "present" and p.tier in config.tiers)
    if not present:
        return None
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    decision = decide(config, obj, current_version(present, tier_order), now)
    if decision is None:
        return None
    facts = replace(decision.facts, tiers=frozenset(decision.desired))  # as the plan leaves it
    horizon, at = now + model.min_duration, now
    for _ in range(32):  # each step passes one threshold of a rule condition
        change = next_change(config, obj.dataset, facts, at)
        if change is None or change.at >= horizon:
            return None
        if change.policy is not None and (change.delete or tier not in change.desired):
            return change
        step = change.at - at + 1e-3  # just past the threshold, as explain samples it
        facts, at = facts.later(step), at + step
        if change.policy is not None:
            facts = replace(facts, tiers=frozenset(change.desired))
    return None


def loses_money(
    action: Action, config: Config, prices: Prices, obj: ObjectSnapshot | None, now: float
) -> str | None:
    """Why the guard holds ``action``, or None."""
    if action.op == "restore":
        return restore_for_nothing(action, config, prices, obj, now)
    reason = costly(action, prices[action.target], config, obj, now)
    if reason is None and action.source is not None:
        reason = leaves_class_early(action, prices[action.source], obj, now)
    return reason


def restore_for_nothing(
    action: Action, config: Config, prices: Prices, obj: ObjectSnapshot | None, now: float
) -> str | None:
    """Why ``action``, a restore, buys nothing, or None: a restore is paid for only so that
    the copies and transitions a later run plans once it is done (planner.after_restore)
    can read the object, and the guard holds every one of them now."""
    if obj is None:
        return None
    later = [a for a in after_restore(config, obj, action, now) if a.op in ("copy", "transition")]
    held = [(a, loses_money(a, config, prices, obj, now)) for a in later]
    if not held or any(reason is None for _, reason in held):
        return None
    first, reason = held[0]
    more = f" (and {len(held) - 1} more)" if len(held) > 1 else ""
    return (
        f"it is only needed for the {first.op} {first.source} -> {first.target}{more},"
        f" which the guard holds: {reason}"
    )


def apply_guard(
    plan: Plan, config: Config, prices: Prices, history: Mapping[tuple[str, str], ObjectSnapshot], now: float
) -> list[Skipped]:
    """Remove money-losing copies and transitions, and restores made only for such ones,
    from ``plan``, with every action that requires one (so a delete never runs without the
    copy it waits for), and the verifies of an object left with no delete. Actions of a
    policy with ``allow_costly`` are kept. Returns what was skipped."""
    reasons: dict[int, str] = {}
    exempt = {p.name for p in config.policies if p.allow_costly}
    guarded, min_duration = prices.guarded, prices.min_duration
    for a in plan.actions:
        if a.policy in exempt:
            continue
        # What loses_money surely passes, told without calling it (it runs per action):
        # no restore, no write into a guarded class, no transition out of a class with a
        # minimum duration.
        if (
            a.op != "restore"
            and (a.op not in ("copy", "transition") or a.expect is not None or a.target not in guarded)
            and (a.op != "transition" or a.source is None or min_duration.get(a.source, 0.0) <= 0)
        ):
            continue
        reason = loses_money(a, config, prices, history.get((a.dataset, a.key)), now)
        if reason is not None:
            reasons[a.id] = reason
    if not reasons:
        return []
    dependents: dict[int, list[int]] = defaultdict(list)
    for a in plan.actions:
        for required in a.requires:
            dependents[required].append(a.id)
    by_id = {a.id: a for a in plan.actions}
    gone: set[int] = set(reasons)
    skipped: list[Skipped] = []
    for action_id, reason in reasons.items():
        dropped: list[int] = []
        stack = list(dependents[action_id])
        while stack:
            dependent = stack.pop()
            if dependent in gone:
                continue
            gone.add(dependent)
            dropped.append(dependent)
            stack.extend(dependents[dependent])
        skipped.append(Skipped(by_id[action_id], reason, tuple(sorted(dropped))))
    touched = {(by_id[i].dataset, by_id[i].key) for i in gone}
    still_deleting = {(a.dataset, a.key) for a in plan.actions if a.op == "delete" and a.id not in gone}
    for a in plan.actions:
        if a.op == "verify" and (a.dataset, a.key) in touched - still_deleting:
            gone.add(a.id)
    plan.actions = [a for a in plan.actions if a.id not in gone]
    return skipped
