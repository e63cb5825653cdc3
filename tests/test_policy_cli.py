"""validate, explain, simulate, plan --as-of and max_delete through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import DAY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["policies.example.yaml", "docs/examples/policy-language.yaml"])
def test_examples_are_valid(cli, path: str) -> None:
    result = cli("-c", str(ROOT / path), "validate")
    assert result.code == 0, result.out + result.err
    assert "OK" in result.out


def test_validate_reports_every_problem_located(cli, sandbox) -> None:
    path = sandbox.write_config(
        """\
        version: 1
        tiers:
          hot: ./hot
        datasets:
          logs: {prefix: logs/}
        policies:
          - name: lc
            dataset: logs
            rules:
              - when: "age < 7d and siz > 1MiB"
                place: [hott]
              - when: "true"
                delete: true
        """
    )
    result = cli("-c", path, "validate")
    assert result.code == 1
    assert f"{path}:10:29: in `age < 7d and siz > 1MiB`: unknown field 'siz'" in result.out
    assert "hint: did you mean 'size'?" in result.out
    assert f"{path}:11:16: unknown tier 'hott'" in result.out
    assert f"{path}:13:17: policy 'lc' rule 2: delete without a guard" in result.out
    assert "3 problems" in result.out
    doc = json.loads(cli("-c", path, "validate", "--json").out)
    assert doc["ok"] is False
    assert [(p["line"], p["column"]) for p in doc["problems"]] == [(10, 29), (11, 16), (13, 17)]
    assert all(p["hint"] for p in doc["problems"])


def test_validate_json_when_valid(cli, sandbox) -> None:
    result = cli("-c", sandbox.config, "validate", "--json")
    assert result.code == 0
    doc = json.loads(result.out)
    assert doc["ok"] and doc["problems"] == [] and "OK" in doc["summary"]


def _scanned(cli, sandbox, ages: dict[str, float]) -> float:
    now = time.time()
    for key, age in ages.items():
        sandbox.put("hot", key, b"x" * 10, age_days=age, now=now)
    assert cli("-c", sandbox.config, "scan").code == 0
    return now


def test_explain_text_and_json(cli, sandbox) -> None:
    _scanned(cli, sandbox, {"logs/a.log": 30})
    result = cli("-c", sandbox.config, "explain", "logs/a.log")
    assert result.code == 0, result.err
    assert "rule 1 `age < 7d`: no: age < 7d (age is 30d)" in result.out
    assert "decision: place [warm]" in result.out
    assert "moves from [warm] to [cold]" in result.out
    doc = json.loads(cli("-c", sandbox.config, "explain", "logs/a.log", "--json").out)
    assert doc["decision"]["rule"] == 2 and doc["to_add"] == ["warm"] and doc["to_remove"] == ["hot"]
    assert doc["next_change"]["in_days"] == pytest.approx(60, abs=0.01)
    assert doc["facts"]["last_access_known"] is True  # local listings record atime


def test_explain_unknown_key_is_a_clean_error(cli, sandbox) -> None:
    _scanned(cli, sandbox, {"logs/a.log": 1})
    result = cli("-c", sandbox.config, "explain", "logs/nope.log")
    assert result.code == 1 and "no object 'logs/nope.log'" in result.err and "hint:" in result.err


def test_simulate_and_plan_as_of(cli, sandbox) -> None:
    _scanned(cli, sandbox, {"logs/a.log": 1, "logs/b.log": 80})
    doc = json.loads(cli("-c", sandbox.config, "simulate", "--days", "20", "--json").out)
    assert len(doc["days"]) == 21
    assert doc["initial"]["hot"] == {"objects": 2, "bytes": 20}
    assert doc["days"][-1]["tiers"]["cold"]["objects"] == 1
    assert doc["days"][-1]["tiers"]["warm"]["objects"] == 1
    text = cli("-c", sandbox.config, "simulate", "--days", "20")
    assert text.code == 0 and "simulation" in text.out
    later = json.loads(cli("-c", sandbox.config, "plan", "--as-of", "+4000d", "--json").out)
    assert {a["op"] for a in later["actions"]} == {"delete"}
    assert sandbox.files("hot")  # nothing was touched


def test_max_delete_refuses_unless_forced(cli, sandbox) -> None:
    text = (
        Path(sandbox.config)
        .read_text()
        .replace("    dataset: logs\n", "    dataset: logs\n    max_delete: 1\n")
    )
    sandbox.write_config(text)
    _scanned(cli, sandbox, {"logs/a.log": 2000, "logs/b.log": 2000})
    refused = cli("-c", sandbox.config, "plan")
    assert refused.code == 1
    assert "would delete 2 of 2 objects, more than its max_delete of 1" in refused.err
    assert "--force" in refused.err
    forced = cli("-c", sandbox.config, "plan", "--force", "--json")
    assert forced.code == 0 and len(json.loads(forced.out)["actions"]) == 2


def test_policy_commands_have_help(cli) -> None:
    for command in ("validate", "explain", "simulate"):
        result = cli(command, "--help")
        assert result.code == 0 and len(result.out.strip().splitlines()) > 3, command


def test_atime_is_recorded_and_drives_last_access(cli, sandbox) -> None:
    now = _scanned(cli, sandbox, {"logs/a.log": 30})
    os.utime(sandbox.tier("hot") / "logs" / "a.log", (now - DAY, now - 30 * DAY))
    assert cli("-c", sandbox.config, "scan").code == 0
    doc = json.loads(cli("-c", sandbox.config, "explain", "logs/a.log", "--json").out)
    assert doc["facts"]["last_access"] == pytest.approx(DAY, abs=60)
