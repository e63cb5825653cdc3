"""The cost guard and time in class. An overwritten placement's time in its storage class
counts from the overwrite: a transition out of the class before its minimum duration is
held, and with ``--allow-costly`` priced with the rest of the minimum. A restore planned
only for a transition the guard holds is held with it (docs/cost.md). Offline: the index is
written directly and planning never opens a store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tierctl import api
from tierctl.cost import Prices
from tierctl.index import Index
from tierctl.model import Entry
from tierctl.policies.loader import parse_config

DAY = 86400.0
NOW = 1_900_000_000.0
SIZE = 256 * 1024  # above GLACIER's 40 KiB overhead: the size check does not interfere
KEY = "d/obj.bin"


def _config(root: Path, place: str) -> str:
    path = root / "policies.yaml"
    path.write_text(
        f"""\
version: 1
index: {root / "index.db"}
tiers:
  s3:      {{url: "s3://bucket/data"}}
  glacier: {{url: "s3://bucket/data", storage_class: GLACIER}}
  hot:     {{url: "{root / "hot"}"}}
datasets:
  d: {{prefix: d/}}
policies:
  - name: p
    dataset: d
    rules:
      - {{when: "true", place: [{place}]}}
"""
    )
    return str(path)


def _glacier_entry(size: int, mtime: float) -> Entry:
    # "restored": readable, so the planner plans the transition itself, not a restore first
    return Entry(KEY, size, mtime, storage_class="GLACIER", restore_state="restored")


def test_time_in_class_counts_from_an_overwrite(tmp_path: Path) -> None:
    path = _config(tmp_path, "s3")
    config = parse_config(Path(path).read_text(), path)
    with Index.open(config.index_path) as index:
        # Archived 200 days ago, then overwritten with new content a day ago.
        index.record_copy(
            "d", KEY, "glacier", _glacier_entry(100, NOW - 300 * DAY), "crc32c:01", NOW - 200 * DAY
        )
        index.record_copy("d", KEY, "glacier", _glacier_entry(SIZE, NOW - 2 * DAY), "crc32c:02", NOW - DAY)
        [placement] = index.placements(KEY)
    assert placement.first_seen == NOW - 200 * DAY  # the sighting is kept
    assert placement.changed_at == NOW - DAY

    plan = api.plan(config, now=NOW)
    assert plan.actions == []
    [skipped] = plan.cost["skipped"] if plan.cost else []
    assert (skipped["op"], skipped["source"], skipped["target"]) == ("transition", "glacier", "s3")
    assert skipped["reason"] == (
        "its placement on tier 'glacier' (default S3 GLACIER) last changed 1 days ago; leaving that"
        " class before its 90-day minimum storage duration bills the other 89 days on top of tier 's3'"
    )

    costly = api.plan(config, now=NOW, allow_costly=True)
    assert [(a.op, a.source, a.target) for a in costly.actions] == [("transition", "glacier", "s3")]
    fee = Prices(config)["glacier"].monthly(SIZE) * 89 / 30
    assert costly.cost is not None
    assert costly.cost["one_time"]["early_deletion"] == pytest.approx(fee, abs=1e-10)


def _archived_a_day_ago(config_path: str) -> None:
    """d/obj.bin on GLACIER only, not restored, its class entered a day ago (an overwrite)."""
    config = api.load(config_path)
    now = time.time()
    entry = Entry(KEY, SIZE, now - 300 * DAY, storage_class="GLACIER", restore_state="archived")
    with Index.open(config.index_path) as index:
        index.record_copy("d", KEY, "glacier", entry, "crc32c:01", now - 200 * DAY)
        index.record_copy("d", KEY, "glacier", entry, "crc32c:01", now - DAY)


def test_a_restore_only_for_a_held_transition_is_held_with_it(tmp_path: Path, cli) -> None:
    path = _config(tmp_path, "s3")
    _archived_a_day_ago(path)
    doc = json.loads(cli("-c", path, "plan", "--json").out)
    assert doc["actions"] == []
    [skipped] = doc["cost"]["skipped"]
    assert (skipped["op"], skipped["target"]) == ("restore", "glacier")
    result = cli("-c", path, "plan")
    assert result.code == 0, result.err
    assert (
        "restore d/obj.bin glacier: it is only needed for the transition glacier -> s3, which the guard"
        " holds: its placement on tier 'glacier' (default S3 GLACIER) last changed 1 days ago;"
    ) in " ".join(result.out.split())
    # --allow-costly makes the restore (the transition follows in a later run)
    doc = json.loads(cli("-c", path, "plan", "--json", "--allow-costly").out)
    assert [(a["op"], a["target"]) for a in doc["actions"]] == [("restore", "glacier")]


def test_a_restore_another_action_needs_is_made(tmp_path: Path, cli) -> None:
    path = _config(tmp_path, "s3, hot")  # the copy to hot needs the restore too, and is not held
    _archived_a_day_ago(path)
    doc = json.loads(cli("-c", path, "plan", "--json").out)
    assert [(a["op"], a["target"]) for a in doc["actions"]] == [("restore", "glacier")]
    assert doc["cost"]["skipped"] == []
