"""Why an object is where the policies want it: the deciding rule, why each earlier rule did
not match, the desired placement against the current one, and when that next changes.

Pure: a function of the config, one object's placements and the clock.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from tierctl.model import ObjectSnapshot, Placement
from tierctl.policies.evaluate import (
    current_version,
    desired_tiers,
    facts_for,
    matching_policy_rule,
    metadata_wanted,
    relative_key,
)
from tierctl.policies.expr import (
    FIELDS,
    And,
    ClassRef,
    Compare,
    Const,
    Facts,
    Match,
    Node,
    Not,
    OnTier,
    Or,
    Select,
    UnknownFact,
    field_for,
    time_thresholds,
)
from tierctl.policies.globs import selected
from tierctl.policies.model import Config, Policy, Rule
from tierctl.policies.units import format_duration, format_size

# Sampled just after a threshold so strict and non-strict comparisons have both flipped.
_AFTER = 1e-3


@dataclass(frozen=True)
class RuleCheck:
    policy: str
    rule: int
    when: str
    matched: bool
    why_not: tuple[str, ...] = ()  # the parts of the condition that were false


@dataclass(frozen=True)
class PolicyCheck:
    policy: str
    selected: bool
    rules: tuple[RuleCheck, ...] = ()


@dataclass(frozen=True)
class NextChange:
    at: float
    policy: str | None
    rule: int | None
    delete: bool
    desired: tuple[str, ...]

    def outcome(self) -> str:
        if self.policy is None:
            return "no rule matches (left alone)"
        return "delete" if self.delete else f"place [{', '.join(self.desired)}]"


@dataclass
class Explanation:
    dataset: str
    key: str
    now: float
    facts: dict[str, Any]
    checks: list[PolicyCheck]
    current: tuple[str, ...]  # tiers holding the current version
    stale: tuple[str, ...]  # tiers holding older content
    policy: str | None = None
    rule: int | None = None
    when: str | None = None
    delete: bool = False
    desired: tuple[str, ...] = ()
    next_change: NextChange | None = None
    to_add: tuple[str, ...] = field(default_factory=tuple)
    to_remove: tuple[str, ...] = field(default_factory=tuple)
    # Why no rule could be evaluated: one needs tags or metadata that are not known.
    undecided: str | None = None
    # What the dataset's rules test beyond sizes and times: "tags" and/or "metadata".
    tested: frozenset[str] = frozenset()

    @property
    def decided(self) -> bool:
        return self.policy is not None

    def outcome(self) -> str:
        if self.undecided:
            return f"undecided: {self.undecided}; the object is left alone"
        if not self.decided:
            return "no rule matches: the object is left alone"
        return "delete" if self.delete else f"place [{', '.join(self.desired)}]"

    def next_change_text(self) -> str:
        change = self.next_change
        if change is None:
            return "no change falls due while only time passes"
        days = (change.at - self.now) / 86400
        when = f"on {_date(change.at)}, in {_in(days)}"
        if change.policy is None:
            return f"no rule matches any more {when}"
        if change.delete:
            return f"deleted {when} by policy {change.policy!r} rule {change.rule}"
        before, after = ", ".join(self.desired) or "-", ", ".join(change.desired)
        return f"moves from [{before}] to [{after}] {when} (policy {change.policy!r} rule {change.rule})"

    def attribute_lines(self) -> list[str]:
        """The object's tags and/or metadata, for the families the rules test (the text
        output shows what a `tag.KEY` / `meta.KEY` condition saw): ``tags: team="ml"``,
        ``none`` when the object has none, ``not known`` when no scan has read them."""
        lines = []
        for family, fact in (("tags", "tags"), ("metadata", "meta")):
            if family not in self.tested or not self.facts:
                continue
            values = self.facts.get(fact)
            if values is None:
                text = "not known (a `tierctl scan` reads them)"
            elif not values:
                text = "none"
            else:
                text = ", ".join(
                    f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(values.items())
                )
            lines.append(f"{family}: {text}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        change = self.next_change
        return {
            "dataset": self.dataset,
            "key": self.key,
            "now": self.now,
            "facts": self.facts,
            "decision": None
            if not self.decided
            else {
                "policy": self.policy,
                "rule": self.rule,
                "when": self.when,
                "delete": self.delete,
                "desired": list(self.desired),
            },
            "undecided": self.undecided,
            "current": list(self.current),
            "stale": list(self.stale),
            "to_add": list(self.to_add),
            "to_remove": list(self.to_remove),
            "checks": [
                {
                    "policy": c.policy,
                    "selected": c.selected,
                    "rules": [
                        {"rule": r.rule, "when": r.when, "matched": r.matched, "why_not": list(r.why_not)}
                        for r in c.rules
                    ],
                }
                for c in self.checks
            ],
            "next_change": None
            if change is None
            else {
                "at": change.at,
                "date": _date(change.at),
                "in_days": round((change.at - self.now) / 86400, 3),
                "policy": change.policy,
                "rule": change.rule,
                "delete": change.delete,
                "desired": list(change.desired),
                "text": self.next_change_text(),
            },
        }


def explain(config: Config, obj: ObjectSnapshot, now: float) -> Explanation:
    """Explain the decision for ``obj`` at ``now``."""
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    present = tuple(p for p in obj.placements if p.state == "present" and p.tier in config.tiers)
    if not present:
        return Explanation(obj.dataset, obj.key, now, {}, [], (), ())
    version = current_version(present, tier_order)
    facts = facts_for(version, now, obj, relative_key(config, obj), config.tiers)
    holding = tuple(sorted(facts.tiers, key=tier_order.__getitem__))
    stale = tuple(sorted({p.tier for p in present} - facts.tiers, key=tier_order.__getitem__))
    result = Explanation(obj.dataset, obj.key, now, _facts_dict(facts), [], holding, stale)
    result.tested = metadata_wanted(config, obj.dataset)
    decided: tuple[Policy, Rule] | None = None
    for policy in config.policies_for(obj.dataset):
        if decided is not None:
            break
        if not selected(facts.path, policy.include, policy.exclude):
            result.checks.append(PolicyCheck(policy.name, False))
            continue
        checks: list[RuleCheck] = []
        for rule in policy.rules:
            try:
                matched = rule.condition.evaluate(facts)
            except UnknownFact as exc:
                result.undecided = _unknown_text(exc, present)
                checks.append(RuleCheck(policy.name, rule.index, rule.when, False, (result.undecided,)))
                break
            if matched:
                checks.append(RuleCheck(policy.name, rule.index, rule.when, True))
                decided = policy, rule
                break
            checks.append(
                RuleCheck(policy.name, rule.index, rule.when, False, tuple(why_false(rule.condition, facts)))
            )
        result.checks.append(PolicyCheck(policy.name, True, tuple(checks)))
        if result.undecided:
            break
    if decided is not None:
        policy, rule = decided
        result.policy, result.rule, result.when, result.delete = (
            policy.name,
            rule.index,
            rule.when,
            rule.delete,
        )
        result.desired = () if rule.delete else desired_tiers(rule, facts)
        present_tiers = {p.tier for p in present}
        result.to_add = tuple(t for t in result.desired if t not in facts.tiers)
        result.to_remove = tuple(sorted(present_tiers - set(result.desired), key=tier_order.__getitem__))
    result.next_change = next_change(config, obj.dataset, facts, now)
    return result


def _outcome_of(
    config: Config, dataset: str, facts: Facts
) -> tuple[Policy, Rule, bool, frozenset[str]] | None:
    found = matching_policy_rule(config, dataset, facts)
    if found is None:
        return None
    policy, rule = found
    return policy, rule, rule.delete, frozenset(() if rule.delete else desired_tiers(rule, facts))


def next_change(config: Config, dataset: str, facts: Facts, now: float) -> NextChange | None:
    """The earliest time the desired outcome changes if only the clock moves: conditions on
    time fields (age, seen, last_access) flip at known thresholds, so checking just after
    each threshold finds it exactly."""
    current = _outcome_of(config, dataset, facts)
    deltas: set[float] = set()
    for policy in config.policies_for(dataset):
        for rule in policy.rules:
            for name, value in time_thresholds(rule.condition):
                delta = value - FIELDS[name].getter(facts)
                if delta >= 0:
                    deltas.add(delta)
    for delta in sorted(deltas):
        later = _outcome_of(config, dataset, facts.later(delta + _AFTER))
        if _same(later, current):
            continue
        if later is None:
            return NextChange(now + delta, None, None, False, ())
        policy, rule, delete, desired = later
        order = [t for t in config.tiers if t in desired]
        return NextChange(now + delta, policy.name, rule.index, delete, tuple(order))
    return None


def _same(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a[2:] == b[2:]


# -- why a condition is false ---------------------------------------------------------------
def _unknown_text(exc: UnknownFact, present: tuple[Placement, ...]) -> str:
    attribute = "tags" if exc.family == "tags" else "metadata"
    tiers = sorted(p.tier for p in present if getattr(p, attribute) is None)
    return (
        f"{exc.field} needs the object's {attribute}, not known on [{', '.join(tiers)}]"
        " (a scan reads them where the store has them)"
    )


def _false(node: Node, facts: Facts) -> bool:
    """``node`` does not hold (a part that needs unknown tags or metadata counts as false)."""
    try:
        return not node.evaluate(facts)
    except UnknownFact:
        return True


def why_false(node: Node, facts: Facts) -> list[str]:
    """The smallest parts of ``node`` that make it false for ``facts``, with the actual value."""
    if isinstance(node, And):
        return [reason for part in node.parts if _false(part, facts) for reason in why_false(part, facts)]
    if isinstance(node, Or):
        return [f"none of: {'; '.join(r for part in node.parts for r in why_false(part, facts))}"]
    if isinstance(node, Not):
        return [f"not ({render(node.part)}): it holds"]
    if isinstance(node, ClassRef):
        return [f"class({node.name}): {'; '.join(why_false(node.node, facts))}"]
    if isinstance(node, Select):
        return [
            f"path {facts.path!r} is not selected by"
            f" include {list(node.include)} / exclude {list(node.exclude)}"
        ]
    if isinstance(node, Const):
        return ["false"]
    return [f"{render(node)} ({_actual(node, facts)})"]


def _actual(node: Node, facts: Facts) -> str:
    if isinstance(node, Compare):
        value = FIELDS[node.field].getter(facts)
        kind = FIELDS[node.field].kind
        shown = (
            format_duration(value) if kind == "duration" else format_size(value) if kind == "size" else value
        )
        return f"{node.field} is {shown}"
    if isinstance(node, Match):
        found = field_for(node.field)
        try:
            return f"{node.field} is {found.getter(facts) if found else ''!r}"
        except UnknownFact:
            return f"{node.field} is not known"
    if isinstance(node, OnTier):
        return f"on [{', '.join(sorted(facts.tiers))}]"
    return ""


def render(node: Node) -> str:
    """Source-like text of a condition."""
    if isinstance(node, (Compare, Match, OnTier, ClassRef)):
        return node.text
    if isinstance(node, And):
        return " and ".join(_grouped(p) for p in node.parts)
    if isinstance(node, Or):
        return " or ".join(_grouped(p) for p in node.parts)
    if isinstance(node, Not):
        return f"not {_grouped(node.part)}"
    if isinstance(node, Select):
        return f"include {list(node.include)} exclude {list(node.exclude)}"
    return "true" if node.value else "false"


def _grouped(node: Node) -> str:
    return f"({render(node)})" if isinstance(node, (And, Or)) else render(node)


def _facts_dict(facts: Facts) -> dict[str, Any]:
    return {
        "path": facts.path,
        "age": facts.age,
        "seen": facts.seen,
        "last_access": facts.idle(),
        "last_access_known": facts.last_access is not None,
        "size": facts.size,
        "copies": facts.copies,
        "storage_class": facts.storage_class,
        "tags": None if facts.tags is None else dict(facts.tags),
        "meta": None if facts.meta is None else dict(facts.meta),
    }


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _in(days: float) -> str:
    if days < 1:
        hours = days * 24
        return f"{hours:.0f} hours" if hours >= 1 else "under an hour"
    return f"{days:.0f} day{'s' if round(days) != 1 else ''}"
