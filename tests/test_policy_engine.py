"""The policy engine's parts: facts, copies-among, static analysis (soundness), explain and
simulate."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierctl.errors import TierctlError
from tierctl.explain import explain
from tierctl.model import ObjectSnapshot, Placement
from tierctl.policies import expr
from tierctl.policies.analysis import boxes, rule_problems
from tierctl.policies.evaluate import choose_copies
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Copies, Policy, Rule
from tierctl.simulate import parse_instant, simulate

DAY = 86400.0
NOW = 1_790_000_000.0

POLICY = """\
version: 1
tiers:
  hot: ./hot
  warm: ./warm
  cold: ./cold
datasets:
  logs: {prefix: logs/, home: hot}
policies:
  - name: lc
    dataset: logs
    rules:
      - when: "age < 7d"
        place: [hot, warm]
      - when: "age < 90d"
        place: [warm]
      - when: "age < 1y"
        place: [cold]
      - when: "age >= 1y"
        delete: true
"""


def obj(key: str, age_days: float, tiers: tuple[str, ...] = ("hot",), size: int = 10) -> ObjectSnapshot:
    mtime = NOW - age_days * DAY
    return ObjectSnapshot(
        "logs", key, tuple(Placement("logs", key, t, size, mtime, first_seen=mtime) for t in tiers), mtime
    )


def test_tags_and_metadata_conditions() -> None:
    node = expr.parse('tag.team == "ml" and meta.owner ~ "a*" and tag.missing == ""')
    assert node.evaluate(expr.Facts(0, 0, tags={"team": "ml"}, meta={"owner": "alice"}))
    assert not node.evaluate(expr.Facts(0, 0, tags={"team": "web"}, meta={"owner": "alice"}))


def test_last_access_falls_back_to_age() -> None:
    node = expr.parse("last_access > 30d")
    assert node.evaluate(expr.Facts(age=40 * DAY, size=0))
    assert not node.evaluate(expr.Facts(age=40 * DAY, size=0, last_access=DAY))


def test_copies_prefer_existing_then_group_order() -> None:
    group = Copies(("gcs", "s3-eu", "s3-us"), 2)
    assert choose_copies(group, frozenset()) == ("gcs", "s3-eu")
    assert choose_copies(group, frozenset({"s3-us"})) == ("s3-us", "gcs")
    assert choose_copies(group, frozenset({"s3-us", "s3-eu", "gcs"})) == ("gcs", "s3-eu")
    assert choose_copies(group, frozenset(), already=("s3-us",)) == ("gcs",)


# -- static analysis is sound: a reported shadowed rule never matches first --------------------
FIELDS = ["age", "size", "seen"]
atoms = st.one_of(
    st.builds(
        lambda f, op, v: f"{f} {op} {v}{'d' if f != 'size' else 'B'}",
        st.sampled_from(FIELDS),
        st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
        st.integers(0, 5),
    ),
    st.sampled_from(['path ~ "a*"', "on(hot)", "true", "false"]),
)
conditions = st.recursive(
    atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} and {b})", inner, inner),
        st.builds(lambda a, b: f"({a} or {b})", inner, inner),
        st.builds(lambda a: f"not {a}", inner),
    ),
    max_leaves=5,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(conditions, min_size=2, max_size=4))
def test_shadowed_rules_are_really_shadowed(whens: list[str]) -> None:
    rules = tuple(
        Rule(i + 1, w, expr.parse(w, tiers={"hot": 1}), place=("hot",)) for i, w in enumerate(whens)
    )
    problems = rule_problems(Policy("p", "logs", rules))
    flagged = {p.rule.index for p in problems}
    values = [v * DAY for v in range(7)] + [v * DAY + 1 for v in range(6)]
    for age in values:
        for seen in values:
            for size in range(7):
                for path in ("a", "b"):
                    facts = expr.Facts(age=age, seen=seen, size=size, path=path, tiers=frozenset({"hot"}))
                    first = next((r.index for r in rules if r.condition.evaluate(facts)), None)
                    assert first not in flagged, (whens, facts, first)


def test_boxes_reads_negation_and_intervals() -> None:
    assert boxes(expr.parse("age < 1d and age > 2d")) == []
    assert len(boxes(expr.parse("not (age < 1d or size > 5B)"))) == 1


# -- explain ------------------------------------------------------------------------------------
def test_explain_reports_why_earlier_rules_failed_and_next_change(tmp_path: object) -> None:
    config = parse_config(POLICY, "/x/policies.yaml")
    result = explain(config, obj("logs/a.log", 30), NOW)
    assert (result.policy, result.rule, result.desired) == ("lc", 2, ("warm",))
    assert result.checks[0].rules[0].why_not == ("age < 7d (age is 30d)",)
    assert result.to_add == ("warm",) and result.to_remove == ("hot",)
    assert result.next_change is not None
    assert result.next_change.at == pytest.approx(NOW + 60 * DAY)
    assert result.next_change.desired == ("cold",)
    assert "moves from [warm] to [cold]" in result.next_change_text()
    assert "in 60 days" in result.next_change_text()
    doc = result.to_dict()
    assert doc["next_change"]["in_days"] == 60 and doc["decision"]["rule"] == 2


def test_explain_without_a_future_change() -> None:
    config = parse_config(POLICY, "/x/policies.yaml")
    result = explain(config, obj("logs/old.log", 400), NOW)
    assert result.delete and result.next_change is None


# -- simulate -------------------------------------------------------------------------------------
def test_simulate_moves_objects_day_by_day() -> None:
    config = parse_config(POLICY, "/x/policies.yaml")
    objects = [obj("logs/a.log", 5), obj("logs/b.log", 85, ("warm",)), obj("logs/c.log", 360, ("cold",))]
    result = simulate(config, objects, NOW, 10)
    first, last = result.days[0], result.days[-1]
    assert first.tiers["hot"].objects == 1 and first.tiers["warm"].objects == 2
    assert last.tiers["hot"].objects == 0
    assert last.tiers["cold"].objects == 1  # b moved there on day 5; c expired that day
    assert last.tiers["warm"].objects == 1
    assert sum(d.actions["delete"] for d in result.days) >= 2
    assert [d.day for d in result.changed_days()] == [0, 2, 5]


def test_parse_instant() -> None:
    assert parse_instant("+2d", NOW) == NOW + 2 * DAY
    assert parse_instant("2026-01-01", NOW) == 1767225600.0
    with pytest.raises(TierctlError):
        parse_instant("soon", NOW)
