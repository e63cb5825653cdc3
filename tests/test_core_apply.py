"""plan and apply on local tiers: verified copies, deletes only after, skips over changes."""

from __future__ import annotations

import json
import os
import time

import pytest

from tierctl import api
from tierctl.errors import PlanFileError
from tierctl.index import Index

from .conftest import STANDARD_POLICY, Sandbox


def _populate(sandbox: Sandbox, now: float) -> dict[str, bytes]:
    content = {}
    for i, age in enumerate([1, 3, 10, 30, 100, 400, 2000]):
        key = f"logs/{age:04d}d-{i}.log"
        data = os.urandom(1000 + i)
        sandbox.put("hot", key, data, age_days=age, now=now)
        content[key] = data
    return content


def test_plan_shows_actions_with_reasons_and_summary(sandbox: Sandbox, cli) -> None:
    _populate(sandbox, time.time())
    assert cli("-c", sandbox.config, "scan").code == 0
    result = cli("-c", sandbox.config, "plan")
    assert result.code == 0, result.err
    out = result.out
    assert "policy 'lifecycle' rule 1 'age < 7d' -> place [hot, warm]" in out
    assert "+ copy   logs/0001d-0.log  hot -> warm" in out
    assert "~ move   logs/0010d-2.log  hot -> warm" in out
    assert "~ move   logs/0400d-5.log  hot -> cold" in out
    assert "plan summary" in out
    assert "Plan: 11 actions on 7 of 7 objects." in out
    assert cli("-c", sandbox.config, "plan", "--detailed-exitcode").code == 2


def test_apply_moves_verifies_and_second_plan_is_empty(sandbox: Sandbox, cli) -> None:
    now = time.time()
    content = _populate(sandbox, now)
    cli("-c", sandbox.config, "scan")
    result = cli("-c", sandbox.config, "apply", "--yes", "--jobs", "4")
    assert result.code == 0, result.err + result.out
    assert "Apply ok: 11 done, 0 failed, 0 skipped" in result.out
    assert sandbox.files("hot") == {
        k: v for k, v in content.items() if k.startswith(("logs/0001", "logs/0003"))
    }
    assert sandbox.files("warm") == {
        k: v for k, v in content.items() if k.startswith(("logs/0001", "logs/0003", "logs/0010", "logs/0030"))
    }
    assert sandbox.files("cold") == {
        k: v for k, v in content.items() if k.startswith(("logs/0100", "logs/0400"))
    }
    assert not any(k.startswith("logs/2000") for t in ("hot", "warm", "cold") for k in sandbox.files(t))
    # The content mtime travels with every copy: archived data is not young again.
    for key in ("logs/0100d-4.log", "logs/0400d-5.log"):
        src_age = now - os.stat(sandbox.tier("cold") / key).st_mtime
        assert src_age > 99 * 86400
    # Index: copies carry the verified digest and verification time.
    with Index.open(api.load(sandbox.config).index_path) as index:
        (placement,) = index.placements("logs/0400d-5.log")
        assert placement.tier == "cold" and placement.checksum.startswith("crc32c:")
        assert placement.verified_at is not None
        runs = index.conn.execute("SELECT outcome, done, failed FROM runs").fetchall()
        assert runs == [("ok", 11, 0)]
    again = cli("-c", sandbox.config, "plan", "--detailed-exitcode")
    assert again.code == 0 and "No changes." in again.out
    # A fresh scan agrees with what apply recorded.
    cli("-c", sandbox.config, "scan")
    assert cli("-c", sandbox.config, "plan", "--detailed-exitcode").code == 0


