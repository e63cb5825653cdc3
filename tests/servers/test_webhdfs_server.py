"""Tests for the WebHDFS test server: real HTTP over loopback, no mocks.

Driven with fsspec's WebHDFS client where it exercises the protocol, and with raw
``requests`` where exact wire behaviour (status codes, redirects, JSON shapes) matters.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fsspec
import pytest
import requests
from fsspec.implementations.webhdfs import WebHDFS

from .webhdfs import DATANODE_PREFIX, WebHDFSServer

ODD_NAMES = ["with space", "ünïcødé-日本", "100%", "a+b", "hash#tag", "mix %2F+# ü"]
FILE_STATUS_KEYS = {
    "accessTime",
    "blockSize",
    "childrenNum",
    "fileId",
    "group",
    "length",
    "modificationTime",
    "owner",
    "pathSuffix",
    "permission",
    "replication",
    "storagePolicy",
    "type",
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(tmp_path / "hdfs") as srv:
        yield srv


def make_fs(server: WebHDFSServer, user: str = "hdfs") -> WebHDFS:
    fs = fsspec.filesystem("webhdfs", host=server.host, port=server.port, user=user, skip_instance_cache=True)
    assert isinstance(fs, WebHDFS)
    return fs


@pytest.fixture
def fs(server: WebHDFSServer) -> WebHDFS:
    return make_fs(server)


def call(
    server: WebHDFSServer,
    method: str,
    path: str,
    op: str,
    *,
    follow: bool = False,
    data: Any = None,
    **params: Any,
) -> requests.Response:
    """One raw namenode request, with ``user.name=hdfs`` unless overridden."""
    query = {"op": op, "user.name": "hdfs", **params}
    return requests.request(
        method, server.http_url + quote(path), params=query, data=data, allow_redirects=follow, timeout=10
    )


def remote_exception(resp: requests.Response) -> dict[str, str]:
    body = resp.json()
    assert set(body) == {"RemoteException"}
    assert set(body["RemoteException"]) == {"exception", "javaClassName", "message"}
    return dict(body["RemoteException"])


# --------------------------------------------------------------------------- data round trips


@pytest.mark.parametrize("size", [0, 5, 20 * 1024 * 1024 + 123], ids=["empty", "small", "20MB"])
def test_put_get_round_trip(server: WebHDFSServer, fs: WebHDFS, tmp_path: Path, size: int) -> None:
    payload = os.urandom(size)
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(payload)

    fs.put(str(src), "/data/blob.bin")
    fs.get("/data/blob.bin", str(dst))

    assert dst.read_bytes() == payload
    assert server.local_path("/data/blob.bin").read_bytes() == payload
    assert fs.info("/data/blob.bin")["size"] == size
    # every data transfer went through the two-step redirect dance
    assert ("PUT", "CREATE", "/data/blob.bin") in server.datanode_requests
    assert ("GET", "OPEN", "/data/blob.bin") in server.datanode_requests or size == 0


def test_open_honours_offset_and_length(server: WebHDFSServer) -> None:
    server.local_path("/f").write_bytes(b"0123456789")
    first = call(server, "GET", "/f", "OPEN", offset=3, length=4)
    assert first.status_code == 307
    assert first.headers["Location"].startswith(f"http://127.0.0.1:{server.port}{DATANODE_PREFIX}/f?")
    data = requests.get(first.headers["Location"], timeout=10)
    assert (data.status_code, data.content) == (200, b"3456")
    assert data.headers["Content-Type"] == "application/octet-stream"
    assert call(server, "GET", "/f", "OPEN", follow=True, offset=8).content == b"89"
    too_far = call(server, "GET", "/f", "OPEN", offset=10)
    assert too_far.status_code == 403
    assert remote_exception(too_far)["exception"] == "IOException"


def test_create_two_step_protocol_and_noredirect(server: WebHDFSServer) -> None:
    step1 = call(server, "PUT", "/dir/new.txt", "CREATE", overwrite="false", permission="600")
    assert step1.status_code == 307 and step1.content == b""
    location = step1.headers["Location"]
    assert "namenoderpcaddress=" in location and "overwrite=false" in location
    step2 = requests.put(location, data=b"payload", timeout=10)
    assert step2.status_code == 201
    assert step2.headers["Location"] == f"webhdfs://127.0.0.1:{server.port}/dir/new.txt"
    status = call(server, "GET", "/dir/new.txt", "GETFILESTATUS").json()["FileStatus"]
    assert (status["length"], status["permission"], status["owner"]) == (7, "600", "hdfs")

    again = requests.put(
        call(server, "PUT", "/dir/new.txt", "CREATE").headers["Location"], data=b"x", timeout=10
    )
    assert again.status_code == 403
    assert remote_exception(again)["exception"] == "FileAlreadyExistsException"

    noredirect = call(server, "POST", "/dir/new.txt", "APPEND", noredirect="true")
    assert noredirect.status_code == 200
    appended = requests.post(noredirect.json()["Location"], data=b"+more", timeout=10)
    assert appended.status_code == 200
    assert server.local_path("/dir/new.txt").read_bytes() == b"payload+more"


def test_chunked_transfer_encoding_upload(server: WebHDFSServer) -> None:
    chunks = [os.urandom(70_000) for _ in range(5)]
    location = call(server, "PUT", "/chunked.bin", "CREATE").headers["Location"]
    resp = requests.put(location, data=iter(chunks), timeout=10)  # generator => chunked
    assert resp.status_code == 201
    assert server.local_path("/chunked.bin").read_bytes() == b"".join(chunks)


def test_redirect_false_acts_as_gateway(tmp_path: Path) -> None:
    with WebHDFSServer(tmp_path / "gw", redirect=False) as server:
        fs = make_fs(server)
        fs.pipe("/g/file.txt", b"gateway")
        assert fs.cat("/g/file.txt") == b"gateway"
        assert server.datanode_requests == []
        assert call(server, "GET", "/g/file.txt", "OPEN").status_code == 200


# --------------------------------------------------------------------------- namespace ops


def test_ls_and_find_over_nested_dirs_with_odd_names(server: WebHDFSServer, fs: WebHDFS) -> None:
    expected = set()
    for outer in ODD_NAMES:
        for inner in ODD_NAMES[:2]:
            path = f"/root/{outer}/{inner}.txt"
            fs.pipe(path, path.encode())
            expected.add(path)

    assert set(fs.find("/root")) == expected
    assert fs.ls("/root") == sorted(f"/root/{name}" for name in ODD_NAMES)
    for path in expected:
        assert fs.cat(path) == path.encode()
        assert server.local_path(path).read_bytes() == path.encode()
    assert sorted(os.listdir(server.root_dir / "root")) == sorted(ODD_NAMES)


def test_info_has_hadoop_file_status_shape(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/info/file.txt", b"abc")
    file_status = call(server, "GET", "/info/file.txt", "GETFILESTATUS").json()["FileStatus"]
    dir_status = call(server, "GET", "/info", "GETFILESTATUS").json()["FileStatus"]

    assert set(file_status) == set(dir_status) == FILE_STATUS_KEYS
    assert file_status["type"] == "FILE" and file_status["permission"] == "644"
    assert file_status["length"] == 3 and file_status["pathSuffix"] == ""
    assert file_status["blockSize"] == 134217728 and file_status["replication"] == 3
    assert dir_status["type"] == "DIRECTORY" and dir_status["permission"] == "755"
    assert (dir_status["childrenNum"], dir_status["length"], dir_status["accessTime"]) == (1, 0, 0)
    info = fs.info("/info/file.txt")
    assert (info["type"], info["size"], info["owner"]) == ("file", 3, "hdfs")


def test_rm_recursive_and_non_empty_directory(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/tree/a/b/c.txt", b"c")
    fs.pipe("/tree/d.txt", b"d")

    refused = call(server, "DELETE", "/tree", "DELETE", recursive="false")
    assert refused.status_code == 403
    assert remote_exception(refused)["exception"] == "PathIsNotEmptyDirectoryException"
    with pytest.raises(RuntimeError, match="non empty"):
        fs.rm("/tree")

    fs.rm("/tree", recursive=True)
    assert not fs.exists("/tree") and not (server.root_dir / "tree").exists()
    assert call(server, "DELETE", "/tree", "DELETE").json() == {"boolean": False}


def test_mv_file_and_directory(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/src/one.txt", b"1")
    fs.mkdir("/dst")

    fs.mv("/src/one.txt", "/src/two.txt")
    assert fs.ls("/src") == ["/src/two.txt"]
    fs.mv("/src", "/dst")  # into an existing directory, like HDFS rename
    assert fs.cat("/dst/src/two.txt") == b"1"
    assert (server.root_dir / "dst" / "src" / "two.txt").read_bytes() == b"1"

    missing = call(server, "PUT", "/nope", "RENAME", destination="/elsewhere")
    assert missing.json() == {"boolean": False}
    relative = call(server, "PUT", "/dst", "RENAME", destination="relative")
    assert relative.status_code == 400


def test_mkdir_and_contents_summary(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.mkdir("/m/n/o")
    assert fs.isdir("/m/n/o") and (server.root_dir / "m" / "n" / "o").is_dir()
    resp = call(server, "PUT", "/m/n/o", "MKDIRS", permission="700")
    assert resp.json() == {"boolean": True}
    fs.pipe("/m/f.bin", b"12345")
    summary = fs.content_summary("/m")
    assert (summary["directoryCount"], summary["fileCount"], summary["length"]) == (3, 1, 5)
    assert (summary["quota"], summary["spaceQuota"], summary["spaceConsumed"]) == (-1, -1, 15)
    clash = call(server, "PUT", "/m/f.bin", "MKDIRS")
    assert clash.status_code == 403
    assert remote_exception(clash)["exception"] == "FileAlreadyExistsException"
    assert fs.home_directory() == "/user/hdfs"


def test_missing_file_is_file_not_found(server: WebHDFSServer, fs: WebHDFS) -> None:
    for action in (fs.info, fs.cat, fs.ls, fs.ukey):
        with pytest.raises(FileNotFoundError):
            action("/does/not/exist")
    resp = call(server, "GET", "/x", "GETFILESTATUS")
    assert resp.status_code == 404
    assert remote_exception(resp) == {
        "exception": "FileNotFoundException",
        "javaClassName": "java.io.FileNotFoundException",
        "message": "File does not exist: /x",
    }


def test_bad_requests_are_illegal_argument(server: WebHDFSServer) -> None:
    bad_op = call(server, "GET", "/", "NOPE")
    assert bad_op.status_code == 400
    assert remote_exception(bad_op)["javaClassName"] == "java.lang.IllegalArgumentException"
    assert call(server, "GET", "/", "CREATE").status_code == 400  # wrong method for op
    assert call(server, "PUT", "/p", "MKDIRS", permission="999").status_code == 400
    assert call(server, "DELETE", "/", "DELETE", recursive="maybe").status_code == 400
    invalid = call(server, "PUT", "/a:b", "MKDIRS")
    assert (invalid.status_code, remote_exception(invalid)["exception"]) == (400, "InvalidPathException")
    assert call(server, "POST", "/", "CONCAT").status_code == 400


def test_permissions_are_enforced_for_other_users(server: WebHDFSServer, fs: WebHDFS) -> None:
    alice = make_fs(server, user="alice")
    with pytest.raises(PermissionError, match="user=alice, access=WRITE"):
        alice.mkdir("/alice-dir")
    fs.chmod("/", "777")
    alice.mkdir("/alice-dir")
    status = call(server, "GET", "/alice-dir", "GETFILESTATUS").json()["FileStatus"]
    assert (status["owner"], status["group"]) == ("alice", "supergroup")
    fs.pipe("/alice-dir/private.txt", b"secret")
    fs.chmod("/alice-dir/private.txt", "600")
    # checked at the datanode step (fsspec's reader ignores datanode errors, so go raw)
    denied = call(server, "GET", "/alice-dir/private.txt", "OPEN", follow=True, **{"user.name": "alice"})
    assert denied.status_code == 403
    assert remote_exception(denied)["exception"] == "AccessControlException"


# --------------------------------------------------------------------------- metadata ops


def test_checksum_has_hadoop_shape_and_tracks_content(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/c/a.bin", b"same bytes")
    fs.pipe("/c/b.bin", b"same bytes")
    fs.pipe("/c/other.bin", b"other bytes")
    fs.pipe("/c/empty.bin", b"")

    checksum = fs.ukey("/c/a.bin")
    assert set(checksum) == {"algorithm", "bytes", "length"}
    assert checksum["algorithm"] == "MD5-of-0MD5-of-512CRC32C"
    assert checksum["length"] == 28 and len(checksum["bytes"]) == 56
    assert checksum["bytes"].startswith("00000200" + "0" * 16)
    assert fs.ukey("/c/b.bin") == checksum
    assert fs.ukey("/c/other.bin") != checksum
    assert fs.ukey("/c/empty.bin") == {
        "algorithm": "MD5-of-0MD5-of-0CRC32",
        "length": 28,
        "bytes": "0" * 24 + hashlib.md5(bytes(32)).hexdigest(),
    }

    server.local_path("/c/b.bin").write_bytes(b"same bytez")  # corrupt behind HDFS's back
    assert fs.ukey("/c/b.bin") != checksum
    redirect = call(server, "GET", "/c/a.bin", "GETFILECHECKSUM")
    assert redirect.status_code == 307


def test_checksum_of_multi_block_file(server: WebHDFSServer) -> None:
    block = 1024 * 1024
    location = call(server, "PUT", "/big", "CREATE", blocksize=block).headers["Location"]
    requests.put(location, data=bytes(2 * block + 1), timeout=10).raise_for_status()
    checksum = call(server, "GET", "/big", "GETFILECHECKSUM", follow=True).json()
    assert checksum["FileChecksum"]["algorithm"] == f"MD5-of-{block // 512}MD5-of-512CRC32C"
    small_block = call(server, "PUT", "/tiny", "CREATE", blocksize=4096)
    assert small_block.status_code == 403  # below dfs.namenode.fs-limits.min-block-size


def test_liststatus_batch_pages_with_start_after(tmp_path: Path) -> None:
    names = [f"file-{i:02d}" for i in range(10)]
    with WebHDFSServer(tmp_path / "batch", batch_size=3) as server:
        for name in reversed(names):
            server.local_path(f"/{name}").write_bytes(name.encode())
        seen: list[str] = []
        remaining_counts: list[int] = []
        start_after: str | None = None
        while True:
            params: dict[str, Any] = {"startAfter": start_after} if start_after else {}
            body = call(server, "GET", "/", "LISTSTATUS_BATCH", **params).json()
            listing = body["DirectoryListing"]
            page = listing["partialListing"]["FileStatuses"]["FileStatus"]
            seen += [status["pathSuffix"] for status in page]
            remaining_counts.append(listing["remainingEntries"])
            if listing["remainingEntries"] == 0:
                break
            start_after = page[-1]["pathSuffix"]
        full = call(server, "GET", "/", "LISTSTATUS").json()["FileStatuses"]["FileStatus"]

    assert seen == names
    assert remaining_counts == [7, 4, 1, 0]
    assert [status["pathSuffix"] for status in full] == names


def test_settimes_then_getfilestatus(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/t.txt", b"t")
    mtime, atime = 1_600_000_000_123, 1_600_000_500_456
    resp = call(server, "PUT", "/t.txt", "SETTIMES", modificationtime=mtime, accesstime=atime)
    assert (resp.status_code, resp.content) == (200, b"")
    status = call(server, "GET", "/t.txt", "GETFILESTATUS").json()["FileStatus"]
    assert (status["modificationTime"], status["accessTime"]) == (mtime, atime)
    assert fs.modified("/t.txt").timestamp() == pytest.approx(mtime / 1000)
    call(server, "PUT", "/t.txt", "SETTIMES", modificationtime=-1, accesstime=42)
    status = call(server, "GET", "/t.txt", "GETFILESTATUS").json()["FileStatus"]
    assert (status["modificationTime"], status["accessTime"]) == (mtime, 42)


def test_setpermission_and_setowner(server: WebHDFSServer, fs: WebHDFS) -> None:
    fs.pipe("/o.txt", b"o")
    fs.chmod("/o.txt", "640")
    fs.chown("/o.txt", owner="bob", group="staff")
    status = call(server, "GET", "/o.txt", "GETFILESTATUS").json()["FileStatus"]
    assert (status["permission"], status["owner"], status["group"]) == ("640", "bob", "staff")
    assert call(server, "PUT", "/o.txt", "SETOWNER").status_code == 400


# --------------------------------------------------------------------------- fault hooks


def test_injected_create_failures_surface_on_client(server: WebHDFSServer, fs: WebHDFS) -> None:
    server.fail_next_creates(2, status=500)
    for _ in range(2):
        with pytest.raises(requests.HTTPError, match="500"):
            fs.pipe("/flaky.txt", b"data")
    assert server.pending_faults("CREATE") == 0
    assert not server.local_path("/flaky.txt").exists()

    fs.pipe("/flaky.txt", b"data")
    assert fs.cat("/flaky.txt") == b"data"
    creates = [r for r in server.requests if r == ("PUT", "CREATE", "/flaky.txt")]
    assert len(creates) == 3
    assert len([r for r in server.datanode_requests if r[1] == "CREATE"]) == 3


def test_injected_partial_upload_and_truncated_read(server: WebHDFSServer) -> None:
    server.fail_next_creates(1, status=503, after_bytes=4)
    location = call(server, "PUT", "/partial.bin", "CREATE").headers["Location"]
    failed = requests.put(location, data=b"0123456789", timeout=10)
    assert failed.status_code == 503
    assert server.local_path("/partial.bin").read_bytes() == b"0123"

    server.fail_next("OPEN", after_bytes=2)
    with pytest.raises(requests.RequestException):
        call(server, "GET", "/partial.bin", "OPEN", follow=True)
    assert call(server, "GET", "/partial.bin", "OPEN", follow=True).content == b"0123"

    server.fail_next("GETFILESTATUS", status=403)
    assert call(server, "GET", "/partial.bin", "GETFILESTATUS").status_code == 403
