"""The scan's fast path for local tiers (``LocalMover.stat_batches`` + ``Index.scan_tier_stats``):
it must see every change the entry merge sees (size, mtime, atime, new, gone, back again),
write exactly what it writes, and keep the listing's guarantees (order, temp files, symlinks,
unsafe keys)."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import string
import time
from pathlib import Path

import pytest

from tierctl import api
from tierctl.errors import MoverError
from tierctl.index import Index
from tierctl.model import MTIME_WINDOW, ScanReport
from tierctl.movers.base import check_key
from tierctl.movers.local import LocalMover
from tierctl.movers.local_walk import STAT_BATCH, FolderWalk

from .conftest import Sandbox, write_file

T0 = 1_790_000_000.0


def _report(r: ScanReport) -> tuple[object, ...]:
    return (r.listed, r.new, r.changed, r.gone, r.unchanged, r.bytes_listed, sorted(r.errors))


def _on_disk(root: Path, prefix: str) -> dict[str, tuple[int, float]]:
    """key -> (size, mtime) of every regular file under ``prefix``, read without tierctl."""
    found = {}
    for path in (root / prefix).rglob("*"):
        if path.is_file() and not path.is_symlink() and not path.name.startswith(".tierctl-tmp-"):
            st = path.lstat()
            found[path.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns / 1e9)
    return found


def _present(index: Index, tier: str) -> dict[str, tuple[int, float]]:
    return {r[1]: (r[3], r[4]) for r in index.dump() if r[2] == tier and r[8] == "present"}


def _assert_matches_disk(index: Index, root: Path) -> None:
    """Every file on disk has a present row of its size and mtime (within MTIME_WINDOW, the
    same instant), and no other row is present."""
    present, disk = _present(index, "hot"), _on_disk(root, "logs")
    assert sorted(present) == sorted(disk)
    for key, (size, mtime) in disk.items():
        assert present[key][0] == size and abs(present[key][1] - mtime) <= MTIME_WINDOW, key


class Twins:
    """Two indexes fed the same listings: one through the entry merge, one through the
    stat-batch merge. After every scan both must hold the same rows and give the same
    report, and the present rows must be what is on disk."""

    def __init__(self, tmp_path: Path, root: Path) -> None:
        self.root = root
        self.mover = LocalMover(root.as_uri())
        self.entry_index = Index.open(str(tmp_path / "entry" / "index.db"))
        self.stats_index = Index.open(str(tmp_path / "stats" / "index.db"))

    def scan(self, now: float, *, allow_empty: bool = False) -> ScanReport:
        by_entry = self.entry_index.scan_tier(
            "logs", "hot", "logs/", self.mover.list("logs/"), now, allow_empty=allow_empty
        )
        by_stats = self.stats_index.scan_tier_stats(
            "logs", "hot", "logs/", self.mover.stat_batches("logs/"), now, allow_empty=allow_empty
        )
        assert _report(by_stats) == _report(by_entry)
        assert self.stats_index.dump() == self.entry_index.dump()
        if by_stats.listed or allow_empty:
            _assert_matches_disk(self.stats_index, self.root)
        return by_stats

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> None:
        for index in (self.entry_index, self.stats_index):
            with index.transaction() as tx:
                tx.execute(sql, params)

    def close(self) -> None:
        self.entry_index.close()
        self.stats_index.close()


@pytest.fixture
def twins(tmp_path: Path):
    root = tmp_path / "hot"
    root.mkdir()
    pair = Twins(tmp_path, root)
    yield pair
    pair.close()


def test_changes_among_unchanged_files_are_seen(twins: Twins) -> None:
    root = twins.root
    for folder in range(3):
        for i in range(50):
            write_file(root, f"logs/d{folder}/f{i:03d}.log", b"x" * 10, T0)
    assert twins.scan(T0 + 1).new == 150
    assert twins.scan(T0 + 2).unchanged == 150
    os.utime(root / "logs/d1/f010.log", (T0 + 0.002, T0 + 0.002))  # mtime only, same size
    write_file(root, "logs/d2/f020.log", b"y" * 11, T0)  # size only, same mtime
    (root / "logs/d0/f030.log").unlink()  # one gone, one new: the folder's count is the same
    write_file(root, "logs/d0/f030b.log", b"z", T0)
    report = twins.scan(T0 + 3)
    assert (report.changed, report.new, report.gone, report.unchanged) == (2, 1, 1, 147)
    rows = {r[1]: r for r in twins.stats_index.dump()}
    assert rows["logs/d1/f010.log"][4] == T0 + 0.002
    assert rows["logs/d2/f020.log"][3] == 11
    assert rows["logs/d0/f030.log"][8] == "gone"
    assert rows["logs/d0/f030b.log"][8] == "present"


def test_an_mtime_within_the_window_is_the_same_content(twins: Twins) -> None:
    write_file(twins.root, "logs/a.log", b"a", T0)
    twins.scan(T0 + 1)
    twins.execute("UPDATE placements SET mtime = mtime + 0.0005")  # as a store with ms mtimes
    report = twins.scan(T0 + 2)
    assert (report.unchanged, report.changed) == (1, 0)


def test_a_row_that_needs_a_write_is_not_taken_for_unchanged(twins: Twins) -> None:
    """Same key, size and mtime, but the row has an etag, a storage class or another atime:
    the scan rewrites them, as the entry merge does. One folder each: one batch each."""
    for name in ("a", "b", "c", "d", "e"):
        write_file(twins.root, f"logs/{name}/f", b"1", T0)
    twins.scan(T0 + 1)
    twins.execute("UPDATE placements SET etag = 'v1' WHERE key = 'logs/a/f'")
    twins.execute("UPDATE placements SET storage_class = 'STANDARD' WHERE key = 'logs/b/f'")
    twins.execute("UPDATE placements SET atime = atime - 100 WHERE key = 'logs/c/f'")
    twins.execute("UPDATE placements SET atime = NULL WHERE key = 'logs/d/f'")
    changes = twins.stats_index.conn.total_changes
    report = twins.scan(T0 + 2)
    assert report.unchanged == 5
    assert twins.stats_index.conn.total_changes - changes == 4  # one metadata update per row
    rows = twins.stats_index.dump()
    assert all(r[6] is None and r[7] is None for r in rows)
    assert len({r[12] for r in rows}) == 1  # the same atime everywhere, as on disk


def test_rows_read_ahead_for_a_grown_folder_are_merged_later(twins: Twins) -> None:
    """A folder that gained files reads ahead into the next folders' rows; those rows must
    still be compared (and not taken for new files) when their folders come."""
    for folder, count in (("a", 2), ("b", 3), ("c", 4)):
        for i in range(count):
            write_file(twins.root, f"logs/{folder}/{i}", b"1", T0)
    twins.scan(T0 + 1)
    for i in range(2, 12):
        write_file(twins.root, f"logs/a/{i}", b"1", T0)
    os.utime(twins.root / "logs/c/3", (T0, T0 + 1))
    report = twins.scan(T0 + 2)
    assert (report.new, report.changed, report.unchanged) == (10, 1, 8)
    assert {r[9] for r in twins.stats_index.dump() if not r[1].startswith("logs/a/")} == {T0 + 1}


def test_a_file_that_comes_back_is_present_again(twins: Twins) -> None:
    write_file(twins.root, "logs/a.log", b"1", T0)
    write_file(twins.root, "logs/b.log", b"1", T0)
    twins.scan(T0 + 1)
    (twins.root / "logs/a.log").unlink()
    assert twins.scan(T0 + 2).gone == 1
    write_file(twins.root, "logs/a.log", b"22", T0 + 5)
    report = twins.scan(T0 + 3)
    assert (report.new, report.unchanged) == (1, 1)
    row = next(r for r in twins.stats_index.dump() if r[1] == "logs/a.log")
    assert (row[3], row[8], row[9]) == (2, "present", T0 + 3)  # size, state, first_seen


def test_an_empty_listing_is_not_taken_for_deleted(twins: Twins) -> None:
    for i in range(3):
        write_file(twins.root, f"logs/{i}.log", b"1", T0)
    twins.scan(T0 + 1)
    shutil.rmtree(twins.root / "logs")
    report = twins.scan(T0 + 2)
    assert report.gone == 0 and "lists no objects" in report.errors[0]
    assert twins.scan(T0 + 3, allow_empty=True).gone == 3


def test_folders_larger_than_a_batch(twins: Twins) -> None:
    count = STAT_BATCH * 2 + 100
    for i in range(count):
        write_file(twins.root, f"logs/big/f{i:05d}", b"1", T0)
    assert twins.scan(T0 + 1).new == count
    os.utime(twins.root / f"logs/big/f{STAT_BATCH + 7:05d}", (T0, T0 + 10))
    (twins.root / f"logs/big/f{count - 1:05d}").unlink()
    report = twins.scan(T0 + 2)
    assert (report.changed, report.gone, report.unchanged) == (1, 1, count - 2)


def test_random_changes_give_the_entry_merges_result(twins: Twins) -> None:
    """Rounds of random changes (edits, touches, deletes, new files and folders, folders
    removed, renames, files back again), each scanned both ways."""
    rng = random.Random(8)
    root = twins.root
    names = [
        f"logs/{d}/{n}" for d in ("a", "a.b", "a-b", "b/c", "b/c.d", "z") for n in ("x", "x.y", "y", "é")
    ]
    for key in rng.sample(names, 12):
        write_file(root, key, b"0", T0)
    for round_ in range(25):
        on_disk = sorted(_on_disk(root, "logs"))
        for _ in range(rng.randint(0, 6)):
            what = rng.choice(["edit", "touch", "atime", "delete", "add", "add", "rmdir", "rename"])
            key = rng.choice(on_disk) if on_disk else None
            if what == "add" or key is None:
                write_file(root, rng.choice(names), b"n" * rng.randint(0, 3), T0 + rng.randint(0, 9))
            elif not (root / key).exists():
                continue
            elif what == "edit":
                write_file(root, key, b"e" * rng.randint(0, 3), T0 + rng.choice([0, 0.0005, 1]))
            elif what == "touch":
                os.utime(root / key, (T0, T0 + rng.choice([0.0005, 0.002, 60])))
            elif what == "atime":
                st = os.stat(root / key)
                os.utime(root / key, ns=(st.st_atime_ns + 10**9, st.st_mtime_ns))
            elif what == "delete":
                (root / key).unlink()
            elif what == "rmdir":
                shutil.rmtree((root / key).parent)
            else:
                target = rng.choice(names)
                if not (root / target).exists():
                    (root / target).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(root / key, root / target)
        twins.scan(T0 + 100 + round_, allow_empty=True)


def test_stat_batches_list_what_list_lists(sandbox: Sandbox) -> None:
    now = time.time()
    keys = ["logs/a/x", "logs/a.log", "logs/a-b", "logs/a0", "logs/é.log", "logs/Z", "logs/a/b/c", "logs/ a"]
    for key in keys:
        sandbox.put("hot", key, b"1", age_days=1, now=now)
    mover = LocalMover(sandbox.tier("hot").as_uri())
    stats = [file for batch in mover.stat_batches("logs/") for file in batch]
    entries = list(mover.list("logs/"))
    assert [f[0] for f in stats] == sorted(keys) == [e.key for e in entries]
    assert stats == [(e.key, e.size, e.mtime, e.atime) for e in entries]
    assert [f[0] for batch in mover.stat_batches("logs/a") for f in batch] == sorted(
        k for k in keys if k.startswith("logs/a")
    )


def test_unsafe_names_next_to_safe_ones_are_skipped_and_reported(sandbox: Sandbox) -> None:
    now = time.time()
    for key in (
        "logs/ok.log",
        "logs/é.log",
        "logs/bad\x01.log",
        "logs/e\u0301.log",
        "logs/sub\x02/f",
        "logs/ü/f",
    ):
        sandbox.put("hot", key, b"1", age_days=1, now=now)
    os.symlink("/etc/passwd", sandbox.tier("hot") / "logs" / "link.log")
    os.mkfifo(sandbox.tier("hot") / "logs" / "fifo")
    mover = LocalMover(sandbox.tier("hot").as_uri())
    listed = [f[0] for batch in mover.stat_batches("logs/") for f in batch]
    assert listed == ["logs/ok.log", "logs/é.log", "logs/ü/f"]
    assert sorted(mover.skipped_keys()) == sorted(
        ["logs/bad\x01.log", "logs/e\u0301.log", "logs/sub\x02/f", "logs/link.log", "logs/fifo"]
    )


def test_printable_ascii_names_under_a_safe_folder_are_safe_keys() -> None:
    """The rule that lets the walk skip check_key per file (LocalMover._walk)."""
    rng = random.Random(1)
    printable = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "/"]
    names = set(printable) | {"...", " ", ".x", "x.", "a b", "~", "\\", "-", "#%&"}
    names |= {"".join(rng.choices(printable, k=rng.randint(1, 40))) for _ in range(2000)}
    for name in names - {".", ".."}:  # a folder never lists '.' or '..'
        for folder in ("logs", "a/b c/d"):
            assert check_key(f"{folder}/{name}") == f"{folder}/{name}"
    assert set(string.printable[:95]) - {"/"} <= set(printable)


def test_the_walk_reaps_dead_writers_temp_files_in_their_own_folder(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    sandbox.put("hot", "logs/sub/a.log", b"1", age_days=1, now=now)
    name = ".tierctl-tmp-999999999-abc"  # no such pid
    dead = sandbox.tier("hot") / "logs" / "sub" / name
    live = sandbox.tier("hot") / "logs" / "sub" / f".tierctl-tmp-{os.getpid()}-def"
    dead.write_bytes(b"partial")
    live.write_bytes(b"partial")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / name).write_bytes(b"not the tier's")
    monkeypatch.chdir(elsewhere)
    mover = LocalMover(sandbox.tier("hot").as_uri())
    assert [f[0] for batch in mover.stat_batches("logs/") for f in batch] == ["logs/sub/a.log"]
    assert not dead.exists() and live.exists() and (elsewhere / name).exists()
    assert mover.removed_temp_files == 1


def test_a_folder_that_became_a_symlink_is_skipped_and_reported(tmp_path: Path) -> None:
    """The walk opens subfolders without following symlinks: one swapped for a symlink
    between reading its parent and opening it is reported, not followed out of the tier."""
    write_file(tmp_path / "outside", "secret", b"s", T0)
    (tmp_path / "hot" / "logs").mkdir(parents=True)
    os.symlink(tmp_path / "outside", tmp_path / "hot" / "logs" / "sub")
    walk = FolderWalk(str(tmp_path / "hot"), ".tierctl-tmp-", lambda entry, fd: True)
    fd = os.open(tmp_path / "hot" / "logs", os.O_RDONLY)
    try:
        assert list(walk._walk(str(tmp_path / "hot/logs/sub"), fd, "logs/sub/", "", True)) == []
    finally:
        os.close(fd)
    assert walk.skipped == ["logs/sub"]


def test_a_folder_removed_while_the_walk_runs_is_left_out(tmp_path: Path) -> None:
    """A subfolder removed between reading its parent and opening it holds no files any
    more: the walk goes on (as for a file that vanishes before its stat), it does not fail
    the whole scan."""
    hot = tmp_path / "hot"
    for key in ("logs/a.log", "logs/gone/b.log", "logs/z/c.log"):
        write_file(hot, key, b"1", T0)
    (hot / "logs" / ".tierctl-tmp-1-x").write_bytes(b"")

    def is_temp(entry: os.DirEntry[str], fd: int) -> bool:
        shutil.rmtree(hot / "logs" / "gone")  # after the parent's listing, before the walk opens it
        return True

    walk = FolderWalk(str(hot), ".tierctl-tmp-", is_temp)
    assert [f[0] for batch in walk.batches("logs/") for f in batch] == ["logs/a.log", "logs/z/c.log"]
    assert walk.skipped == []


def test_listing_errors_name_the_folder(tmp_path: Path) -> None:
    write_file(tmp_path / "hot", "logs/sub/a", b"1", T0)
    os.chmod(tmp_path / "hot" / "logs" / "sub", 0)
    try:
        if os.access(tmp_path / "hot" / "logs" / "sub", os.R_OK):
            pytest.skip("running as a user that reads any folder")
        with pytest.raises(MoverError, match=r"listing .*/hot/logs/sub: permission denied"):
            list(LocalMover((tmp_path / "hot").as_uri()).stat_batches("logs/"))
    finally:
        os.chmod(tmp_path / "hot" / "logs" / "sub", 0o755)


def test_api_scan_of_a_local_tier_matches_the_disk(sandbox: Sandbox) -> None:
    now = time.time()
    for i in range(30):
        sandbox.put("hot", f"logs/{i % 3}/{i:02d}.log", b"x" * i, age_days=i, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    os.utime(sandbox.tier("hot") / "logs/1/04.log", (now, now - 5))
    (sandbox.tier("hot") / "logs/2/05.log").unlink()
    hot = next(r for r in api.scan(config, now=now + 1) if r.tier == "hot")
    assert (hot.changed, hot.gone, hot.unchanged) == (1, 1, 28)
    with Index.open(config.index_path) as index:
        _assert_matches_disk(index, sandbox.tier("hot"))
        quoted = index.conn.execute("SELECT quote(mtime) FROM placements WHERE key = 'logs/1/04.log'")
        assert float(quoted.fetchone()[0]) == now - 5


def test_tier_and_dataset_names_are_bound_not_spliced(tmp_path: Path) -> None:
    root = tmp_path / "t"
    write_file(root, "d/a", b"1", T0)
    with Index.open(str(tmp_path / "index.db")) as index:
        mover = LocalMover(root.as_uri())
        report = index.scan_tier_stats("it's", "o'hot", "d/", mover.stat_batches("d/"), T0)
        assert report.new == 1
        assert [(r[0], r[2]) for r in index.dump()] == [("it's", "o'hot")]
    with sqlite3.connect(tmp_path / "index.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
