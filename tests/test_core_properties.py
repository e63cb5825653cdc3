"""Property tests: over random placements, ages, rule sets and failures, the plan keeps
the safety invariants and apply-then-plan is empty.

The pure part simulates execution in memory (thousands of cases); the second part
applies real plans to real folders (fewer cases).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierctl import api
from tierctl.model import ObjectSnapshot, Placement
from tierctl.plan import Action
from tierctl.planner import make_plan
from tierctl.policies.evaluate import current_version, decide
from tierctl.policies.loader import parse_config

from .conftest import DAY, NOW, write_file

TIERS = ["t0", "t1", "t2", "t3"]


def _policy_text(rules: list[tuple[str, list[str] | None]]) -> str:
    lines = [
        "version: 1",
        "tiers:",
        *(f"  {t}: {{url: ./{t}}}" for t in TIERS),
        "datasets:",
        "  d: {prefix: d/}",
        "policies:",
        "  - name: p",
        "    dataset: d",
        "    rules:",
    ]
    for when, place in rules:
        lines.append(f'      - when: "{when}"')
        if place:
            lines.append(f"        place: [{', '.join(place)}]")
        else:  # an explicit guard, as the loader demands of every delete rule
            lines += ["        delete: true", "        min_age: 0s"]
    return "\n".join(lines) + "\n"


conditions = st.one_of(
    st.integers(1, 400).map(lambda d: f"age < {d}d"),
    st.integers(1, 400).map(lambda d: f"age >= {d}d"),
    st.integers(1, 5000).map(lambda s: f"size > {s}"),
    st.just("true"),
)
outcomes = st.one_of(
    st.lists(st.sampled_from(TIERS), min_size=1, max_size=3, unique=True),
    st.none().filter(lambda _: True),  # delete
)
rule_sets = st.lists(st.tuples(conditions, outcomes), min_size=1, max_size=4)


@st.composite
def objects(draw: st.DrawFn) -> list[ObjectSnapshot]:
    result = []
    for i in range(draw(st.integers(1, 12))):
        key = f"d/obj{i:02d}"
        size = draw(st.integers(0, 5000))
        age = draw(st.floats(0, 500)) * DAY
        tiers = draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=4, unique=True))
        stale = draw(st.sets(st.sampled_from(tiers)))
        if len(stale) == len(tiers):  # at least one placement holds the newest content
            stale.discard(tiers[0])
        verified = draw(st.sets(st.sampled_from(tiers)))
        placements = tuple(
            Placement(
                "d",
                key,
                t,
                size=size + (1 if t in stale else 0),
                mtime=NOW - age - (DAY if t in stale else 0),
                verified_at=NOW if t in verified else None,
            )
            for t in sorted(tiers)
        )
        result.append(ObjectSnapshot("d", key, placements))
    return result


def _simulate(objs: list[ObjectSnapshot], actions: list[Action], failed: set[int]) -> list[ObjectSnapshot]:
    """Execute a plan in memory: failed copies/verifies fail, dependants are skipped."""
    state = {o.key: {p.tier: p for p in o.placements} for o in objs}
    status: dict[int, bool] = {}
    for a in actions:
        ok = a.id not in failed and all(status.get(r) for r in a.requires)
        placements = state[a.key]
        if ok and a.op == "copy":
            assert a.source in placements, "copy from a tier that does not hold the object"
            src = placements[a.source]
            assert (src.size, src.mtime) == (a.size, a.mtime), "copy from a stale placement"
            placements[a.target] = replace(src, tier=a.target, verified_at=NOW)
        elif ok and a.op == "verify":
            placements[a.target] = replace(placements[a.target], verified_at=NOW)
        elif ok and a.op == "delete":
            if not a.explicit:
                for tier in a.keep:
                    kept = placements.get(tier)
                    ok = ok and kept is not None and (kept.size, kept.mtime) == (a.size, a.mtime)
            if ok:
                del placements[a.target]
        status[a.id] = ok
    return [ObjectSnapshot("d", key, tuple(p[t] for t in sorted(p))) for key, p in state.items()]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=rule_sets, objs=objects(), data=st.data())
def test_plans_keep_the_invariants_and_converge(rules, objs, data) -> None:
    config = parse_config(_policy_text(rules), "/sim/policies.yaml")
    tier_order = {t: i for i, t in enumerate(TIERS)}
    plan = make_plan(config, objs, NOW)
    by_id = {a.id: a for a in plan.actions}

    for a in plan.actions:
        assert all(r < a.id and by_id[r].key == a.key for r in a.requires), (
            "requires point backwards, same object"
        )
        if a.op == "delete" and not a.explicit:
            assert a.keep and a.target not in a.keep, "a prune delete names the tiers that keep the object"
            same = [b.id for b in plan.actions if b.key == a.key and b.op in ("copy", "verify")]
            assert set(same) <= set(a.requires), "a delete waits for every copy and verify of its object"

    # Whatever fails, every object keeps its newest content somewhere (unless a delete rule).
    failed = data.draw(
        st.sets(st.sampled_from([a.id for a in plan.actions if a.op in ("copy", "verify")]))
        if any(a.op in ("copy", "verify") for a in plan.actions)
        else st.just(set())
    )
    after = _simulate(objs, plan.actions, failed)
    for before, now_obj in zip(objs, after, strict=True):
        version = current_version(before.placements, tier_order)
        decision = decide(config, before, version, NOW)
        explicit_delete = decision is not None and decision.delete
        if not explicit_delete:
            assert any(p.size == version.size and p.mtime == version.mtime for p in now_obj.placements), (
                f"{before.key} lost its newest content"
            )

    # With no failures the layout is exactly the desired one, and the next plan is empty.
    final = _simulate(objs, plan.actions, set())
    for before, obj in zip(objs, final, strict=True):
        decision = decide(config, before, current_version(before.placements, tier_order), NOW)
        if decision is None:
            assert obj.placements == before.placements
        elif decision.delete:
            assert obj.placements == ()
        else:
            assert {p.tier for p in obj.placements} == set(decision.desired)
    replan = make_plan(config, [o for o in final if o.placements], NOW)
    assert replan.empty, [(a.op, a.key, a.target) for a in replan.actions]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    rules=rule_sets,
    tree=st.lists(
        st.tuples(st.sampled_from(TIERS), st.integers(0, 400), st.binary(max_size=300)),
        min_size=1,
        max_size=15,
    ),
)
def test_real_apply_then_plan_is_empty_and_nothing_is_lost(rules, tree) -> None:
    root = Path(tempfile.mkdtemp(prefix="tierctl-prop-"))
    try:
        (root / "policies.yaml").write_text(_policy_text(rules))
        now = time.time()
        content = {}
        for i, (tier, age_days, data) in enumerate(tree):
            key = f"d/f{i:02d}.bin"
            write_file(root / tier, key, data, now - age_days * DAY)
            content[key] = data
        config = api.load(str(root / "policies.yaml"))
        api.scan(config, now=now)
        plan = api.plan(config, now=now)
        report = api.apply(config, plan)
        assert report.outcome == "ok", [(p.action.op, p.error) for p in report.problems]
        deleted = {a.key for a in plan.actions if a.explicit}
        for key, data in content.items():
            copies = [root / t / key for t in TIERS if (root / t / key).exists()]
            if key in deleted:
                assert not copies
            else:
                assert copies, f"{key} lost"
                assert all(c.read_bytes() == data for c in copies)
        api.scan(config, now=now)
        assert api.plan(config, now=now).empty
        assert not any(name.startswith(".tierctl-tmp-") for _, _, files in os.walk(root) for name in files)
    finally:
        shutil.rmtree(root)
