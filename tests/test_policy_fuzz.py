"""The parser and the policy file loader never crash: any input gives a located error or a
valid result."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierctl.errors import ConfigError, ConfigErrors, ExpressionError
from tierctl.policies import expr
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Config

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOKENS = [
    *("age", "seen", "last_access", "size", "copies", "path", "name", "storage_class"),
    *("tag.team", "meta.owner", "agee", "on", "class", "and", "or", "not", "true", "false"),
    *("(", ")", ",", "<", "<=", ">", ">=", "==", "!=", "~", "!~", "=", "&", "'", '"'),
    *("7d", "12h", "1y", "30", "1MiB", "10 GB", "3XB", "1.5", '"**/*.tmp"', "'GLACIER'", "hot", "x"),
]
TIERS = {"hot": None, "cold": None}
CLASSES = {"x": expr.Const(True)}


def _check_expression(source: str) -> None:
    try:
        node = expr.parse(source, classes=CLASSES, tiers=TIERS)
    except ExpressionError as exc:
        assert 1 <= exc.column <= len(source) + 1
        assert exc.message
        return
    facts = expr.Facts(age=100.0, size=10, path="a/b.tmp", tiers=frozenset({"hot"}))
    assert node.evaluate(facts) in (True, False)


@FAST
@given(st.text(max_size=60))
def test_expression_from_random_text(source: str) -> None:
    _check_expression(source)


@FAST
@given(st.lists(st.sampled_from(TOKENS), max_size=14))
def test_expression_from_random_tokens(tokens: list[str]) -> None:
    _check_expression(" ".join(tokens))


def _check_config(text: str) -> None:
    try:
        config = parse_config(text, "/fuzz/policies.yaml", lint=True)
    except ConfigErrors as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.location is not None and problem.location.line >= 1, str(problem)
        return
    except ConfigError as exc:
        assert exc.location is not None, str(exc)
        return
    assert isinstance(config, Config)


@FAST
@given(st.text(max_size=300))
def test_config_from_random_text(text: str) -> None:
    _check_config(text)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 200),
    st.sampled_from(["hot", "cold", "age < 7d", "7d", "5%", "**/*.log", "0 * * * *", "logs/", "x"]),
    st.text(max_size=10),
)
KEYS = [
    *("version", "tiers", "datasets", "classes", "policies", "name", "dataset", "rules", "when"),
    *("place", "copies", "among", "n", "delete", "min_age", "max_delete", "include", "exclude"),
    *("class", "url", "prefix", "home", "schedule", "storage_class", "hot", "cold", "logs", "big"),
]
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=25,
)

BASE = {
    "version": 1,
    "tiers": {"hot": "./hot", "cold": {"url": "./cold", "storage_class": "GLACIER"}},
    "datasets": {"logs": {"prefix": "logs/", "home": "hot"}},
}


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), values, max_size=6))
def test_config_from_random_structure(doc: dict[str, object]) -> None:
    _check_config(yaml.safe_dump(doc))


rules = st.fixed_dictionaries(
    {"when": st.lists(st.sampled_from(TOKENS), min_size=1, max_size=8).map(" ".join)},
    optional={
        "place": st.lists(st.sampled_from(["hot", "cold", "warm"]), max_size=3),
        "copies": st.fixed_dictionaries({"among": st.just(["hot", "cold"]), "n": st.integers(0, 3)}),
        "delete": st.booleans(),
        "min_age": st.sampled_from(["1d", "x", "30 d"]),
        "class": st.sampled_from(["big", "nope"]),
    },
)


@FAST
@given(st.lists(rules, min_size=1, max_size=4), st.sampled_from([None, 3, "5%", "x", True]))
def test_config_with_random_rules(rule_list: list[dict[str, object]], max_delete: object) -> None:
    policy: dict[str, object] = {"name": "p", "dataset": "logs", "rules": rule_list}
    if max_delete is not None:
        policy["max_delete"] = max_delete
    doc = {**BASE, "classes": {"big": "size > 1MiB"}, "policies": [policy]}
    _check_config(yaml.safe_dump(doc))


def test_alias_bomb_is_a_located_error() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 8):
        text += f"{'abcdefgh'[i]}: &{'abcdefgh'[i]} [" + ", ".join([f"*{'abcdefgh'[i - 1]}"] * 10) + "]\n"
    _check_config(text)
