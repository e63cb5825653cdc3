"""The ``hdfs://`` mover (pyarrow's FileSystem API) over a local folder: the conformance
suite and what is particular to a read-only source tier. No NameNode runs here, so the
connection itself (libhdfs) is the one part not exercised; see tests/movers/hdfs_local.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl.errors import ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers import registry
from tierctl.movers.base import Mover, Unsupported
from tierctl.movers.hdfs import HdfsMover

from .contract import MTIME, MoverContract
from .hdfs_local import LocalHdfsMover, folder_of, place, recording_filesystem

URL = "hdfs://namenode:8020/data/tier"
WRITES = "hdfs:// tiers are read-only: write() raises Unsupported"


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cluster"
    monkeypatch.setattr(LocalHdfsMover, "cluster_root", root)
    return root


class TestHdfsMover(MoverContract):
    unsupported = {  # noqa: RUF012
        "round_trip_empty": WRITES,
        "round_trip_small": WRITES,
        "round_trip_large": WRITES,
        "overwrite": WRITES,
        "stat_mtime": WRITES,
        "copy_from_local": WRITES,
        "copy_corrupted_destination": WRITES,
        "write_with_metadata": WRITES,
    }

    @pytest.fixture
    def mover(self, cluster: Path) -> Iterator[LocalHdfsMover]:
        mover = LocalHdfsMover(URL)
        yield mover
        mover.close()

    def arrange(self, mover: Mover, key: str, data: bytes, mtime: float = MTIME, **kwargs: object) -> Entry:
        assert LocalHdfsMover.cluster_root is not None
        place(LocalHdfsMover.cluster_root, mover.url, key, data, mtime, **kwargs)
        return mover.stat(key)


# -- what the declared-unsupported cases leave out: reads of arranged files --------------------
@pytest.fixture
def mover(cluster: Path) -> LocalHdfsMover:
    return LocalHdfsMover(URL)


def test_reads_stream_in_bounded_chunks_and_serve_ranges(cluster: Path, mover: HdfsMover) -> None:
    """What the round-trip cases would prove for reads: bytes, chunk bound, empty files,
    ranges (and a range past the end), with the content mtime in stat and listing."""
    data = os.urandom(5 * (1 << 20) + 11)
    place(cluster, URL, "big/blob.bin", data, MTIME)
    place(cluster, URL, "empty", b"", MTIME)
    chunks = list(mover.read_chunks("big/blob.bin", chunk_size=1 << 20))
    assert b"".join(chunks) == data and max(map(len, chunks)) <= 1 << 20
    assert b"".join(mover.read_chunks("empty")) == b""
    assert mover.read_range("big/blob.bin", 1000, 3000) == data[1000:3000]
    assert mover.read_range("big/blob.bin", len(data) - 5, len(data) + 100) == data[-5:]
    assert mover.read_range("big/blob.bin", len(data) + 1, len(data) + 9) == b""
    assert mover.read_range("empty", 0, 10) == b""
    assert [(e.key, e.size) for e in mover.list()] == [("big/blob.bin", len(data)), ("empty", 0)]
    assert abs(mover.stat("big/blob.bin").mtime - MTIME) < 1e-6


def test_a_folder_is_not_an_object(cluster: Path, mover: HdfsMover) -> None:
    place(cluster, URL, "dir/inner", b"x", MTIME)
    for call in (mover.stat, mover.delete, lambda k: b"".join(mover.read_chunks(k))):
        with pytest.raises(ObjectNotFound, match="not a regular file"):
            call("dir")
    with pytest.raises(ObjectNotFound, match="not a regular file"):
        mover.read_range("dir", 0, 1)
    assert [e.key for e in mover.list("dir/inner/")] == []  # a file has nothing under it
    assert [e.key for e in mover.list()] == ["dir/inner"]


def test_writes_are_refused_with_the_webhdfs_alternative(cluster: Path, mover: HdfsMover) -> None:
    assert mover.capabilities.writable is False
    with pytest.raises(Unsupported) as refused:
        mover.write("k", [b"x"], size=1, mtime=MTIME)
    assert "mtime" in refused.value.message
    assert refused.value.hint == "write to this cluster over WebHDFS: webhdfs://namenode:9870/data/tier"
    assert not folder_of(cluster, URL).joinpath("k").exists()
    # The registry says so before any mover is built (the policy loader asks it).
    assert "read-only" in registry.read_only_reason(URL)
    assert registry.read_only_reason("webhdfs://namenode:9870/data") == ""


def test_delete_leaves_folders_and_the_rest(cluster: Path, mover: HdfsMover) -> None:
    """pyarrow deletes folders only recursively: emptied folders stay rather than risk a file
    another client writes between a check and a recursive delete."""
    place(cluster, URL, "a/b/one", b"1", MTIME)
    place(cluster, URL, "a/two", b"2", MTIME)
    mover.delete("a/b/one")
    assert folder_of(cluster, URL).joinpath("a", "b").is_dir()
    assert [e.key for e in mover.list()] == ["a/two"]
    with pytest.raises(ObjectNotFound):
        mover.delete("a/b/one")


def test_listing_walks_folder_by_folder(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing streams: one non-recursive listing per folder, each asked for only when the walk
    reaches it, so what is held at once is a folder, not the tree."""
    listings: list[tuple[str, bool, int]] = []
    monkeypatch.setattr(LocalHdfsMover, "wrap", staticmethod(lambda fs: recording_filesystem(fs, listings)))
    keys = [f"p{i}/part-{j}" for i in range(4) for j in range(25)] + ["p0.txt", "tmp/.tierctl-tmp-1-x"]
    for key in keys:
        place(cluster, URL, key, b"x", MTIME)
    mover = LocalHdfsMover(URL)
    walk = mover.list()
    first = next(walk)
    assert first.key == "p0.txt"  # "p0.txt" sorts before the folder "p0/"
    assert [(folder, recursive) for folder, recursive, _ in listings] == [("/data/tier", False)]
    rest = [e.key for e in walk]
    assert [first.key, *rest] == sorted(k for k in keys if ".tierctl-tmp-" not in k)
    assert all(not recursive for _, recursive, _ in listings)
    assert len(listings) == 6  # the root, p0..p3, tmp: one listing each
    assert max(count for _, _, count in listings) == 25  # the largest folder, not the tree


