"""Which policy and rule decide an object, and what they want. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, TypeVar

from tierctl.model import ObjectSnapshot, Placement
from tierctl.policies.expr import Facts, UnknownFact, metadata_families
from tierctl.policies.globs import selected
from tierctl.policies.model import Config, Copies, Policy, Rule

_T = TypeVar("_T")


def constructor(cls: type[_T]) -> Callable[..., _T]:
    """``cls(**values)`` for a frozen dataclass, made without its ``__init__``, which sets each
    field through ``object.__setattr__`` (most of the cost of the objects a plan makes per
    object). The same object: every field, in declaration order, in its ``__dict__``. A field
    without a plain default must be given (not checked: for callers that always do). ``cls``
    itself where the shortcut would not be the same object (slots, ``__post_init__``, a
    ``default_factory``)."""
    declared = fields(cls)  # type: ignore[arg-type]
    plain = all(f.init and f.default_factory is MISSING for f in declared)
    if "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__") or not plain:
        return cls
    template = {f.name: None if f.default is MISSING else f.default for f in declared}
    new = object.__new__

    def make(**values: Any) -> _T:
        made = new(cls)
        state = made.__dict__
        state.update(template)  # the fields in order, with their defaults
        state.update(values)
        return made

    return make


@dataclass(frozen=True)
class Decision:
    """The deciding policy and rule, the facts they saw, and the exact desired tier set
    (``place`` plus the tiers ``copies`` chose; empty for a delete)."""

    policy: Policy
    rule: Rule
    facts: Facts
    desired: tuple[str, ...] = ()

    @property
    def delete(self) -> bool:
        return self.rule.delete

    def outcome(self) -> str:
        return "delete" if self.delete else f"place [{', '.join(self.desired)}]"

    def reason(self) -> str:
        return f"policy {self.policy.name!r} {self.rule.describe()} -> {self.outcome()}"


def current_version(placements: tuple[Placement, ...], tier_order: dict[str, int]) -> Placement:
    """The placement holding the newest content: latest mtime, then larger size, then the
    tier declared first. Placements with other content are stale copies of the object."""
    return min(placements, key=lambda p: (-p.mtime, -p.size, tier_order.get(p.tier, 1 << 30)))


_facts = constructor(Facts)  # (facts_for gives every field)


def facts_for(
    version: Placement,
    now: float,
    obj: ObjectSnapshot | None = None,
    path: str = "",
    tier_names: Iterable[str] = (),
) -> Facts:
    """The facts a condition sees. Without ``obj`` only age and size are known.

    Tags and metadata are those of the placements holding the current version, merged
    (:func:`merged_mapping`; ``tier_names`` in declaration order breaks ties)."""
    if obj is None:
        return Facts(age=max(0.0, now - version.mtime), size=version.size, path=path)
    # (Called for every object a plan sees: the common case, one copy holding the current
    # version, takes the short way to the same facts.)
    holding = [
        p for p in obj.placements if p.state == "present" and (p is version or p.same_content(version))
    ]
    if len(holding) == 1:
        only = holding[0]
        last_read = None if only.atime is None else max(only.atime, version.mtime)
        tiers = frozenset((only.tier,))
        tags, meta = only.tags, only.metadata
    else:
        accessed = [p.atime for p in holding if p.atime is not None]
        last_read = max([*accessed, version.mtime]) if accessed else None
        tiers = frozenset(p.tier for p in holding)
        tags = merged_mapping(holding, "tags", tier_names)
        meta = merged_mapping(holding, "metadata", tier_names)
    first_seen = obj.first_seen or min((p.first_seen for p in obj.placements), default=now)
    return _facts(
        age=max(0.0, now - version.mtime),
        size=version.size,
        seen=max(0.0, now - first_seen),
        last_access=None if last_read is None else max(0.0, now - last_read),
        path=path,
        storage_class=version.storage_class or "",
        tiers=tiers,
        tags=tags,
        meta=meta,
    )


def merged_mapping(
    holding: list[Placement], attribute: str, tier_names: Iterable[str]
) -> Mapping[str, str] | None:
    """One object's tags or metadata (``attribute``) from the copies of its current version:
    None (unknown) as soon as one copy's are unknown; else the union of every copy's, and
    where copies disagree on a key, the copy on the tier declared first in ``tiers:`` wins
    (tiers not declared come last, by name)."""
    if not holding:
        return {}
    first: Mapping[str, str] | None = getattr(holding[0], attribute)
    if first is None or len(holding) == 1:
        return first
    same = True
    for placement in holding[1:]:
        value = getattr(placement, attribute)
        if value is None:
            return None
        same = same and (value is first or value == first)
    if same:
        return first
    rank = {name: i for i, name in enumerate(tier_names)}
    merged: dict[str, str] = {}
    for placement in sorted(holding, key=lambda p: (rank.get(p.tier, len(rank)), p.tier), reverse=True):
        merged.update(getattr(placement, attribute))
    return merged


def choose_copies(copies: Copies, holding: frozenset[str], already: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``copies.n`` tiers of ``copies.among``: those already holding the current version
    first (no churn), then the group's order. Tiers in ``already`` (from ``place``)
    count towards n when they are in the group."""
    chosen = [t for t in copies.among if t in already]
    for tier in [t for t in copies.among if t in holding] + list(copies.among):
        if len(chosen) >= copies.n:
            break
        if tier not in chosen:
            chosen.append(tier)
    return tuple(t for t in chosen if t not in already)


