"""Static checks over parsed policies: shadowed rules, rules that can never match, delete
guards, and policies that decide the same objects differently.

Every check is sound: it reports a problem only when it can prove it (interval reasoning
over numeric comparisons, or a concrete example object); anything it cannot decide it
leaves alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from tierctl.policies.evaluate import desired_tiers
from tierctl.policies.expr import (
    FIELDS,
    NUMERIC_KINDS,
    And,
    ClassRef,
    Compare,
    Const,
    Facts,
    Node,
    Not,
    Or,
    walk,
)
from tierctl.policies.globs import selected
from tierctl.policies.model import Config, Policy, Rule
from tierctl.policies.units import format_size

INF = float("inf")
MAX_DISJUNCTS = 256
NUMERIC_FIELDS = tuple(name for name, f in FIELDS.items() if f.kind in NUMERIC_KINDS)
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


class _TooComplex(Exception):
    """The condition's disjunctive form is too large to reason about."""


# -- intervals ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Interval:
    lo: float = 0.0
    hi: float = INF
    lo_strict: bool = False
    hi_strict: bool = True  # an unbounded end is open

    @property
    def empty(self) -> bool:
        return self.lo > self.hi or (self.lo == self.hi and (self.lo_strict or self.hi_strict))

    def intersect(self, other: Interval) -> Interval:
        if other.lo > self.lo or (other.lo == self.lo and other.lo_strict):
            lo, lo_strict = other.lo, other.lo_strict
        else:
            lo, lo_strict = self.lo, self.lo_strict
        if other.hi < self.hi or (other.hi == self.hi and other.hi_strict):
            hi, hi_strict = other.hi, other.hi_strict
        else:
            hi, hi_strict = self.hi, self.hi_strict
        return Interval(lo, hi, lo_strict, hi_strict)

    def within(self, other: Interval) -> bool:
        """Every point of self is in other (self assumed non-empty)."""
        lo_ok = other.lo < self.lo or (other.lo == self.lo and (not other.lo_strict or self.lo_strict))
        hi_ok = other.hi > self.hi or (other.hi == self.hi and (not other.hi_strict or self.hi_strict))
        return lo_ok and hi_ok

    def contains(self, value: float) -> bool:
        return not Interval(value, value, False, False).intersect(self).empty


def _interval(op: str, value: float) -> Interval:
    return {
        "<": Interval(hi=value, hi_strict=True),
        "<=": Interval(hi=value, hi_strict=False),
        ">": Interval(lo=value, lo_strict=True),
        ">=": Interval(lo=value),
        "==": Interval(value, value, False, False),
    }[op]


def _union_covers(target: Interval, parts: list[Interval]) -> bool:
    """``target`` lies inside the union of ``parts``."""
    value, included = target.lo, not target.lo_strict
    while True:
        if value > target.hi or (value == target.hi and (not included or target.hi_strict)):
            return True
        best: tuple[float, bool] | None = None
        for part in parts:
            starts = part.lo < value or (part.lo == value and (not part.lo_strict or not included))
            reaches = part.hi > value or (part.hi == value and not part.hi_strict and included)
            if not (starts and reaches):
                continue
            nxt = (part.hi, part.hi_strict)  # (point, still needs covering)
            if best is None or nxt[0] > best[0] or (nxt[0] == best[0] and not nxt[1]):
                best = nxt
        if best is None:
            return False
        value, included = best


# -- conditions as unions of boxes -----------------------------------------------------------
Atom = tuple[object, bool]  # (a non-numeric test or a `!=` comparison, polarity)


@dataclass
class Box:
    """A conjunction: an interval per numeric field, plus other tests that must hold."""

    intervals: dict[str, Interval] = field(default_factory=dict)
    atoms: set[Atom] = field(default_factory=set)

    def get(self, name: str) -> Interval:
        return self.intervals.get(name, Interval())

    @property
    def empty(self) -> bool:
        if any(i.empty for i in self.intervals.values()):
            return True
        if any((atom, not polarity) in self.atoms for atom, polarity in self.atoms):
            return True
        for atom, polarity in self.atoms:
            if polarity and isinstance(atom, tuple) and atom[0] == "!=":
                _, name, value = atom
                interval = self.get(name)
                if interval.lo == interval.hi == value:
                    return True
        return False

    def covers(self, other: Box) -> bool:
        """Every object in ``other`` is in self."""
        for name, interval in self.intervals.items():
            if not other.get(name).within(interval):
                return False
        for atom, polarity in self.atoms:
            if (atom, polarity) in other.atoms:
                continue
            if polarity and isinstance(atom, tuple) and atom[0] == "!=":
                _, name, value = atom
                if not other.get(name).contains(value):
                    continue
            return False
        return True

    def constrained(self) -> set[str]:
        return {n for n, i in self.intervals.items() if i != Interval()}


