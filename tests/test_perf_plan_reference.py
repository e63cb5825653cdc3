"""The planner's fast paths (issue #8) against the planner as it was: same actions (ids,
order, reasons, every field), same objects considered, same max_delete refusals, and the
same facts for every object, over the random indexes and policies of test_plan_sqlfilter.
Also the frozen-dataclass shortcut the planner builds its objects with.

The reference below is the pre-#8 planner and evaluate code, verbatim but for names: a
frozen oracle for the fast paths. When the planner's behaviour changes on purpose, change
the reference with it (or drop this file): the behaviour itself is specified by the golden,
engine and fuzz tests."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierctl.errors import DeleteLimitExceeded
from tierctl.model import ObjectSnapshot, Placement
from tierctl.plan import Action, Expect, Plan
from tierctl.planner import DeleteTally, SettledObjects, _Ids, make_plan
from tierctl.policies.evaluate import (
    Decision,
    constructor,
    current_version,
    desired_tiers,
    facts_for,
    merged_mapping,
    relative_key,
)
from tierctl.policies.expr import Facts, UnknownFact
from tierctl.policies.globs import selected
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Config, Policy, Rule

from .conftest import DAY, NOW
from .test_plan_sqlfilter import LAYOUTS, _index, placement_rows, policy_texts


# -- the reference -------------------------------------------------------------------------------
def _old_facts_for(
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
    holding = [p for p in obj.placements if p.state == "present" and p.same_content(version)]
    accessed = [p.atime for p in holding if p.atime is not None]
    last_read = max([*accessed, version.mtime]) if accessed else None
    first_seen = obj.first_seen or min((p.first_seen for p in obj.placements), default=now)
    return Facts(
        age=max(0.0, now - version.mtime),
        size=version.size,
        seen=max(0.0, now - first_seen),
        last_access=None if last_read is None else max(0.0, now - last_read),
        path=path,
        storage_class=version.storage_class or "",
        tiers=frozenset(p.tier for p in holding),
        tags=merged_mapping(holding, "tags", tier_names),
        meta=merged_mapping(holding, "metadata", tier_names),
    )


def _old_matching_policy_rule(config: Config, dataset: str, facts: Facts) -> tuple[Policy, Rule] | None:
    """The first rule, of the first policy of ``dataset`` that selects ``facts.path``,
    whose condition holds. None also when a rule on the way needs tags or metadata the
    object's are not known for (:class:`UnknownFact`): which rule comes first cannot be
    told, so the object is left alone rather than decided by a later rule."""
    try:
        for policy in config.policies_for(dataset):
            if not selected(facts.path, policy.include, policy.exclude):
                continue
            for rule in policy.rules:
                if rule.condition.evaluate(facts):
                    return policy, rule
    except UnknownFact:
        return None
    return None


def _old_decide(config: Config, obj: ObjectSnapshot, version: Placement, now: float) -> Decision | None:
    """The decision for one object; None when nothing matches (the object is then left alone)."""
    facts = _old_facts_for(version, now, obj, relative_key(config, obj), config.tiers)
    found = _old_matching_policy_rule(config, obj.dataset, facts)
    if found is None:
        return None
    policy, rule = found
    return Decision(policy, rule, facts, () if rule.delete else desired_tiers(rule, facts))


def _old_make_plan(
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
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    tally = DeleteTally()
    for obj in objects:
        plan.objects_considered += 1
        plan.actions.extend(_old_plan_object(config, obj, now, ids, tier_order, tally))
    if settled is not None:
        plan.objects_considered += settled.objects
        tally.decided.update(settled.decided)
    if not force:
        tally.check(config)
    return plan


def _old_plan_object(
    config: Config,
    obj: ObjectSnapshot,
    now: float,
    ids: _Ids,
    tier_order: dict[str, int],
    tally: DeleteTally | None = None,
) -> Iterator[Action]:
    # The read cache's placements are not the policies' (see CacheSettings), but for a delete rule.
    obj, cached = config.cache.split(obj) if config.cache is not None else (obj, ())
    present = tuple(p for p in obj.placements if p.state == "present" and p.tier in config.tiers)
    if not present:
        return
    version = current_version(present, tier_order)
    decision = _old_decide(config, obj, version, now)
    if decision is None:
        return
    if tally is not None:
        tally.decided[decision.policy.name] += 1
        tally.expired[decision.policy.name] += decision.delete
    if decision.delete:
        yield from _old_deletes_for_rule(obj, present + cached, version, decision, ids)
        return
    yield from _old_placements_for(config, obj, present, version, decision, ids, tier_order)


def _old_deletes_for_rule(
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


def _old_placements_for(
    config: Config,
    obj: ObjectSnapshot,
    present: tuple[Placement, ...],
    version: Placement,
    decision: Decision,
    ids: _Ids,
    tier_order: dict[str, int],
) -> Iterator[Action]:
    desired = decision.desired
    by_tier = {p.tier: p for p in present}
    current = {p.tier: p for p in present if p.same_content(version)}
    missing = [t for t in desired if t not in current]
    # A missing tier whose store already holds the object under another (undesired) tier
    # of the same URL is reached by an in-place storage-class change, not a copy.
    transitions: dict[str, str] = {}
    for tier in missing:
        source_tier = next(
            (
                t
                for t in config.store_group(tier)
                if t in current and t not in desired and t not in transitions.values()
            ),
            None,
        )
        if source_tier is not None:
            transitions[tier] = source_tier
    copies = [t for t in missing if t not in transitions]
    undesired = [
        t
        for t in sorted(by_tier, key=tier_order.__getitem__)
        if t not in desired and t not in transitions.values()
    ]
    if not copies and not transitions and not undesired:
        return  # already as desired (verifications are only for copies about to be deleted)
    # Read from a placement that is about to go if there is one: it is the copy the move is
    # for, and it leaves desired tiers free to serve readers. Never from an archived one.
    readable = sorted(
        (t for t in current if current[t].readable), key=lambda t: (t in desired, tier_order[t])
    )
    common: dict[str, Any] = {  # the fields every action of this object shares
        "dataset": obj.dataset,
        "key": obj.key,
        "size": version.size,
        "mtime": version.mtime,
        "checksum": version.checksum,
        "reason": decision.reason(),
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
            archive = config.tiers[archived]
            yield Action(
                id=ids.take(),
                op="restore",
                target=archived,
                restore_days=archive.restore_days,
                restore_speed=archive.restore_speed,
                **common,
            )
            return
        readable = restoring  # the executor checks the restore live and waits if unfinished
    prerequisites: list[int] = []
    reads_from: dict[str, list[int]] = {}
    for tier in copies:
        stale = by_tier.get(tier)
        action = Action(
            id=ids.take(),
            op="copy",
            source=readable[0],
            target=tier,
            expect=Expect(stale.size, stale.mtime) if stale else None,
            storage_class=config.tiers[tier].storage_class,
            **common,
        )
        prerequisites.append(action.id)
        reads_from.setdefault(readable[0], []).append(action.id)
        yield action
    for tier, source_tier in transitions.items():
        action = Action(
            id=ids.take(),
            op="transition",
            source=source_tier,
            target=tier,
            storage_class=config.tiers[tier].storage_class or "STANDARD",
            requires=tuple(reads_from.get(source_tier, ())),  # change class after reading it
            **common,
        )
        prerequisites.append(action.id)
        yield action
    if not undesired:
        return
    for tier in desired:
        placement = current.get(tier)
        if (
            placement is not None
            and placement.verified_at is None
            and not _old_checksums_agree(placement, version, current)
        ):
            verify_source = next((t for t in readable if t != tier), None)
            if verify_source is None:
                continue
            action = Action(id=ids.take(), op="verify", source=verify_source, target=tier, **common)
            prerequisites.append(action.id)
            yield action
    for tier in undesired:
        p = by_tier[tier]
        yield Action(
            id=ids.take(),
            op="delete",
            target=tier,
            expect=Expect(p.size, p.mtime),
            keep=desired,
            requires=tuple(prerequisites),
            **common,
        )


def _old_checksums_agree(placement: Placement, version: Placement, current: dict[str, Placement]) -> bool:
    """A desired placement whose recorded checksum equals another current placement's (same
    algorithm) needs no re-verification: the digests already prove the bytes equal."""
    if not placement.checksum:
        return False
    return any(
        other.tier != placement.tier and other.checksum == placement.checksum for other in current.values()
    )


# -- the tests ---------------------------------------------------------------------------------------
def _outcome(plan: Any, config: Config, objects: list[ObjectSnapshot], now: float, force: bool) -> Any:
    try:
        made = plan(config, iter(objects), now, force=force)
    except DeleteLimitExceeded as exc:
        return str(exc)
    except re.error as exc:
        return f"re.error {exc}"
    return [a.to_dict() for a in made.actions], made.objects_considered


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data(), datasets=st.sampled_from(LAYOUTS), shift=st.sampled_from((0.0, 3 * DAY, 400 * DAY)))
def test_plans_are_those_of_the_planner_before_its_fast_paths(
    data: st.DataObject, datasets: dict[str, str], shift: float
) -> None:
    text, settle_sets = data.draw(policy_texts(datasets))
    config = parse_config(text, "/tmp/perfplan/policies.yaml")
    rows = data.draw(placement_rows(datasets, settle_sets))
    now = NOW + shift
    with tempfile.TemporaryDirectory() as tmp, _index(Path(tmp), rows) as index:
        objects = [obj for name in config.datasets for obj in index.objects(name)]
    for force in (True, False):
        assert _outcome(make_plan, config, objects, now, force) == _outcome(
            _old_make_plan, config, objects, now, force
        )
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    for obj in objects:
        present = tuple(p for p in obj.placements if p.state == "present" and p.tier in config.tiers)
        if not present:
            continue
        version = current_version(present, tier_order)
        path = relative_key(config, obj) if obj.dataset in config.datasets else obj.key
        assert facts_for(version, now, obj, path, config.tiers) == _old_facts_for(
            version, now, obj, path, config.tiers
        )


def test_the_shortcut_makes_the_object_the_class_makes() -> None:
    values: dict[str, Any] = {
        "id": 3,
        "op": "delete",
        "dataset": "d",
        "key": "k",
        "target": "t",
        "size": 1,
        "mtime": 2.0,
        "reason": "r",
        "expect": Expect(1, 2.0),
        "keep": ("a",),
    }
    for cls, given_values in (
        (Action, values),
        (Action, {k: v for k, v in values.items() if k not in ("expect", "keep")}),
        (Facts, {f.name: None for f in dataclasses.fields(Facts)} | {"age": 1.0, "size": 2}),
    ):
        made, reference = constructor(cls)(**given_values), cls(**given_values)
        assert made == reference
        assert type(made) is cls
        assert list(vars(made).items()) == list(vars(reference).items())  # same fields, same order
        assert hash(made) == hash(reference) or cls is Facts  # (Facts with unhashable tags)
        with pytest.raises(dataclasses.FrozenInstanceError):
            made.size = 5  # type: ignore[misc]


def test_the_shortcut_is_the_class_itself_where_it_would_differ() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        size: int

        def __post_init__(self) -> None:
            assert self.size >= 0

    assert constructor(Placement) is Placement  # slots
    assert constructor(Checked) is Checked
