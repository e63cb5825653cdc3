"""A scan's later local tiers are walked by forked children (movers.local_walk.ForkedWalk):
the same batches, skipped keys and removed temp files as a walk in this process; errors
raised here as themselves; a walk left early leaves no process behind."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl import api
from tierctl.errors import MoverError
from tierctl.movers.local import LocalMover
from tierctl.movers.local_walk import FileStats, ForkedWalk

from .conftest import Sandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked walks are Linux-only")


def _tree(root: Path, files: int) -> None:
    for i in range(files):
        path = root / "logs" / f"{i % 37:02d}" / f"{i:05d}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (i % 50))
    (root / "logs" / "bad\nname").write_bytes(b"unsafe key")
    os.symlink("/etc/hostname", root / "logs" / "link")
    (root / "logs" / "03" / ".tierctl-tmp-999999999-abc-0").write_bytes(b"abandoned")


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                found.add(int(entry))
    return found


def test_a_forked_walk_lists_what_a_walk_here_lists(tmp_path: Path) -> None:
    before = _children()  # (servers other tests' fixtures started live on)
    # FORKED_MESSAGE_FILES is 4096: 10k files come in several messages.
    _tree(tmp_path / "a", 10_000)
    shutil.copytree(tmp_path / "a", tmp_path / "b", symlinks=True)  # same times (copy2)
    here, there = LocalMover(str(tmp_path / "a")), LocalMover(str(tmp_path / "b"))
    walk = there.stat_batches_elsewhere("logs/")
    expected = list(here.stat_batches("logs/"))
    got = list(walk)
    assert sum(map(len, expected)) == 10_000 and list(map(len, got)) == list(map(len, expected))
    # The same files in the same batches (access times differ: copytree read tree a).
    assert [[f[:3] for f in b] for b in got] == [[f[:3] for f in b] for b in expected]
    assert there.skipped_keys() == here.skipped_keys() == ["logs/bad\nname", "logs/link"]
    assert there.removed_temp_files == here.removed_temp_files == 1
    assert not (tmp_path / "b" / "logs" / "03" / ".tierctl-tmp-999999999-abc-0").exists()
    assert _children() - before == set()


def test_a_scan_walks_later_tiers_in_a_child_and_records_the_same(sandbox: Sandbox) -> None:
    now = time.time()
    for tier in ("hot", "warm", "cold"):
        for i in range(300):
            sandbox.put(tier, f"logs/{i % 7}/{tier}-{i:04d}.log", b"y" * i, age_days=i % 40, now=now)
    config = api.load(sandbox.config)
    forks_before = _count_forks()
    reports = api.scan(config, now=now)
    assert _count_forks() - forks_before == 2  # warm and cold; hot is walked here
    assert [(r.tier, r.listed, r.new) for r in reports] == [(t, 300, 300) for t in ("hot", "warm", "cold")]
    with api.open_index(config) as index:
        rows = index.conn.execute("SELECT tier, count(*), sum(size) FROM placements GROUP BY tier").fetchall()
    assert sorted(rows) == [(t, 300, sum(range(300))) for t in ("cold", "hot", "warm")]
    again = api.scan(config, now=now)
    assert [(r.listed, r.unchanged) for r in again] == [(300, 300)] * 3


_forks = [0]


def _count_forks() -> int:
    return _forks[0]


os.register_at_fork(after_in_parent=lambda: _forks.__setitem__(0, _forks[0] + 1))


def _batches_then(error: BaseException, batches: int = 2) -> Iterator[FileStats]:
    for i in range(batches):
        yield [(f"k{i}", 1, 1.0, 1.0)] * 5000
    raise error


def _no_summary() -> tuple[list[str], int]:
    return [], 0


def test_an_error_in_the_child_is_raised_here_as_itself() -> None:
    before = _children()
    walk = ForkedWalk(
        lambda: _batches_then(MoverError("listing /x: permission denied", hint="check the owner")),
        _no_summary,
        lambda skipped, removed: None,
        "file:///x",
    )
    got = []
    with pytest.raises(MoverError) as raised:
        for batch in walk:
            got.append(batch)
    assert len(got) == 2 and raised.value.hint == "check the owner"
    assert "permission denied" in str(raised.value)
    assert _children() - before == set()


def test_a_bug_in_the_child_is_reported_with_its_traceback() -> None:
    before = _children()
    walk = ForkedWalk(
        lambda: _batches_then(ZeroDivisionError("a bug"), batches=0),
        _no_summary,
        lambda skipped, removed: None,
        "file:///x",
    )
    with pytest.raises(MoverError, match=r"(?s)helper process failed.*ZeroDivisionError: a bug"):
        list(walk)
    assert _children() - before == set()


def test_a_walk_left_early_stops_its_child(tmp_path: Path) -> None:
    before = _children()
    _tree(tmp_path / "a", 20_000)
    walk = LocalMover(str(tmp_path / "a")).stat_batches_elsewhere("logs/")
    first = next(iter(walk))
    assert first
    walk.close()
    assert _children() - before == set()
    unused = LocalMover(str(tmp_path / "a")).stat_batches_elsewhere("logs/")
    assert len(_children() - before) == 1
    unused.close()  # never iterated: api.scan closes such walks when a scan fails
    assert _children() - before == set()
