"""Golden cases: one YAML file per case under tests/golden/policies/.

A case holds ``policy`` (the policy file's text), ``objects`` (key, size, age, and
optionally seen, accessed, storage_class, tiers, stale), ``now`` (optional ISO date),
and ``expect``: ``desired`` (key -> tiers | "delete" | null), ``actions`` (the plan as
"op source->target key" lines), ``next_change`` (key -> duration from now),
``refused`` (a message the plan is refused with) or ``errors`` ("line:col: text" of
every validation problem, in order).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from tierctl.errors import ConfigError, ConfigErrors, DeleteLimitExceeded
from tierctl.explain import explain
from tierctl.model import ObjectSnapshot, Placement
from tierctl.planner import make_plan
from tierctl.policies.loader import parse_config
from tierctl.policies.units import parse_duration

CASES = sorted((Path(__file__).parent / "golden" / "policies").glob("*.yaml"))
NOW = 1_790_000_000.0


def _seconds(value: Any) -> float:
    return parse_duration(value) if isinstance(value, str) else float(value)


def load_case(path: Path) -> tuple[dict[str, Any], float]:
    case = yaml.safe_load(path.read_text())
    now = NOW
    if "now" in case:
        now = dt.datetime.fromisoformat(str(case["now"])).replace(tzinfo=dt.timezone.utc).timestamp()
    return case, now


def objects_for(config: Any, case: dict[str, Any], now: float) -> list[ObjectSnapshot]:
    objects = []
    for spec in case.get("objects", []):
        key = spec["key"]
        dataset = next(n for n, d in config.datasets.items() if key.startswith(d.prefix))
        mtime = now - _seconds(spec["age"])
        first_seen = now - _seconds(spec.get("seen", spec["age"]))
        atime = now - _seconds(spec["accessed"]) if "accessed" in spec else None
        size = int(spec.get("size", 100))
        placements = [
            Placement(
                dataset,
                key,
                tier,
                size,
                mtime,
                storage_class=spec.get("storage_class", config.tiers[tier].storage_class),
                first_seen=first_seen,
                atime=atime,
            )
            for tier in spec.get("tiers", ["hot"])
        ]
        placements += [
            Placement(dataset, key, tier, size + 1, mtime - 86400, first_seen=first_seen)
            for tier in spec.get("stale", [])
        ]
        objects.append(ObjectSnapshot(dataset, key, tuple(placements), first_seen))
    return objects


def action_line(a: Any) -> str:
    route = f"{a.source}->{a.target}" if a.source else a.target
    return f"{a.op} {route} {a.key}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path) -> None:
    case, now = load_case(path)
    expect = case["expect"]
    source = f"/golden/{path.name}"
    if "errors" in expect:
        with pytest.raises(ConfigError) as info:
            parse_config(case["policy"], source, lint=True)
        problems = info.value.problems if isinstance(info.value, ConfigErrors) else [info.value]
        got = [f"{p.location.line}:{p.location.column}: {p.message}" for p in problems if p.location]
        assert len(got) == len(problems), [str(p) for p in problems]
        assert len(got) == len(expect["errors"]), got
        for line, wanted in zip(got, expect["errors"], strict=True):
            where, _, text = wanted.partition(" ")
            assert line.startswith(where + " "), (line, wanted)
            assert text in line, (line, wanted)
        assert all(p.hint for p in problems), [str(p) for p in problems if not p.hint]
        return
    config = parse_config(case["policy"], source, lint=True)
    objects = objects_for(config, case, now)
    for obj in objects:
        result = explain(config, obj, now)
        if obj.key in expect.get("desired", {}):
            wanted = expect["desired"][obj.key]
            if wanted is None:
                assert not result.decided, result.outcome()
            elif wanted == "delete":
                assert result.delete, result.outcome()
            else:
                assert list(result.desired) == wanted, result.outcome()
        if obj.key in expect.get("next_change", {}):
            wanted = expect["next_change"][obj.key]
            if wanted is None:
                assert result.next_change is None
            else:
                assert result.next_change is not None, obj.key
                assert result.next_change.at - now == pytest.approx(_seconds(wanted)), obj.key
    if "refused" in expect:
        with pytest.raises(DeleteLimitExceeded, match=expect["refused"]):
            make_plan(config, objects, now)
        make_plan(config, objects, now, force=True)
        return
    if "actions" in expect:
        plan = make_plan(config, objects, now)
        assert [action_line(a) for a in plan.actions] == expect["actions"]