def desired_tiers(rule: Rule, facts: Facts) -> tuple[str, ...]:
    """The exact tier set a (non-delete) rule wants for an object with these facts."""
    place = rule.place or ()
    if rule.copies is None:
        return place
    return place + choose_copies(rule.copies, facts.tiers, place)


def relative_key(config: Config, obj: ObjectSnapshot) -> str:
    return obj.key[len(config.datasets[obj.dataset].prefix) :]


def matching_policy_rule(
    config: Config, dataset: str, facts: Facts, policies: tuple[Policy, ...] | None = None
) -> tuple[Policy, Rule] | None:
    """The first rule, of the first policy of ``dataset`` that selects ``facts.path``,
    whose condition holds. None also when a rule on the way needs tags or metadata the
    object's are not known for (:class:`UnknownFact`): which rule comes first cannot be
    told, so the object is left alone rather than decided by a later rule.
    ``policies``: ``config.policies_for(dataset)``, when the caller has it already."""
    try:
        for policy in config.policies_for(dataset) if policies is None else policies:
            if (policy.include or policy.exclude) and not selected(
                facts.path, policy.include, policy.exclude
            ):
                continue
            for rule in policy.rules:
                if rule.condition.evaluate(facts):
                    return policy, rule
    except UnknownFact:
        return None
    return None


def metadata_wanted(config: Config, dataset: str) -> frozenset[str]:
    """What a scan of ``dataset`` must read beyond sizes and times: ``"tags"`` and/or
    ``"metadata"``, when a rule of one of its policies tests ``tag.KEY`` / ``meta.KEY``."""
    families: set[str] = set()
    for policy in config.policies_for(dataset):
        for rule in policy.rules:
            families |= metadata_families(rule.condition)
    return frozenset("metadata" if f == "meta" else f for f in families)


_decision = constructor(Decision)


def decide(
    config: Config,
    obj: ObjectSnapshot,
    version: Placement,
    now: float,
    policies: tuple[Policy, ...] | None = None,
) -> Decision | None:
    """The decision for one object; None when nothing matches (the object is then left alone).
    ``policies``: ``config.policies_for(obj.dataset)``, when the caller has it already."""
    facts = facts_for(version, now, obj, relative_key(config, obj), config.tiers)
    found = matching_policy_rule(config, obj.dataset, facts, policies)
    if found is None:
        return None
    policy, rule = found
    return _decision(
        policy=policy, rule=rule, facts=facts, desired=() if rule.delete else desired_tiers(rule, facts)
    )
