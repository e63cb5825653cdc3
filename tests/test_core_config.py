"""The policy file: located errors with hints for every user mistake, never a traceback."""

from __future__ import annotations

import pytest

from tierctl.errors import ConfigError, ExpressionError
from tierctl.policies import expr
from tierctl.policies.loader import parse_config
from tierctl.policies.units import parse_duration, parse_size

from .conftest import DAY, STANDARD_POLICY, Sandbox


@pytest.mark.parametrize(
    ("source", "facts", "expected"),
    [
        ("age < 7d", expr.Facts(age=6 * DAY, size=1), True),
        ("age < 7d", expr.Facts(age=7 * DAY, size=1), False),
        ("age >= 7d and size > 1MiB", expr.Facts(age=8 * DAY, size=2 << 20), True),
        ("age >= 7d and size > 1MiB", expr.Facts(age=8 * DAY, size=1 << 20), False),
        ("not (size < 4KiB or age < 1h)", expr.Facts(age=7200, size=8192), True),
        ("size == 10 or size = 11", expr.Facts(age=0, size=11), True),
        ("size > 1 MiB and age < 2 d", expr.Facts(age=DAY, size=2 << 20), True),
        ("size > 1 and age < 2d", expr.Facts(age=DAY, size=2), True),
        ("true", expr.Facts(age=0, size=0), True),
        ("age > 1y", expr.Facts(age=366 * DAY, size=0), True),
    ],
)
def test_when_expressions_evaluate(source: str, facts: expr.Facts, expected: bool) -> None:
    assert expr.parse(source).evaluate(facts) is expected


