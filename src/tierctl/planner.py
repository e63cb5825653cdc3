"""The planner: current placements (index) + policies -> a plan. Pure: no I/O, no clock.

For each object the first matching rule gives the desired placement set (or delete);
the plan is the difference, ordered so the safety invariants hold by construction:

- every delete of a non-desired placement requires all copies (and verifications of
  existing, not yet verified, desired placements) of that object to succeed first, and
  names the tiers that must still hold the object when it runs (``keep``);
- a placement is deleted without a surviving copy only by an explicit ``delete`` rule;
- stale copies (older content than the object's newest placement) are overwritten on
  desired tiers and deleted elsewhere; nothing is ever copied from a stale placement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from tierctl.errors import DeleteLimitExceeded
from tierctl.model import ObjectSnapshot, Placement
from tierctl.plan import Action, Expect, Plan
from tierctl.policies.evaluate import Decision, constructor, current_version, decide
from tierctl.policies.model import Config, Policy

# Action(...) for the actions of _placements_for (one or more per object planned).
_action = constructor(Action)


@dataclass
class _Ids:
    next: int = 1

    def take(self) -> int:
        value = self.next
        self.next += 1
        return value


@dataclass
class DeleteTally:
    """Per policy: objects it decided, and objects its delete rules expire."""

    decided: Counter[str] = field(default_factory=Counter)
    expired: Counter[str] = field(default_factory=Counter)

    def check(self, config: Config) -> None:
        """:class:`DeleteLimitExceeded` if a policy expires more than its ``max_delete``."""
        for policy in config.policies:
            limit = policy.max_delete
            expired = self.expired[policy.name]
            if limit is None or limit.allows(expired, self.decided[policy.name]):
                continue
            raise DeleteLimitExceeded(
                f"policy {policy.name!r} would delete {expired} of {self.decided[policy.name]} objects,"
                f" more than its max_delete of {limit}"
            )


class _Context:
    """What planning an object looks up in the config, resolved once per plan (the planner
    runs per object: 10,000 objects are 10,000 lookups of each)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tier_order = {name: i for i, name in enumerate(config.tiers)}
        self.policies = {name: config.policies_for(name) for name in config.datasets}
        self.groups = {name: config.store_group(name) for name in config.tiers}
        self.shared_stores = any(len(group) > 1 for group in self.groups.values())
        self.storage_classes = {name: tier.storage_class for name, tier in config.tiers.items()}
        # Decision.reason() per (policy, rule, desired tiers): a handful of texts for a plan.
        # Keyed by identity: the config holds every policy and rule while it plans.
        self._reasons: dict[tuple[int, int, tuple[str, ...]], str] = {}

    def policies_for(self, dataset: str) -> tuple[Policy, ...]:
        found = self.policies.get(dataset)
        return self.config.policies_for(dataset) if found is None else found

    def reason(self, decision: Decision) -> str:
        key = (id(decision.policy), id(decision.rule), decision.desired)
        reason = self._reasons.get(key)
        if reason is None:
            reason = self._reasons[key] = decision.reason()
        return reason


class SettledObjects(Protocol):
    """Objects left out of ``objects`` because they are known to need no action (the index's
    SQL pre-filter, ``policies/sqlfilter.py``): how many, and how many each policy decided.
    Read once ``objects`` is exhausted, so a stream may fill it as it goes."""

    @property
    def objects(self) -> int: ...

    @property
    def decided(self) -> Mapping[str, int]: ...


def make_plan(
    config: Config,
    objects: Iterable[ObjectSnapshot],
    now: float,
    *,
    force: bool = False,
    settled: SettledObjects | None = None,
) -> Plan:
    """Plan every object in ``objects`` (streamed; memory grows only with the actions).

    ``settled`` counts objects left out of ``objects`` as needing no action: they count as
    considered, and as decided by their policy for ``max_delete`` percentages.
    Refuses (:class:`DeleteLimitExceeded`) a plan that expires more objects than a
    policy's ``max_delete``, unless ``force``."""
    plan = Plan(created_at=now, config_path=config.path, config_fingerprint=config.fingerprint())
    ids = _Ids()
    context = _Context(config)
    tally = DeleteTally()
    considered = 0
    actions = plan.actions
    for obj in objects:
        considered += 1
        actions.extend(plan_object(context, obj, now, ids, tally))
    plan.objects_considered += considered
    if settled is not None:
        plan.objects_considered += settled.objects
        tally.decided.update(settled.decided)
    if not force:
        tally.check(config)
    return plan


def after_restore(config: Config, obj: ObjectSnapshot, restore: Action, now: float) -> list[Action]:
    """What a later run would plan for ``obj`` once the placement ``restore`` asks for is
    readable: the copies and transitions the restore is made for (the cost guard weighs
    them before the restore is paid for)."""
    placements = tuple(
        replace(p, restore_state="restored") if p.tier == restore.target else p for p in obj.placements
    )
    return list(plan_object(_Context(config), replace(obj, placements=placements), now, _Ids()))


def plan_object(
    context: _Context,
    obj: ObjectSnapshot,
    now: float,
    ids: _Ids,
    tally: DeleteTally | None = None,
) -> list[Action]:
    config = context.config
    # The read cache's placements are not the policies' (see CacheSettings), but for a delete rule.
    obj, cached = config.cache.split(obj) if config.cache is not None else (obj, ())
    tiers = config.tiers
    if len(obj.placements) == 1:  # (most objects: no generator for one placement)
        only = obj.placements[0]
        present: tuple[Placement, ...] = (only,) if only.state == "present" and only.tier in tiers else ()
    else:
        present = tuple(p for p in obj.placements if p.state == "present" and p.tier in tiers)
    if not present:
        return []
    version = present[0] if len(present) == 1 else current_version(present, context.tier_order)
    decision = decide(config, obj, version, now, context.policies_for(obj.dataset))
    if decision is None:
        return []
    if tally is not None:
        tally.decided[decision.policy.name] += 1
        tally.expired[decision.policy.name] += decision.delete
    if decision.delete:
        return list(_deletes_for_rule(obj, present + cached, version, decision, ids))
    return _placements_for(context, obj, present, version, decision, ids)


