"""The cost pass's shortcuts (issue #8) against the cost pass as it was: a month of one size
on one tier worked out once, the zeros of actions between tiers that charge nothing reused,
the guard's per-action checks told from tier sets. Same totals, to the last bit, and the
same keys in the one-time costs, over random plans on free and priced tiers.

The reference is the pre-#8 loop of ``cost.assess`` and ``StorageTally.observe``, verbatim
but for names."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from tierctl import cost
from tierctl.cost_guard import apply_guard
from tierctl.model import ObjectSnapshot, Placement
from tierctl.plan import Action, Expect, Plan
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Config

DAY = 86400.0
NOW = 1_900_000_000.0
CONFIG = """
version: 1
tiers:
  local: {url: ./local}
  other: {url: ./other}
  priced: {url: ./priced, cost: {storage_gb_month: 0.1, write_per_1000: 0.02, read_per_1000: 0.01}}
  s3: {url: "s3://bucket/data"}
  ia: {url: "s3://bucket/data", storage_class: STANDARD_IA}
  glacier: {url: "s3://bucket/data", storage_class: GLACIER}
datasets:
  d: {prefix: "", home: local}
"""
TIERS = ("local", "other", "priced", "s3", "ia", "glacier")
SIZES = (0, 1, 4096, 4096, 4096, 200 * 1024, 5 << 30)


def _old_assess_loop(plan: Plan, prices: cost.Prices, before: cost.StorageTally, history: dict) -> tuple:
    after = dict(before.per_tier())
    one_time: dict[str, float] = defaultdict(float)

    def change(tier: str, size: int, sign: int) -> None:
        after[tier] = after.get(tier, 0.0) + sign * prices[tier].monthly(size)

    for a in plan.actions:
        for kind, value in cost.action_cost(a, prices, history, NOW).items():
            one_time[kind] += value
        if a.op == "copy":
            change(a.target, a.size, 1)
            if a.expect is not None:
                change(a.target, a.expect.size, -1)
        elif a.op == "transition" and a.source is not None:
            change(a.source, a.size, -1)
            change(a.target, a.size, 1)
        elif a.op == "delete":
            change(a.target, a.expect.size if a.expect is not None else a.size, -1)
    return after, dict(one_time)


def _old_observe(tally: cost.StorageTally, objects: list[ObjectSnapshot]) -> None:
    for obj in objects:
        for p in obj.placements:
            if p.state == "present":
                tally.add(p.dataset, p.tier, p.size)


def _world(rng: random.Random) -> tuple[list[ObjectSnapshot], Plan]:
    objects, plan, ids = (
        [],
        Plan(created_at=NOW, config_path="p", config_fingerprint="f"),
        iter(range(1, 10**6)),
    )
    for n in range(rng.randint(1, 60)):
        key, size = f"k{n}", rng.choice(SIZES)
        tiers = rng.sample(TIERS, rng.randint(1, 3))
        placements = tuple(
            Placement(
                "d",
                key,
                t,
                size,
                NOW - 40 * DAY,
                first_seen=NOW - rng.choice((1, 100)) * DAY,
                changed_at=rng.choice((None, NOW - 10 * DAY, NOW - 200 * DAY)),
            )
            for t in tiers
        )
        objects.append(ObjectSnapshot("d", key, placements, placements[0].first_seen))
        for _ in range(rng.randint(0, 3)):
            op = rng.choice(("copy", "copy", "copy", "verify", "delete", "transition", "restore"))
            source = rng.choice((*tiers, None)) if op != "restore" else None
            target = rng.choice(TIERS)
            stale = rng.random() < 0.3 and op in ("copy", "delete")
            plan.actions.append(
                Action(
                    next(ids),
                    op,
                    "d",
                    key,
                    target,
                    size,
                    NOW - 40 * DAY,
                    "r",
                    source=source,
                    expect=Expect(rng.choice(SIZES), NOW - 41 * DAY) if stale else None,
                    policy="p",
                )
            )
    return objects, plan


def _config(tmp_path: Path) -> Config:
    return parse_config(CONFIG, str(tmp_path / "policies.yaml"))


def test_the_plan_costs_what_it_cost_before_the_shortcuts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    prices = cost.Prices(config)
    assert prices.charges_nothing("local") and not prices.charges_nothing("priced")
    assert not prices.charges_nothing("s3") and prices.charges_nothing("not-a-tier")
    for seed in range(200):
        rng = random.Random(seed)
        objects, plan = _world(rng)
        history = {("d", o.key): o for o in objects if rng.random() < 0.7}
        new_before, old_before = cost.StorageTally(prices), cost.StorageTally(prices)
        assert list(new_before.observe(objects)) == objects
        _old_observe(old_before, objects)
        for field in ("objects", "bytes", "monthly"):
            assert dict(getattr(new_before, field)) == dict(getattr(old_before, field)), seed
        assessed = cost.assess(plan, config, prices, new_before, history, NOW, guard=False)
        after, one_time = _old_assess_loop(plan, prices, old_before, history)
        assert assessed.after == after, seed
        assert assessed.one_time == one_time, seed  # values and keys
        assert list(assessed.one_time) == list(one_time), seed


def test_the_guard_holds_what_it_held_before_the_shortcuts(tmp_path: Path) -> None:
    """apply_guard passes an action without asking loses_money only where loses_money
    would pass it: the same actions are held, for the same reasons."""
    from tierctl import cost_guard

    config = _config(tmp_path)
    prices = cost.Prices(config)
    for seed in range(200):
        rng = random.Random(seed)
        objects, plan = _world(rng)
        history = {("d", o.key): o for o in objects}
        reference = {
            a.id: reason
            for a in plan.actions
            if (reason := cost_guard.loses_money(a, config, prices, history.get((a.dataset, a.key)), NOW))
        }
        skipped = apply_guard(plan, config, prices, history, NOW)
        assert {s.action.id: s.reason for s in skipped} == reference, seed