def _literal(node: Node, positive: bool) -> list[Box]:
    if isinstance(node, Compare):
        op = node.op if positive else _NEGATED[node.op]
        if op == "!=":
            return [Box(atoms={(("!=", node.field, node.value), True)})]
        return [Box(intervals={node.field: _interval(op, node.value)})]
    return [Box(atoms={(node, positive)})]


def boxes(node: Node, positive: bool = True) -> list[Box]:
    """``node`` (or its negation) as a union of boxes; empty boxes dropped."""
    if isinstance(node, Const):
        return [Box()] if node.value == positive else []
    if isinstance(node, Not):
        return boxes(node.part, not positive)
    if isinstance(node, ClassRef):
        return boxes(node.node, positive)
    if isinstance(node, (And, Or)):
        conjunction = isinstance(node, And) == positive
        parts = [boxes(p, positive) for p in node.parts]
        if not conjunction:
            out = [b for part in parts for b in part]
        else:
            out = [Box()]
            for part in parts:
                merged = []
                for a, b in itertools.product(out, part):
                    box = Box(dict(a.intervals), a.atoms | b.atoms)
                    for name, interval in b.intervals.items():
                        box.intervals[name] = box.get(name).intersect(interval)
                    if not box.empty:
                        merged.append(box)
                out = merged
                if len(out) > MAX_DISJUNCTS:
                    raise _TooComplex
        if len(out) > MAX_DISJUNCTS:
            raise _TooComplex
        return [b for b in out if not b.empty]
    return [b for b in _literal(node, positive) if not b.empty]


def min_age_bound(node: Node) -> float:
    """The least ``age`` an object must have for ``node`` to hold (0 when unknown)."""
    try:
        found = boxes(node)
    except _TooComplex:
        return 0.0
    if not found:
        return INF
    return min(b.get("age").lo for b in found)


# -- shadowed rules -------------------------------------------------------------------------
@dataclass(frozen=True)
class RuleProblem:
    rule: Rule
    message: str
    hint: str


def rule_problems(policy: Policy) -> list[RuleProblem]:
    """Rules that can never match, or that earlier rules of the same policy always beat."""
    problems: list[RuleProblem] = []
    earlier: list[tuple[Rule, list[Box]]] = []
    for rule in policy.rules:
        try:
            mine = boxes(rule.condition)
        except _TooComplex:
            earlier.append((rule, []))
            continue
        if not mine:
            problems.append(
                RuleProblem(
                    rule,
                    f"policy {policy.name!r} rule {rule.index} can never match:"
                    " its condition is always false",
                    "fix the condition's bounds, or remove the rule",
                )
            )
        else:
            blockers = _shadowing(mine, earlier)
            if blockers:
                names = ", ".join(str(r.index) for r in blockers)
                problems.append(
                    RuleProblem(
                        rule,
                        f"policy {policy.name!r} rule {rule.index} is shadowed: earlier "
                        + (f"rules {names} match" if len(blockers) > 1 else f"rule {names} matches")
                        + " every object it could match",
                        "the first matching rule decides: move this rule up or narrow the earlier one",
                    )
                )
        earlier.append((rule, mine))
    return problems


def _shadowing(mine: list[Box], earlier: list[tuple[Rule, list[Box]]]) -> list[Rule]:
    """Earlier rules that together cover every box of ``mine``; [] when not provable."""
    used: dict[int, Rule] = {}
    for box in mine:
        single = next(((r, e) for r, boxes_ in earlier for e in boxes_ if e.covers(box)), None)
        if single is not None:
            used[single[0].index] = single[0]
            continue
        found = _union_shadow(box, earlier)
        if not found:
            return []
        used.update({r.index: r for r in found})
    return [used[i] for i in sorted(used)]


def _union_shadow(box: Box, earlier: list[tuple[Rule, list[Box]]]) -> list[Rule]:
    """One-field case: earlier atom-free boxes constraining one field whose intervals
    together cover ``box`` on that field."""
    for name in NUMERIC_FIELDS:
        parts = [(r, e) for r, boxes_ in earlier for e in boxes_ if not e.atoms and e.constrained() <= {name}]
        if not parts or not _union_covers(box.get(name), [e.get(name) for _, e in parts]):
            continue
        needed = {r.index: r for r, _ in parts}
        for index in list(needed):
            rest = [e.get(name) for r, e in parts if r.index in needed and r.index != index]
            if _union_covers(box.get(name), rest):
                del needed[index]
        return list(needed.values())
    return []