@pytest.mark.parametrize(
    ("source", "column", "fragment"),
    [
        ("age < 7x", 7, "bad duration"),
        ("agee < 7d", 1, "unknown field"),
        ("age 7d", 5, "expected a comparison"),
        ("age < 7d and", 13, "expected a field name"),
        ("(age < 7d", 10, "missing ')'"),
        ("age < 7d size > 1", 10, "unexpected"),
        ("size > 1 parsec", 10, "unexpected"),
        ("age < 7d & size > 1", 10, "unexpected character"),
        ("", 1, "empty condition"),
        ('path ~ "[z-a]*"', 8, "bad glob"),
    ],
)
def test_when_errors_point_at_the_character(source: str, column: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        expr.parse(source)
    assert info.value.column == column
    assert fragment in info.value.message
    assert info.value.hint


def test_unknown_field_suggests_the_closest() -> None:
    with pytest.raises(ExpressionError) as info:
        expr.parse("sise > 1MiB")
    assert "'size'" in info.value.hint


def test_units() -> None:
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("1y") == 365 * DAY
    assert parse_size("1MiB") == 1 << 20
    assert parse_size("1.5 GB") == 1_500_000_000
    assert parse_size("42") == 42
    with pytest.raises(ValueError):
        parse_duration("7")
    with pytest.raises(ValueError):
        parse_size("3 parsecs")


def _error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/cfg/policies.yaml")
    return info.value


def _problems(text: str) -> list[str]:
    err = _error(text)
    return [
        f"{p.location.line}:{p.location.column} {p.message} | {p.hint}"
        for p in getattr(err, "problems", [err])
    ]


def test_standard_policy_parses(tmp_path) -> None:
    config = parse_config(STANDARD_POLICY, str(tmp_path / "policies.yaml"))
    assert list(config.tiers) == ["hot", "warm", "cold"]
    assert config.tiers["hot"].url == f"file://{tmp_path}/hot"
    assert config.datasets["logs"].prefix == "logs/"
    assert [r.place for r in config.policies[0].rules][:2] == [("hot", "warm"), ("warm",)]
    assert config.policies[0].rules[3].delete
    assert config.index_path == str(tmp_path / ".tierctl" / "index.db")


def test_unknown_key_is_located_with_closest_name() -> None:
    problems = _problems("tiers:\n  hot: {url: ./hot, storage_clas: X}\n")
    assert problems == ["2:21 unknown key 'storage_clas' in tier 'hot' | did you mean 'storage_class'?"]


def test_unknown_tier_in_place_is_located() -> None:
    text = STANDARD_POLICY.replace("place: [warm]", "place: [wram]")
    (problem,) = _problems(text)
    assert problem.startswith("15:16 unknown tier 'wram'")
    assert "did you mean 'warm'?" in problem


def test_a_bad_include_glob_is_located_not_a_crash_at_plan_time() -> None:
    text = STANDARD_POLICY.replace("    rules:", '    include: ["ok/**", "[z-a]*"]\n    rules:', 1)
    (problem,) = _problems(text)
    assert "bad glob '[z-a]*'" in problem and "low to high" in problem


def test_bad_when_points_inside_the_quoted_expression() -> None:
    text = STANDARD_POLICY.replace('"age < 90d"', '"age < 90q"')
    (problem,) = _problems(text)
    # line 14: `      - when: "age < 90q"`: the quote is at column 15, the literal at 22
    assert problem.startswith("14:22 in `age < 90q`: bad duration")


def test_several_problems_are_all_reported() -> None:
    text = STANDARD_POLICY.replace("dataset: logs", "dataset: lgos").replace("place: [warm]", "place: [nope]")
    problems = _problems(text)
    assert len(problems) == 2
    assert any("unknown dataset 'lgos'" in p for p in problems)
    assert any("unknown tier 'nope'" in p for p in problems)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tiers: [a, b]\n", "tiers must be a mapping"),
        ("tiers:\n  hot: {url: ./hot}\n  hot2: {url: ./hot}\n", "same url and storage class"),
        ("tiers:\n  a: {url: ./data}\n  b: {url: ./data/inner}\n", "lies inside tier 'a'"),
        ("tiers: {a: ./a}\ndatasets:\n  x: {prefix: logs/}\n  y: {prefix: logs/old/}\n", "overlap"),
        (
            "tiers: {a: ./a}\npolicies:\n  - name: p\n    dataset: d\n    rules: []\n",
            "rules must be a non-empty list",
        ),
        (
            "tiers: {a: ./a}\ndatasets: {d: {prefix: d/}}\npolicies:\n  - name: p\n    dataset: d\n"
            "    schedule: 'every day'\n    rules: [{when: 'true', place: [a]}]\n",
            "bad cron expression",
        ),
        (
            "tiers: {a: ./a}\ndatasets: {d: {prefix: d/}}\npolicies:\n  - name: p\n    dataset: d\n"
            "    rules: [{when: 'true'}]\n",
            "needs `place: [tiers]` or `delete: true`",
        ),
        (
            "tiers: {a: ./a}\ndatasets: {d: {prefix: d/}}\npolicies:\n  - name: p\n    dataset: d\n"
            "    rules: [{when: 'true', place: [a], delete: true}]\n",
            "either place or delete",
        ),
        ("version: 2\ntiers: {a: ./a}\n", "unsupported version"),
        ("digest: sha1\ntiers: {a: ./a}\n", "unknown digest"),
        ("tiers: {a: ./a}\ndatasets: {d: {prefix: /abs/}}\n", "relative key prefix"),
        ("key: [unclosed\n", "YAML syntax"),
        ("tiers:\n  a: {url: ./a}\n  a: {url: ./b}\n", "duplicate key"),
        ("", "policy file is empty"),
    ],
)
def test_user_mistakes_are_located_errors(text: str, fragment: str) -> None:
    err = _error(text)
    messages = [p.message for p in getattr(err, "problems", [err])]
    assert any(fragment in m for m in messages), messages
    assert all(p.location is not None for p in getattr(err, "problems", [err]))


def test_cli_reports_config_errors_without_traceback(sandbox: Sandbox, cli) -> None:
    sandbox.write_config(STANDARD_POLICY.replace("place: [warm]", "place: [wram]"))
    result = cli("-c", sandbox.config, "plan")
    assert result.code == 1
    assert f"error: {sandbox.config}:15:16: unknown tier 'wram'" in result.err
    assert "hint: did you mean 'warm'?" in result.err
    assert "Traceback" not in result.err


def test_missing_config_says_how_to_start(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)
    result = cli("plan")
    assert result.code == 1
    assert "policy file not found" in result.err
    assert "tierctl init" in result.err


def test_config_from_environment(sandbox: Sandbox, cli, monkeypatch) -> None:
    monkeypatch.setenv("TIERCTL_CONFIG", sandbox.config)
    result = cli("plan", "--json")
    assert result.code == 0, result.err
    assert '"format": "tierctl-plan"' in result.out
