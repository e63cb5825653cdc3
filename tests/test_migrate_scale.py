"""Scale cases of `tierctl migrate`: listing memory, 100 MB files, and 20,000 files.

The 20,000-file copy is bound by moto (~5-10 ms of CPU per request, three S3 requests a
file) and by running client and WebHDFS server on the same 2 cores: measured at about
65 files/s here, i.e. ~5 minutes, too long for every run of the suite. It runs when
TIERCTL_SCALE_TESTS=1; listing and planning 20,000 files (the part that must not grow
in memory) run always.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl.api_migrate import migrate

from .servers.moto_process import MotoS3Process
from .servers.webhdfs import WebHDFSServer
from .test_migrate import BUCKET, make_tree, options, s3_objects

MIB = 1 << 20


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Process]:
    with MotoS3Process() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def hdfs(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(tmp_path / "hdfs") as server:  # dfs.ls.limit 1000, as in Hadoop
        yield server


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .servers.moto_server import ACCESS_KEY, SECRET_KEY

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)


LISTER = textwrap.dedent(
    """
    import resource, sys
    from tierctl.movers.webhdfs import WebHDFSMover

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    for url in sys.argv[1:]:
        mover = WebHDFSMover(url, user="hdfs")
        count = sum(1 for _ in mover.list())
        print(count, peak(), flush=True)
    """
)


def test_listing_memory_does_not_grow_with_the_tree(hdfs: WebHDFSServer) -> None:
    make_tree(hdfs, "/small", 2_000, size=10)
    make_tree(hdfs, "/large", 20_000, size=10)
    # A separate process, so the server's own memory is not counted.
    out = subprocess.run(
        [sys.executable, "-c", LISTER, f"{hdfs.url}/small", f"{hdfs.url}/large"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split("\n")
    (small_count, small_peak), (large_count, large_peak) = (map(int, line.split()) for line in out[:2])
    assert (small_count, large_count) == (2_000, 20_000)
    # Collecting 18,000 more entries would take well over 10 MiB; a streamed walk holds
    # one page per open folder.
    assert large_peak - small_peak < 4 * 1024, (small_peak, large_peak)


def test_20k_files_list_and_plan_without_copying(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path
) -> None:
    make_tree(hdfs, "/warehouse/events", 20_000, size=10)
    started = time.monotonic()
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "plan20k", dry_run=True))
    assert report.planned_copies.files == 20_000
    assert time.monotonic() - started < 60


def _big_file(path: Path, size: int, seed: bytes) -> str:
    digest = hashlib.sha256()
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for i in range(size // MIB):
            chunk = i.to_bytes(8, "big") + block[8:]
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.slow
def test_100mb_files_are_copied_in_parts_and_verified(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path
) -> None:
    root = hdfs.local_path("/warehouse/events")
    digests = {
        f"big/{n}.bin": _big_file(root / "big" / f"{n}.bin", 100 * MIB, n.encode()) for n in ("a", "b", "c")
    }
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "big", jobs=3))
    assert report.ok and report.copied.files == 3 and report.copied.bytes == 300 * MIB
    stored = s3_objects(moto, "big")
    assert all("-" in stored[k]["ETag"] for k in digests)  # multipart: verified from the ETag
    for key, expected in digests.items():
        body = moto.client().get_object(Bucket=BUCKET, Key=f"big/{key}")["Body"]
        got = hashlib.sha256()
        for chunk in iter(lambda body=body: body.read(MIB), b""):
            got.update(chunk)
        assert got.hexdigest() == expected


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("TIERCTL_SCALE_TESTS") != "1", reason="~5 min on moto; set TIERCTL_SCALE_TESTS=1"
)
def test_20k_files_to_s3_then_incremental(hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path) -> None:
    make_tree(hdfs, "/warehouse/events", 20_000, size=100)
    opts = options(hdfs, moto.endpoint_url, tmp_path, "scale", jobs=16)
    first = migrate(opts)
    assert first.ok and first.copied.files == 20_000
    print(f"20k files: {first.seconds:.1f}s, {first.copied.files / first.seconds:.0f} files/s")
    again = migrate(opts)
    assert again.copied.files == 0 and again.up_to_date.files == 20_000
    print(f"20k files, nothing changed: {again.seconds:.1f}s")