def test_options_and_their_errors(cluster: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tierctl.errors import ConfigError

    monkeypatch.setenv("TEST_HDFS_SECRET", "s3cr3t")
    mover = LocalHdfsMover(
        "hdfs://nn.example:9000/data/tier/",
        user="etl",
        kerberos_ticket_cache="/tmp/krb5cc_1000",
        buffer_size="65536",
        max_connections=4,
        hadoop_conf={"dfs.client.use.datanode.hostname": "true", "some.password": "${TEST_HDFS_SECRET}"},
    )
    assert (mover.host, mover.port, mover.root, mover.url) == (
        "nn.example",
        9000,
        "/data/tier",
        "hdfs://nn.example:9000/data/tier",
    )
    assert mover.options.hadoop_conf["some.password"] == "s3cr3t"
    assert "s3cr3t" not in repr(mover) and "some.password" in repr(mover)
    assert (mover.options.buffer_size, mover.capabilities.max_connections) == (65536, 4)
    assert (LocalHdfsMover("hdfs:///data").host, LocalHdfsMover("hdfs://ha-cluster/d").port) == ("default", 0)
    for bad, match in (
        ({"replication": 3}, "unknown option"),
        ({"buffer_size": "-1"}, "positive whole number"),
        ({"hadoop_conf": "a=b"}, "must be a mapping"),
        ({"user": "${TEST_HDFS_UNSET}"}, "TEST_HDFS_UNSET"),
    ):
        with pytest.raises(ConfigError, match=match):
            LocalHdfsMover(URL, **bad)
    with pytest.raises(ConfigError, match="absolute and normalised"):
        LocalHdfsMover("hdfs://nn/a/../b")


def test_listing_skips_names_hdfs_or_tierctl_refuse(cluster: Path, mover: HdfsMover) -> None:
    """A name with ':' (HDFS refuses it), one that is not NFC, and what is neither file nor
    folder (here a FIFO: pyarrow's FileType.Unknown) are not objects: the listing passes over
    them and reports them in ``skipped_keys``."""
    import unicodedata

    place(cluster, URL, "ok", b"1", MTIME)
    folder = folder_of(cluster, URL)
    decomposed = unicodedata.normalize("NFD", "café")
    for name in ("a:b", decomposed):
        (folder / name).write_bytes(b"x")
    os.mkfifo(folder / "pipe")
    assert [e.key for e in mover.list()] == ["ok"]
    assert sorted(mover.skipped_keys()) == sorted(["a:b", decomposed, "pipe"])
    with pytest.raises(UnsafeKey, match="':'"):
        mover.stat("a:b")