def _deletes_for_rule(
    obj: ObjectSnapshot, present: tuple[Placement, ...], version: Placement, decision: Decision, ids: _Ids
) -> Iterator[Action]:
    reason = decision.reason()
    for p in sorted(present, key=lambda p: p.tier):
        yield Action(
            id=ids.take(),
            op="delete",
            dataset=obj.dataset,
            key=obj.key,
            target=p.tier,
            size=version.size,
            mtime=version.mtime,
            checksum=version.checksum,
            expect=Expect(p.size, p.mtime),
            explicit=True,
            reason=reason,
            policy=decision.policy.name,
            rule=decision.rule.index,
        )


def _placements_for(
    context: _Context,
    obj: ObjectSnapshot,
    present: tuple[Placement, ...],
    version: Placement,
    decision: Decision,
    ids: _Ids,
) -> list[Action]:
    tier_order = context.tier_order
    desired = decision.desired
    by_tier = {p.tier: p for p in present}
    current = {p.tier: p for p in present if p is version or p.same_content(version)}
    missing = [t for t in desired if t not in current]
    # A missing tier whose store already holds the object under another (undesired) tier
    # of the same URL is reached by an in-place storage-class change, not a copy.
    transitions: dict[str, str] = {}
    for tier in missing if context.shared_stores else ():
        group = context.groups[tier]
        if len(group) == 1:
            continue  # a store of one tier: only a copy reaches it
        source_tier = next(
            (t for t in group if t in current and t not in desired and t not in transitions.values()),
            None,
        )
        if source_tier is not None:
            transitions[tier] = source_tier
    copies = [t for t in missing if t not in transitions] if transitions else missing
    in_order = by_tier if len(by_tier) == 1 else sorted(by_tier, key=tier_order.__getitem__)
    undesired = [t for t in in_order if t not in desired and t not in transitions.values()]
    if not copies and not transitions and not undesired:
        return []  # already as desired (verifications are only for copies about to be deleted)
    # Read from a placement that is about to go if there is one: it is the copy the move is
    # for, and it leaves desired tiers free to serve readers. Never from an archived one.
    if len(current) == 1:
        readable = [t for t, p in current.items() if p.readable]
    else:
        readable = sorted(
            (t for t in current if current[t].readable), key=lambda t: (t in desired, tier_order[t])
        )
    common: dict[str, Any] = {  # the fields every action of this object shares
        "dataset": obj.dataset,
        "key": obj.key,
        "size": version.size,
        "mtime": version.mtime,
        "checksum": version.checksum,
        "reason": context.reason(decision),
        "policy": decision.policy.name,
        "rule": decision.rule.index,
    }
    needs_read = bool(copies) or any(not current[s].readable for s in transitions.values())
    if needs_read and not readable:
        restoring = sorted(
            (t for t in current if current[t].restore_state == "restoring"), key=tier_order.__getitem__
        )
        if not restoring:
            # Only archived copies hold the current version: ask for a readable one and
            # plan the rest once it is there (a later run).
            archived = min(current, key=tier_order.__getitem__)
            archive = context.config.tiers[archived]
            return [
                _action(
                    id=ids.take(),
                    op="restore",
                    target=archived,
                    restore_days=archive.restore_days,
                    restore_speed=archive.restore_speed,
                    **common,
                )
            ]
        readable = restoring  # the executor checks the restore live and waits if unfinished
    actions: list[Action] = []
    storage_classes = context.storage_classes
    reads_from: dict[str, list[int]] = {}
    for tier in copies:
        stale = by_tier.get(tier)
        action = _action(
            id=ids.take(),
            op="copy",
            source=readable[0],
            target=tier,
            expect=Expect(stale.size, stale.mtime) if stale else None,
            storage_class=storage_classes[tier],
            **common,
        )
        reads_from.setdefault(readable[0], []).append(action.id)
        actions.append(action)
    for tier, source_tier in transitions.items():
        action = _action(
            id=ids.take(),
            op="transition",
            source=source_tier,
            target=tier,
            storage_class=storage_classes[tier] or "STANDARD",
            requires=tuple(reads_from.get(source_tier, ())),  # change class after reading it
            **common,
        )
        actions.append(action)
    if not undesired:
        return actions
    for tier in desired:
        placement = current.get(tier)
        if (
            placement is not None
            and placement.verified_at is None
            and not _checksums_agree(placement, version, current)
        ):
            verify_source = next((t for t in readable if t != tier), None)
            if verify_source is None:
                continue
            actions.append(_action(id=ids.take(), op="verify", source=verify_source, target=tier, **common))
    prerequisites = tuple(a.id for a in actions)  # every copy, transition and verify above
    for tier in undesired:
        p = by_tier[tier]
        actions.append(
            _action(
                id=ids.take(),
                op="delete",
                target=tier,
                expect=Expect(p.size, p.mtime),
                keep=desired,
                requires=prerequisites,
                **common,
            )
        )
    return actions


def _checksums_agree(placement: Placement, version: Placement, current: dict[str, Placement]) -> bool:
    """A desired placement whose recorded checksum equals another current placement's (same
    algorithm) needs no re-verification: the digests already prove the bytes equal."""
    if not placement.checksum:
        return False
    return any(
        other.tier != placement.tier and other.checksum == placement.checksum for other in current.values()
    )
