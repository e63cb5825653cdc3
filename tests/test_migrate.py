"""`tierctl migrate`: HDFS (the WebHDFS protocol server) to S3 (moto), real servers only.

moto runs in a child process (another core); the WebHDFS server runs in this process, so
its request log shows every read the migration made. Source trees are written straight
to the server's backing folder, as files a cluster already holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tierctl.api_migrate import MigrateOptions, migrate
from tierctl.index import Index
from tierctl.movers.s3_conditional import PROBE_PREFIX

from .conftest import CliResult
from .servers.faultproxy import Fault, FaultProxy, key_matches, op
from .servers.moto_process import ACCESS_KEY, REGION, SECRET_KEY, MotoS3Process
from .servers.webhdfs import WebHDFSServer

BUCKET = "lake"
MTIME = 1_700_000_000.0


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Process]:
    with MotoS3Process() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def hdfs(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(tmp_path / "hdfs", batch_size=100) as server:
        yield server


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Credentials reach the tier as ${...} references, so the saved policy file holds none.
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)


def make_tree(server: WebHDFSServer, base: str, count: int, *, size: int = 200) -> dict[str, bytes]:
    """``count`` files in folders of 100 under HDFS path ``base``; returns key -> bytes."""
    files = {}
    root = server.local_path(base)
    for i in range(count):
        key = f"d{i // 100:03d}/part-{i:05d}.parquet"
        data = (f"{key}:".encode() * (size // 20 + 1))[: size + i % 7]
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME + i, MTIME + i))
        files[key] = data
    return files


def s3_objects(server: MotoS3Process, prefix: str) -> dict[str, dict]:
    client = server.client()
    found: dict[str, dict] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) + 1 :]] = item
    return found


def s3_read(server: MotoS3Process, prefix: str, key: str) -> tuple[bytes, dict[str, str]]:
    got = server.client().get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")
    return got["Body"].read(), got["Metadata"]


def dst_options(endpoint: str) -> dict[str, str]:
    return {
        "endpoint_url": endpoint,
        "region": REGION,
        "key": "${TEST_S3_KEY}",
        "secret": "${TEST_S3_SECRET}",
    }


def options(
    hdfs: WebHDFSServer, endpoint: str, tmp_path: Path, prefix: str, **extra: object
) -> MigrateOptions:
    return MigrateOptions(
        source=f"{hdfs.url}/warehouse/events",
        destination=f"s3://{BUCKET}/{prefix}",
        source_options={"user": "hdfs"},
        destination_options=dst_options(endpoint),
        state_dir=str(tmp_path / "state"),
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _no_policy_file_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)


def datanode_reads(server: WebHDFSServer) -> list[str]:
    return [path for method, op_, path in server.datanode_requests if op_ == "OPEN"]


# -- the whole loop, through the CLI ----------------------------------------------------------------
def test_migrate_copies_verifies_records_and_reports(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None, cli: Callable[..., CliResult]
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 250)
    args = [
        "migrate",
        f"{hdfs.url}/warehouse/events",
        f"s3://{BUCKET}/loop",
        "--src-option",
        "user=hdfs",
        *(a for k, v in dst_options(moto.endpoint_url).items() for a in ("--dst-option", f"{k}={v}")),
        "--json",
    ]
    state = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    os.environ.update(state)
    try:
        first = cli(*args)
        assert first.code == 0, first.err
        report = json.loads(first.out)
        total = sum(len(d) for d in files.values())
        assert report["copied"] == {"files": 250, "bytes": total}
        assert report["listed"] == {"files": 250, "bytes": total}
        assert report["ok"] and report["seconds"] > 0 and report["bytes_per_second"] > 0
        stored = s3_objects(moto, "loop")
        assert sorted(stored) == sorted(files)
        data, metadata = s3_read(moto, "loop", "d001/part-00123.parquet")
        assert data == files["d001/part-00123.parquet"]
        assert float(metadata["mtime"]) == MTIME + 123  # the content's age travels with it
        # The policy file it wrote holds references, not secrets, and `where` answers from it.
        policy = Path(report["policy_file"])
        assert policy.stat().st_mode & 0o077 == 0
        assert SECRET_KEY not in policy.read_text()
        where = cli("-c", str(policy), "where", "d001/part-00123.parquet", "--json")
        assert where.code == 0, where.err
        assert {p["tier"] for p in json.loads(where.out)["objects"][0]["placements"]} == {
            "source",
            "destination",
        }
        # Re-running copies nothing: the index and two listings decide, no per-file request.
        hdfs.clear_requests()
        again = json.loads(cli(*args).out)
        assert again["copied"] == {} or again["copied"]["files"] == 0
        assert again["up_to_date"]["files"] == 250
        assert datanode_reads(hdfs) == []
        assert {o for _, o, _ in hdfs.requests} == {"LISTSTATUS_BATCH"}
    finally:
        for name in state:
            os.environ.pop(name, None)


def test_rerun_copies_only_what_changed(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 120)
    opts = options(hdfs, moto.endpoint_url, tmp_path, "incr")
    assert migrate(opts).copied.files == 120
    root = hdfs.local_path("/warehouse/events")
    (root / "d000/part-00007.parquet").write_bytes(b"rewritten")
    (root / "d001/new.parquet").write_bytes(b"new file")
    hdfs.clear_requests()
    report = migrate(opts)
    assert (report.copied.files, report.up_to_date.files) == (2, 119)
    assert sorted(datanode_reads(hdfs)) == [
        "/warehouse/events/d000/part-00007.parquet",
        "/warehouse/events/d001/new.parquet",
    ]
    assert s3_read(moto, "incr", "d000/part-00007.parquet")[0] == b"rewritten"
    assert len(files) + 1 == len(s3_objects(moto, "incr"))


def test_dry_run_copies_nothing(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    make_tree(hdfs, "/warehouse/events", 30)
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "dry", dry_run=True))
    assert report.planned_copies.files == 30 and report.copied.files == 0
    assert report.plan is not None and len(report.plan.actions) == 30
    assert s3_objects(moto, "dry") == {}
    assert datanode_reads(hdfs) == []


def test_include_exclude(hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None) -> None:
    make_tree(hdfs, "/warehouse/events", 300)
    opts = options(
        hdfs, moto.endpoint_url, tmp_path, "globs", include=("d00[12]/**",), exclude=("**/*9.parquet",)
    )
    report = migrate(opts)
    assert report.copied.files == 180
    assert all(
        k.startswith(("d001/", "d002/")) and not k.endswith("9.parquet") for k in s3_objects(moto, "globs")
    )


# -- interruptions and changes ----------------------------------------------------------------------
def test_kill_9_mid_run_then_resume_copies_nothing_twice(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 200, size=20_000)
    index_path = tmp_path / "m.db"
    argv = [
        sys.executable, "-m", "tierctl", "--index", str(index_path), "migrate",
        f"{hdfs.url}/warehouse/events", f"s3://{BUCKET}/kill", "--src-option", "user=hdfs",
        *(a for k, v in dst_options(moto.endpoint_url).items() for a in ("--dst-option", f"{k}={v}")),
        "--jobs", "4", "--bandwidth", "1MB", "--json",
    ]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    deadline = time.monotonic() + 60
    # Killed once the 1 MB/s cap paces the run (the bucket's first 1 MiB, ~50 files, passes
    # at full speed): then the copies in flight plus those finished since the last record
    # (<= 50 ms, a file or three at this rate) are what the resumed run finds unrecorded.
    while len(datanode_reads(hdfs)) < 100 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.returncode == -signal.SIGKILL
    with Index.open(str(index_path)) as index:
        verified = {row[1] for row in index.dump() if row[2] == "destination" and row[10] is not None}
    assert 0 < len(verified) < 200  # killed mid-run, with some copies recorded
    hdfs.clear_requests()
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "kill", index=str(index_path), jobs=4))
    assert report.ok, report.problems
    reread = {p.removeprefix("/warehouse/events/") for p in datanode_reads(hdfs)}
    assert not reread & verified  # nothing verified before the kill is read (or copied) again
    assert report.copied.files + report.verified.files == 200 - len(verified)
    assert report.verified.files <= 8  # at most the copies in flight at the kill: proven, not redone
    stored = s3_objects(moto, "kill")
    assert sorted(stored) == sorted(files)
    for key in list(files)[::37]:
        assert s3_read(moto, "kill", key)[0] == files[key]


def test_source_changed_mid_migration_is_skipped_then_copied_next_run(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 40, size=50_000)
    last = sorted(files)[-1]
    local = hdfs.local_path(f"/warehouse/events/{last}")

    def change_once_reading_started() -> None:
        deadline = time.monotonic() + 30
        while not datanode_reads(hdfs) and time.monotonic() < deadline:
            time.sleep(0.01)
        local.write_bytes(b"a new version, another size")
        os.utime(local, (MTIME + 10_000, MTIME + 10_000))

    changer = threading.Thread(target=change_once_reading_started)
    changer.start()
    opts = options(hdfs, moto.endpoint_url, tmp_path, "changed", jobs=1, bandwidth=1_000_000.0)
    report = migrate(opts)
    changer.join()
    assert [(k, s) for k, s, _ in report.problems] == [(last, "copy skipped")]
    assert "changed since it was planned" in report.problems[0][2]
    assert report.copied.files == 39 and not report.ok
    assert last not in s3_objects(moto, "changed")  # never a mix of versions
    again = migrate(opts)
    assert (again.copied.files, again.ok) == (1, True)
    data, metadata = s3_read(moto, "changed", last)
    assert data == b"a new version, another size" and float(metadata["mtime"]) == MTIME + 10_000


def test_destination_failures_are_reported_and_retried_next_run(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 60)
    with FaultProxy(moto.endpoint_url) as proxy:
        # Uploads of three keys are refused (403, not retryable) every time they are tried.
        proxy.add(Fault("status", match=lambda r: op("PutObject")(r) and key_matches(r"part-0001[0-2]")(r),
                        times=100, status=403))  # fmt: skip
        opts = options(hdfs, proxy.endpoint_url, tmp_path, "faulty")
        opts = MigrateOptions(**{**opts.__dict__, "destination_options": dst_options(proxy.endpoint_url)})
        report = migrate(opts)
        assert sorted(k for k, _, _ in report.problems) == [f"d000/part-0001{i}.parquet" for i in range(3)]
        assert (report.failed.files, report.copied.files) == (3, 57)
        proxy.clear()
        puts_before = len(proxy.log)
        again = migrate(opts)
        assert (again.copied.files, again.ok) == (3, True)
        uploads = [e for e in proxy.log[puts_before:] if e.request.operation == "PutObject"]
        assert sum(1 for e in uploads if PROBE_PREFIX not in e.request.path) == 3  # not the S3 mover's probe
    assert sorted(s3_objects(moto, "faulty")) == sorted(files)


def test_source_read_faults_are_retried(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    make_tree(hdfs, "/warehouse/events", 20)
    hdfs.fail_next("OPEN", 2, status=500)
    hdfs.fail_next("OPEN", 1, after_bytes=10)  # a datanode dying mid-stream
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "flaky"))
    assert report.ok and report.copied.files == 20
    assert hdfs.pending_faults("OPEN") == 0


def test_delete_source_only_after_verification(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 150)
    report = migrate(options(hdfs, moto.endpoint_url, tmp_path, "moved", delete_source=True))
    assert report.ok and report.copied.files == 150 and report.deleted_from_source.files == 150
    assert sorted(s3_objects(moto, "moved")) == sorted(files)
    assert list(hdfs.local_path("/warehouse/events").rglob("*")) == []  # emptied folders pruned


def test_destination_newer_is_a_conflict_left_alone(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None
) -> None:
    files = make_tree(hdfs, "/warehouse/events", 10)
    opts = options(hdfs, moto.endpoint_url, tmp_path, "conflict")
    migrate(opts)
    key = sorted(files)[0]
    moto.client().put_object(
        Bucket=BUCKET,
        Key=f"conflict/{key}",
        Body=b"edited at the destination",
        Metadata={"mtime": str(MTIME + 1e6)},
    )
    report = migrate(opts)
    assert report.conflicts == [key] and not report.ok
    assert s3_read(moto, "conflict", key)[0] == b"edited at the destination"
    assert hdfs.local_path(f"/warehouse/events/{key}").read_bytes() == files[key]


def test_migration_inside_a_policy_file_uses_its_index_and_tiers(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path, s3_env: None, cli: Callable[..., CliResult]
) -> None:
    make_tree(hdfs, "/warehouse", 20)  # keys d000/..., under the dataset prefix "d000/"
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  hdfs: {{url: "{hdfs.url}/warehouse", options: {{user: hdfs}}}}
  s3:
    url: s3://{BUCKET}/policy
    options: {json.dumps(dst_options(moto.endpoint_url))}
datasets:
  events: {{prefix: d000/, home: hdfs}}
"""
    )
    result = cli("-c", str(config), "migrate", f"{hdfs.url}/warehouse", f"s3://{BUCKET}/policy", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["copied"]["files"] == 20 and report["index"] == str(tmp_path / ".tierctl" / "index.db")
    where = json.loads(cli("-c", str(config), "where", "d000/part-00003.parquet", "--json").out)
    assert {p["tier"] for p in where["objects"][0]["placements"]} == {"hdfs", "s3"}