# -- policies that overlap ---------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyConflict:
    first: Policy
    second: Policy
    example: str
    first_outcome: str
    second_outcome: str


def policy_conflicts(config: Config) -> list[PolicyConflict]:
    """Pairs of policies on one dataset with the same selection that decide some concrete
    object differently (the later one then never decides it)."""
    out: list[PolicyConflict] = []
    tiers = list(config.tiers)
    for a, b in itertools.combinations(config.policies, 2):
        if a.dataset != b.dataset or (a.include, a.exclude) != (b.include, b.exclude):
            continue
        path = _example_path(a.include, a.exclude)
        if path is None:
            continue
        for facts in _samples(a, b, path, tiers):
            first, second = _first_match(a, facts), _first_match(b, facts)
            if first is None or second is None:
                continue
            outcome_a, outcome_b = _outcome(first, facts), _outcome(second, facts)
            if outcome_a != outcome_b:
                out.append(
                    PolicyConflict(
                        a,
                        b,
                        _describe(facts, a, b),
                        f"rule {first.index} -> {outcome_a}",
                        f"rule {second.index} -> {outcome_b}",
                    )
                )
                break
    return out


def _first_match(policy: Policy, facts: Facts) -> Rule | None:
    return next((r for r in policy.rules if r.condition.evaluate(facts)), None)


def _outcome(rule: Rule, facts: Facts) -> str:
    return "delete" if rule.delete else f"place [{', '.join(sorted(desired_tiers(rule, facts)))}]"


def _example_path(include: tuple[str, ...], exclude: tuple[str, ...]) -> str | None:
    candidates = ["x"]
    for pattern in include:
        text = pattern.replace("**/", "").replace("**", "x").replace("*", "x").replace("?", "x")
        candidates.append(text)
    return next((c for c in candidates if c and selected(c, include, exclude)), None)


def _samples(a: Policy, b: Policy, path: str, tiers: list[str]) -> Iterator[Facts]:
    values: dict[str, set[float]] = {name: {1.0 if name == "copies" else 0.0} for name in NUMERIC_FIELDS}
    for rule in (*a.rules, *b.rules):
        for node in _compares(rule.condition):
            values[node.field].update(v for v in (node.value - 1, node.value, node.value + 1) if v >= 0)
    values["copies"] = {v for v in values["copies"] if v >= 1 and v == int(v) and v <= len(tiers)} or {1.0}
    names = [n for n in NUMERIC_FIELDS if len(values[n]) > 1]
    grids = [sorted(values[n]) for n in names]
    base = {n: min(values[n]) for n in NUMERIC_FIELDS}
    total = 1
    for grid in grids:
        total *= len(grid)
    if total <= 4096:
        points: Iterator[tuple[float, ...]] = itertools.product(*grids)
        combos = (dict(zip(names, p, strict=True)) for p in points)
    else:
        combos = ({n: v} for n, grid in zip(names, grids, strict=True) for v in grid)
    for combo in combos:
        point = {**base, **combo}
        yield Facts(
            age=point["age"],
            size=int(point["size"]),
            seen=point["seen"],
            last_access=point["last_access"],
            path=path,
            tiers=frozenset(tiers[: int(point["copies"])]),
        )


def _compares(node: Node) -> Iterator[Compare]:
    for n in walk(node):
        if isinstance(n, Compare):
            yield n
        elif isinstance(n, ClassRef):
            yield from _compares(n.node)


def _describe(facts: Facts, a: Policy, b: Policy) -> str:
    used = {c.field for r in (*a.rules, *b.rules) for c in _compares(r.condition)}
    shown = []
    for name in NUMERIC_FIELDS:
        if name not in used:
            continue
        value = FIELDS[name].getter(facts)
        if FIELDS[name].kind == "duration":
            shown.append(f"{name} {_exact_duration(value)}")
        elif FIELDS[name].kind == "size":
            shown.append(f"{name} {format_size(value)}")
        else:
            shown.append(f"{name} {value}")
    return f"key {facts.path!r}" + (f" with {', '.join(shown)}" if shown else "")


def _exact_duration(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:g}{unit}"
    return f"{seconds:g}s"