def test_saved_plan_applies_exactly_and_tampering_is_refused(sandbox: Sandbox, cli, tmp_path) -> None:
    _populate(sandbox, time.time())
    cli("-c", sandbox.config, "scan")
    plan_file = str(tmp_path / "plan.json")
    assert cli("-c", sandbox.config, "plan", "-o", plan_file).code == 0
    with open(plan_file) as f:
        doc = json.load(f)
    doc["actions"][0]["target"] = "cold"
    tampered = str(tmp_path / "tampered.json")
    with open(tampered, "w") as f:
        json.dump(doc, f)
    result = cli("-c", sandbox.config, "apply", tampered)
    assert result.code == 1 and "checksum mismatch" in result.err
    # A plan made for another policy file is refused too.
    other = sandbox.root / "other.yaml"
    other.write_text(STANDARD_POLICY.replace("age < 90d", "age < 60d"))
    result = cli("-c", str(other), "apply", plan_file)
    assert result.code == 1 and "different policy file" in result.err
    result = cli("-c", sandbox.config, "apply", plan_file, "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["done"] == len(doc["actions"])


def test_objects_changed_since_planning_are_skipped_not_overwritten(sandbox: Sandbox, cli, tmp_path) -> None:
    now = time.time()
    sandbox.put("hot", "logs/old.log", b"original", age_days=100, now=now)
    sandbox.put("hot", "logs/young.log", b"young", age_days=1, now=now)
    cli("-c", sandbox.config, "scan")
    plan_file = str(tmp_path / "plan.json")
    cli("-c", sandbox.config, "plan", "-o", plan_file)
    # After planning: the source changes, and someone else writes the copy's destination.
    sandbox.put("hot", "logs/old.log", b"rewritten after plan", age_days=0, now=now)
    sandbox.put("warm", "logs/young.log", b"someone else's", age_days=0, now=now)
    result = cli("-c", sandbox.config, "apply", plan_file, "--json")
    assert result.code == 3
    report = json.loads(result.out)
    assert report["outcome"] == "failed" and report["skipped"] == 3  # copy + its delete, and the other copy
    assert (sandbox.tier("hot") / "logs/old.log").read_bytes() == b"rewritten after plan"
    assert not (sandbox.tier("cold") / "logs/old.log").exists()
    assert (sandbox.tier("warm") / "logs/young.log").read_bytes() == b"someone else's"
    errors = " ".join(p["error"] for p in report["problems"])
    assert "changed since it was planned" in errors and "not overwritten" in errors
    # What was found is said, so a user can tell whose object it is.
    found = len(b"someone else's")
    assert f"(found {found} bytes, mtime {now:.6f}, planned nothing)" in errors


def test_corrupt_replica_is_never_trusted_and_source_is_kept(sandbox: Sandbox, cli) -> None:
    """warm already holds a same-size, same-mtime copy with different bytes (bit rot):
    the move must verify it before deleting hot, find the mismatch, and keep hot."""
    now = time.time()
    good = b"A" * 4096
    sandbox.put("hot", "logs/x.log", good, age_days=30, now=now)
    sandbox.put("warm", "logs/x.log", b"A" * 4000 + b"B" * 96, age_days=30, now=now)
    cli("-c", sandbox.config, "scan")
    result = cli("-c", sandbox.config, "apply", "--yes", "--json")
    assert result.code == 3
    report = json.loads(result.out)
    ops = sorted((p["op"], p["status"]) for p in report["problems"])
    assert ops == [("delete", "skipped"), ("verify", "failed")]
    assert (sandbox.tier("hot") / "logs/x.log").read_bytes() == good


def test_delete_refuses_when_the_kept_copy_vanished(sandbox: Sandbox, cli, tmp_path) -> None:
    now = time.time()
    sandbox.put("hot", "logs/x.log", b"data", age_days=30, now=now)
    sandbox.put("warm", "logs/x.log", b"data", age_days=30, now=now)
    cli("-c", sandbox.config, "scan")
    # Pretend a previous run verified warm, so the plan is a bare delete of hot.
    config = api.load(sandbox.config)
    with Index.open(config.index_path) as index, index.transaction():
        index.record_verified("logs", "logs/x.log", "warm", "crc32c:0", now)
    plan_file = str(tmp_path / "p.json")
    cli("-c", sandbox.config, "plan", "-o", plan_file)
    with open(plan_file) as f:
        assert [a["op"] for a in json.load(f)["actions"]] == ["delete"]
    (sandbox.tier("warm") / "logs/x.log").unlink()  # the only other copy disappears
    result = cli("-c", sandbox.config, "apply", plan_file, "--json")
    assert result.code == 3
    assert "refusing to delete" in json.loads(result.out)["problems"][0]["error"]
    assert (sandbox.tier("hot") / "logs/x.log").read_bytes() == b"data"


def test_interrupted_copy_found_on_target_is_verified_not_redone(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("hot", "logs/x.log", b"payload", age_days=30, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    plan = api.plan(config, now=now)
    # A crashed run had already written the copy but not recorded it.
    sandbox.put("warm", "logs/x.log", b"payload", age_days=30, now=now)
    report = api.apply(config, plan)
    assert (report.done, report.failed, report.bytes) == (2, 0, 0)
    assert sandbox.files("warm") == {"logs/x.log": b"payload"} and sandbox.files("hot") == {}


def test_stale_copy_on_desired_tier_is_overwritten_with_newest(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("warm", "logs/x.log", b"old version", age_days=40, now=now)
    sandbox.put("hot", "logs/x.log", b"new version!", age_days=20, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    plan = api.plan(config, now=now)
    assert [(a.op, a.source, a.target) for a in plan.actions] == [
        ("copy", "hot", "warm"),
        ("delete", None, "hot"),
    ]
    report = api.apply(config, plan)
    assert report.outcome == "ok"
    assert sandbox.files("warm") == {"logs/x.log": b"new version!"} and sandbox.files("hot") == {}


def test_where_ls_du(sandbox: Sandbox, cli) -> None:
    _populate(sandbox, time.time())
    cli("-c", sandbox.config, "scan")
    cli("-c", sandbox.config, "apply", "--yes")
    result = cli("-c", sandbox.config, "where", "logs/0001d-0.log", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    (obj,) = doc["objects"]
    assert obj["key"] == "logs/0001d-0.log"
    assert sorted(p["tier"] for p in obj["placements"]) == ["hot", "warm"]
    for p in obj["placements"]:
        assert {"tier", "size", "checksum", "storage_class", "url", "mtime", "verified_at"} <= set(p)
        assert p["size"] == 1000
    dataset = json.loads(cli("-c", sandbox.config, "where", "logs", "--json").out)
    assert dataset["kind"] == "dataset" and dataset["objects"] == 6
    assert {t["tier"]: t["objects"] for t in dataset["tiers"]} == {"hot": 2, "warm": 4, "cold": 2}
    prefix = json.loads(cli("-c", sandbox.config, "where", "logs/00", "--json").out)
    assert prefix["kind"] == "prefix" and prefix["objects"] == 4
    missing = cli("-c", sandbox.config, "where", "nope/")
    assert missing.code == 1 and "nothing in the index matches" in missing.err
    lines = [json.loads(line) for line in cli("-c", sandbox.config, "ls", "logs", "--json").out.splitlines()]
    assert [entry["key"] for entry in lines] == sorted(k for k in _keys(sandbox))
    usage = json.loads(cli("-c", sandbox.config, "du", "--json").out)
    assert sum(u["bytes"] for u in usage) == sum(
        len(v) for t in ("hot", "warm", "cold") for v in sandbox.files(t).values()
    )


def _keys(sandbox: Sandbox) -> set[str]:
    return {k for t in ("hot", "warm", "cold") for k in sandbox.files(t)}


def test_apply_without_confirmation_on_a_pipe_refuses(sandbox: Sandbox, cli) -> None:
    _populate(sandbox, time.time())
    cli("-c", sandbox.config, "scan")
    result = cli("-c", sandbox.config, "apply")
    assert result.code == 1 and "refusing to apply without confirmation" in result.err
    assert len(sandbox.files("hot")) == 7


def test_init_writes_a_valid_starter_and_refuses_to_overwrite(tmp_path, cli, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)
    assert cli("init").code == 0
    config = api.load(str(tmp_path / "policies.yaml"))
    assert set(config.tiers) == {"hot", "warm", "cold"}
    again = cli("init")
    assert again.code == 1 and "--force" in again.err


def test_demo_runs_the_whole_loop(tmp_path, cli) -> None:
    folder = str(tmp_path / "demo")
    result = cli("demo", "--dir", folder, "--files", "120")
    assert result.code == 0, result.err
    assert "No changes." in result.out  # the second plan is empty
    config = api.load(os.path.join(folder, "policies.yaml"))
    with Index.open(config.index_path) as index:
        assert index.object_count() == 120
    on_disk = sum(len(files) for _, _, files in os.walk(folder) if ".tierctl" not in _)
    assert on_disk >= 120


def test_saved_plan_file_must_exist_and_parse(sandbox: Sandbox, tmp_path) -> None:
    config = api.load(sandbox.config)
    with pytest.raises(PlanFileError, match="not found"):
        api.load_plan(config, str(tmp_path / "none.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PlanFileError, match="not a readable plan"):
        api.load_plan(config, str(bad))


def test_history_keeps_where_a_moved_object_was_first_seen(sandbox: Sandbox, cli) -> None:
    now = time.time()
    sandbox.put("hot", "logs/x.log", b"data", age_days=100, now=now)
    cli("-c", sandbox.config, "scan")
    cli("-c", sandbox.config, "apply", "--yes")
    events = json.loads(cli("-c", sandbox.config, "history", "logs/x.log", "--json").out)
    assert [(e["event"], e["tier"]) for e in events] == [("seen", "hot"), ("copy", "cold"), ("delete", "hot")]
    assert events[1]["source"] == "hot" and "rule 3" in events[1]["reason"]
