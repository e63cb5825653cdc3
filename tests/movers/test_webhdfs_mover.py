"""WebHDFS-specific behaviour the shared contract does not cover: listing order across
pages, every HTTP status checked (the fsspec reader bug), faults at the datanode, the
temp-name write, options, and the hdfs:// message."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl.errors import ConfigError, MissingDependency, MoverError, ObjectNotFound
from tierctl.movers.registry import TierTarget, open_mover
from tierctl.movers.webhdfs import TEMP_PREFIX, WebHDFSMover

from ..servers.webhdfs import WebHDFSServer

MTIME = 1_700_000_000.5


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(tmp_path / "hdfs", batch_size=2) as srv:
        yield srv


@pytest.fixture
def mover(server: WebHDFSServer) -> Iterator[WebHDFSMover]:
    m = WebHDFSMover(f"{server.url}/warehouse", user="hdfs")
    yield m
    m.close()


def put(mover: WebHDFSMover, key: str, data: bytes = b"x") -> None:
    mover.write(key, [data], size=len(data), mtime=MTIME)


def test_listing_is_in_code_point_order_across_pages(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    # HDFS lists "a" before "a b", "a-b", "a.txt"; tierctl's order puts folder "a" after them.
    keys = ["a/1", "a/b/2", "a b", "a-b/3", "a.txt", "a0", "b/c/d/e", "b/c.x", "b/c0", "é/1", "z"]
    for key in keys:
        put(mover, key)
    server.clear_requests()
    assert [e.key for e in mover.list()] == sorted(keys)
    ops = {op for _, op, _ in server.requests}
    assert ops == {"LISTSTATUS_BATCH"}  # paged (batch_size=2), no per-file requests
    assert [e.key for e in mover.list("a")] == sorted(k for k in keys if k.startswith("a"))
    assert [e.key for e in mover.list("b/c")] == ["b/c.x", "b/c/d/e", "b/c0"]


def test_listing_a_missing_or_file_prefix_is_empty(mover: WebHDFSMover) -> None:
    assert list(mover.list()) == []  # the tier root does not exist yet
    put(mover, "f")
    assert list(mover.list("f/")) == []


def test_failed_datanode_read_is_an_error_not_content(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    put(mover, "k", b"real content")
    server.fail_next("OPEN", status=500)
    with pytest.raises(MoverError) as caught:
        b"".join(mover.read_chunks("k"))
    assert caught.value.retryable
    server.fail_next("OPEN", status=403)
    with pytest.raises(MoverError):
        b"".join(mover.read_chunks("k"))


def test_read_cut_short_by_the_datanode_is_an_error(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    data = bytes(range(256)) * 4096
    put(mover, "big", data)
    server.fail_next("OPEN", after_bytes=1000)
    with pytest.raises(MoverError):
        b"".join(mover.read_chunks("big"))


def test_failed_upload_leaves_nothing_behind(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    put(mover, "d/old", b"old")
    server.fail_next_creates(1, after_bytes=10)
    with pytest.raises(MoverError):
        put(mover, "d/new", b"0123456789abcdefghij")
    with pytest.raises(ObjectNotFound):
        mover.stat("d/new")
    on_disk = sorted(p.name for p in server.local_path("/warehouse/d").iterdir())
    assert on_disk == ["old"]  # the truncated temp file was removed


def test_write_uses_a_temp_name_then_renames(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    server.clear_requests()
    put(mover, "x/y", b"data")
    calls = [(op, path) for _, op, path in server.requests]
    assert [op for op, _ in calls] == ["CREATE", "SETTIMES", "RENAME", "GETFILESTATUS"]
    assert calls[0][1].startswith("/warehouse/x/" + TEMP_PREFIX)
    assert abs(mover.stat("x/y").mtime - MTIME) < 0.001


def test_source_shorter_than_planned_aborts_the_upload(mover: WebHDFSMover) -> None:
    from tierctl.errors import ObjectChanged

    with pytest.raises(ObjectChanged):
        mover.write("short", [b"abc"], size=10, mtime=MTIME)
    with pytest.raises(ObjectNotFound):
        mover.stat("short")


def test_temp_files_are_never_listed(mover: WebHDFSMover, server: WebHDFSServer) -> None:
    put(mover, "keep")
    server.local_path("/warehouse").joinpath(f"{TEMP_PREFIX}1-abc").write_bytes(b"partial")
    assert [e.key for e in mover.list()] == ["keep"]


def test_permission_denied_names_the_problem(server: WebHDFSServer) -> None:
    owner = WebHDFSMover(f"{server.url}/private", user="hdfs")
    owner.write("secret", [b"s"], size=1, mtime=MTIME)
    owner._call("PUT", "/private", "SETPERMISSION", "chmod", permission="700")
    stranger = WebHDFSMover(f"{server.url}/private", user="mallory")
    with pytest.raises(MoverError, match="permission denied"):
        stranger.stat("secret")


def test_unreachable_server_is_retryable() -> None:
    mover = WebHDFSMover("webhdfs://127.0.0.1:9/x", timeout=2)
    with pytest.raises(MoverError) as caught:
        mover.stat("k")
    assert caught.value.retryable


def test_options_are_checked_and_the_token_hidden() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        WebHDFSMover("webhdfs://nn:9870/x", usr="hdfs")
    with pytest.raises(ConfigError, match="token"):
        WebHDFSMover("webhdfs://nn:9870/x", user="a", token="t")
    mover = WebHDFSMover("swebhdfs://nn/x", token="sekrit-token", verify="false")
    assert "sekrit" not in repr(mover)
    assert mover._base == "https://nn:9871/webhdfs/v1"


def test_kerberos_without_its_package_says_what_to_install() -> None:
    try:
        import requests_kerberos  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependency, match="requests-kerberos"):
            WebHDFSMover("webhdfs://nn:9870/x", kerberos=True)
    else:  # pragma: no cover - depends on the environment
        WebHDFSMover("webhdfs://nn:9870/x", kerberos=True)


def test_schemes_are_registered_and_hdfs_says_use_webhdfs() -> None:
    mover = open_mover(TierTarget("h", "webhdfs://nn:9870/data"))
    assert isinstance(mover, WebHDFSMover)
    with pytest.raises(MissingDependency) as caught:
        open_mover(TierTarget("h", "hdfs://nn:8020/data"))
    assert "webhdfs://nn:9870/data" in caught.value.hint
