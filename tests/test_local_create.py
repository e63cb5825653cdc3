"""Create-only writes on local tiers (``LocalMover.write(if_absent=True)``): one atomic step
on the real file system, with each fallback the module takes where the first is missing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tierctl.errors import ObjectExists
from tierctl.movers import local_create
from tierctl.movers.local import TEMP_PREFIX, LocalMover

MTIME = 1_700_000_000.0


def _race(root: Path, writers: int = 8) -> tuple[list[bytes], list[bytes]]:
    """``writers`` threads create one key at once, each with its own bytes: who won, who lost."""
    mover = LocalMover(root.as_uri())
    start = threading.Barrier(writers)
    won: list[bytes] = []
    lost: list[bytes] = []

    def write(body: bytes) -> None:
        start.wait()
        try:
            mover.write("k/race", [body], size=len(body), mtime=MTIME, if_absent=True)
        except ObjectExists:
            lost.append(body)
        else:
            won.append(body)

    threads = [threading.Thread(target=write, args=(f"writer {i}".encode(),)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won, lost


@pytest.mark.parametrize("path", ["renameat2", "hard link"])
def test_writers_racing_for_one_key_leave_exactly_one_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A check before the rename would let several writers each see the name free and the
    last rename win silently; create-only lets exactly one in and tells the others."""
    if path == "hard link":
        monkeypatch.setattr(local_create, "_renameat2", lambda: None)
    elif local_create._renameat2() is None:
        pytest.skip("this C library has no renameat2")
    for round_ in range(5):
        root = tmp_path / f"{path.replace(' ', '-')}-{round_}"
        won, lost = _race(root)
        assert len(won) == 1 and len(lost) == 7, (won, lost)
        assert (root / "k" / "race").read_bytes() == won[0]
        assert [p.name for p in (root / "k").iterdir()] == ["race"]  # no temp file left behind


def test_a_lost_create_keeps_the_existing_file_and_drops_its_temp(tmp_path: Path) -> None:
    mover = LocalMover(tmp_path.as_uri())
    mover.write("a/b", [b"first"], size=5, mtime=MTIME)
    with pytest.raises(ObjectExists, match="already exists"):
        mover.write("a/b", [b"second!"], size=7, mtime=MTIME + 9, if_absent=True)
    assert (tmp_path / "a" / "b").read_bytes() == b"first"
    assert mover.stat("a/b").mtime == MTIME
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(TEMP_PREFIX)]


def test_writes_and_deletes_racing_in_one_folder_never_fail(tmp_path: Path) -> None:
    """A delete prunes its folder once empty while another write is (re)making that folder:
    the write makes it again instead of failing with "File exists" or "not found"."""
    mover = LocalMover(tmp_path.as_uri())
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for _ in range(400):
                mover.write(f"d/e/{name}", [b"x"], size=1, mtime=MTIME, if_absent=True)
                mover.delete(f"d/e/{name}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(f"k{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert not (tmp_path / "d").exists()
