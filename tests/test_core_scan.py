"""Scanning: placements recorded; unchanged trees write nothing; gone and changed marked."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tierctl import api
from tierctl.index import Index

from .conftest import Sandbox


def _rows(config) -> list[tuple]:
    with Index.open(config.index_path) as index:
        return index.dump()


def test_scan_records_every_placement(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("hot", "logs/a.log", b"aaa", age_days=1, now=now)
    sandbox.put("hot", "logs/sub/b.log", b"bb", age_days=10, now=now)
    sandbox.put("warm", "logs/a.log", b"aaa", age_days=1, now=now)
    sandbox.put("hot", "other/not-in-dataset.log", b"x", age_days=1, now=now)
    config = api.load(sandbox.config)
    reports = api.scan(config, now=now)
    by_tier = {r.tier: r for r in reports}
    assert (by_tier["hot"].new, by_tier["warm"].new, by_tier["cold"].new) == (2, 1, 0)
    rows = _rows(config)
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("logs/a.log", "hot", 3),
        ("logs/a.log", "warm", 3),
        ("logs/sub/b.log", "hot", 2),
    ]
    mtime = os.stat(sandbox.tier("hot") / "logs/a.log").st_mtime_ns / 1e9
    assert abs(rows[0][4] - mtime) < 1e-6


def test_rescan_of_unchanged_tree_writes_nothing(sandbox: Sandbox) -> None:
    now = time.time()
    for i in range(50):
        sandbox.put("hot", f"logs/{i:03d}.log", b"x" * i, age_days=i, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    with Index.open(config.index_path) as index:
        before = index.conn.total_changes, index.dump()
    index = Index.open(config.index_path)
    try:
        changes_before = index.conn.total_changes
        for name, prefix in (("logs", "logs/"),):
            for tier in ("hot", "warm", "cold"):
                from tierctl.movers.local import LocalMover

                mover = LocalMover(config.tiers[tier].url)
                report = index.scan_tier(name, tier, prefix, mover.list(prefix), now + 60)
                assert report.new == report.changed == report.gone == 0
        assert index.conn.total_changes == changes_before  # not a single row written
        assert index.dump() == before[1]
    finally:
        index.close()


def test_vanished_files_are_gone_and_changed_files_changed(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("hot", "logs/keep.log", b"k", age_days=1, now=now)
    sandbox.put("hot", "logs/vanish.log", b"v", age_days=1, now=now)
    sandbox.put("hot", "logs/change.log", b"c", age_days=1, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    (sandbox.tier("hot") / "logs/vanish.log").unlink()
    sandbox.put("hot", "logs/change.log", b"changed!", age_days=0, now=now)
    hot = next(r for r in api.scan(config, now=now + 1) if r.tier == "hot")
    assert (hot.gone, hot.changed, hot.unchanged, hot.new) == (1, 1, 1, 0)
    rows = {r[1]: r for r in _rows(config)}
    assert rows["logs/vanish.log"][8] == "gone"
    assert rows["logs/change.log"][3] == len(b"changed!")
    assert rows["logs/change.log"][11] == now + 1  # changed_at
    with Index.open(config.index_path) as index:
        assert [p.key for p in index.placements("logs/vanish.log")] == []
    # A file that comes back is present again.
    sandbox.put("hot", "logs/vanish.log", b"v", age_days=1, now=now)
    hot = next(r for r in api.scan(config, now=now + 2) if r.tier == "hot")
    assert hot.new == 1
    assert _rows(config)[2][8] == "present"


def test_a_tier_that_lists_empty_is_not_taken_for_deleted(sandbox: Sandbox, cli) -> None:
    now = time.time()
    for i in range(5):
        sandbox.put("hot", f"logs/{i}.log", b"x", age_days=1, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    os.rename(sandbox.tier("hot"), sandbox.root / "hot-unmounted")
    result = cli("-c", sandbox.config, "scan")
    assert result.code == 1
    assert "lists no objects" in result.err and "--allow-empty" in result.err
    assert all(r[8] == "present" for r in _rows(config))
    result = cli("-c", sandbox.config, "scan", "--allow-empty")
    assert result.code == 0
    assert all(r[8] == "gone" for r in _rows(config))


def test_listing_order_matches_the_index_order(sandbox: Sandbox) -> None:
    """'a.log' < 'a/x' in byte order: the walk must not list a folder before its sibling."""
    now = time.time()
    keys = ["logs/a/x", "logs/a.log", "logs/a-b", "logs/a0", "logs/é.log", "logs/Z", "logs/a/b/c"]
    for key in keys:
        sandbox.put("hot", key, b"1", age_days=1, now=now)
    from tierctl.movers.local import LocalMover

    listed = [e.key for e in LocalMover(f"file://{sandbox.tier('hot')}").list("logs/")]
    assert listed == sorted(keys)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    assert next(r for r in api.scan(config, now=now) if r.tier == "hot").unchanged == len(keys)


def test_unsafe_names_are_skipped_and_reported(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("hot", "logs/ok.log", b"1", age_days=1, now=now)
    sandbox.put("hot", "logs/bad\nname.log", b"1", age_days=1, now=now)
    os.symlink("/etc/passwd", sandbox.tier("hot") / "logs" / "link.log")
    config = api.load(sandbox.config)
    hot = next(r for r in api.scan(config, now=now) if r.tier == "hot")
    assert hot.new == 1
    assert any("bad\\nname.log" in e for e in hot.errors)
    assert any("link.log" in e for e in hot.errors)


def test_scan_removes_temp_files_of_dead_writers_only(sandbox: Sandbox) -> None:
    now = time.time()
    sandbox.put("hot", "logs/a.log", b"1", age_days=1, now=now)
    folder = sandbox.tier("hot") / "logs"
    dead = folder / ".tierctl-tmp-999999999-abc"  # no such pid
    live = folder / f".tierctl-tmp-{os.getpid()}-def"  # a write in progress
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    config = api.load(sandbox.config)
    hot = next(r for r in api.scan(config, now=now) if r.tier == "hot")
    assert hot.listed == 1
    assert not dead.exists() and live.exists()


def test_scan_removes_temp_files_of_writers_that_exited_unreaped(sandbox: Sandbox) -> None:
    """A killed apply's worker process stays a zombie until init reaps it; its pid still
    answers kill(pid, 0), but its temp file is abandoned all the same."""
    now = time.time()
    sandbox.put("hot", "logs/a.log", b"1", age_days=1, now=now)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only exits
        os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while b") Z" not in Path(f"/proc/{pid}/stat").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        zombie = sandbox.tier("hot") / "logs" / f".tierctl-tmp-{pid}-abc-0"
        zombie.write_bytes(b"partial")
        hot = next(r for r in api.scan(api.load(sandbox.config), now=now) if r.tier == "hot")
        assert hot.listed == 1
        assert not zombie.exists()
    finally:
        os.waitpid(pid, 0)
