"""Faults between tierctl and S3 (moto behind the fault proxy): transient ones are retried
and the run completes; persistent ones end the run with a clear per-action report and a
non-zero exit, every source intact and nothing recorded that the store does not hold;
corrupted copies are caught by verification; rejected credentials and endpoints that do
not answer give one line of reason and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tierctl import api
from tierctl.movers.s3_conditional import PROBE_PREFIX

from .reliability import (
    local_files,
    new_bucket,
    present_placements,
    s3_bytes,
    s3_objects,
    s3_tier,
    tierctl,
    write_config,
)
from .servers.faultproxy import Fault, FaultProxy, op
from .servers.moto_server import REGION, MotoS3

DAY = 86400.0
PART = 5 << 20
FIGURES: dict[str, Any] = {}


def _sandbox(tmp_path: Path, endpoint: str, bucket: str, files: int, *, big: int = 0, **options: Any):
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          hot: {{url: ./hot}}
          s3:  {s3_tier(bucket, endpoint, part_size=PART, **options)}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: archive
            dataset: logs
            rules:
              - when: "age >= 30d"
                place: [s3]
        retries: {{attempts: 6, base_delay: 0.02, max_delay: 0.2}}
        """,
    )
    now = time.time()
    originals = {}
    for i in range(files):
        originals[f"logs/{i:04d}.log"] = os.urandom(500 + i) + b"|%d" % i
    for i in range(big):
        originals[f"logs/big-{i}.bin"] = os.urandom(2 * PART + 12345)
    for key, data in originals.items():
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (now - 40 * DAY, now - 40 * DAY))
    return config, originals


def _no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text[-3000:]


def test_transient_faults_are_retried_and_the_run_completes(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 120, big=1, read_timeout=1)
    assert tierctl("-c", config, "scan").returncode == 0
    proxy.add(
        Fault("status", op("PutObject"), times=6, every=7, status=503),
        Fault("status", op("HeadObject"), times=5, every=11, status=500),
        Fault("status", op("UploadPart"), times=1, status=503),
        Fault("drop_request", op("PutObject"), times=3, after=20, every=9),
        Fault("drop_response", op("PutObject"), times=3, after=40, every=9),
        Fault("drop_response", op("HeadObject"), times=2, after=30, every=17),
        Fault("stall", op("HeadObject"), times=2, after=60, every=13, seconds=2.0, status=0),
        Fault("status", op("ListObjects"), times=1, status=503),
    )
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=180)
    _no_traceback(result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["failed"] == 0 and report["skipped"] == 0
    injected, requests = proxy.injected(), len(proxy.log)
    assert injected >= 20, f"only {injected} faults injected"
    # Everything arrived whole, and only then were the sources removed.
    assert set(s3_objects(moto, bucket)) == set(originals)
    for key, data in originals.items():
        assert s3_bytes(moto, bucket, key) == data
    assert local_files(tmp_path / "hot") == {}
    index_path = api.load(config).index_path
    before = present_placements(index_path)
    proxy.clear()
    assert tierctl("-c", config, "scan").returncode == 0
    assert present_placements(index_path) == before == {(k, "s3", len(v)) for k, v in originals.items()}
    FIGURES["transient"] = {"faults_injected": injected, "requests": requests}


def test_persistent_faults_end_with_a_report_and_lose_nothing(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 12)
    assert tierctl("-c", config, "scan").returncode == 0
    # Every upload is refused; a few stored before the store "breaks" stay consistent.
    # (Not counting the S3 mover's probe of If-None-Match: see movers.s3_conditional.)
    uploads = lambda r: r.operation == "PutObject" and PROBE_PREFIX not in r.path  # noqa: E731
    proxy.add(Fault("status", uploads, times=100_000, after=3, status=503))
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=180)
    _no_traceback(result.stderr)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "partial" and report["done"] >= 3
    problems = report["problems"]
    failed_copies = [p for p in problems if p["op"] == "copy" and p["status"] == "failed"]
    assert len(failed_copies) == 12 - 3 and all("SlowDown" in p["error"] for p in failed_copies)
    assert all(p["key"] in p["error"] and "\n" not in p["error"] for p in failed_copies)
    # Every object is intact at its source, or on S3 where the copy got through.
    on_s3 = s3_objects(moto, bucket)
    hot = local_files(tmp_path / "hot")
    for key, data in originals.items():
        assert hot.get(key) == data or s3_bytes(moto, bucket, key) == data
    assert set(hot) == set(originals) - set(on_s3)
    # The index holds no S3 placement the store does not.
    index_path = api.load(config).index_path
    assert {k for k, tier, _ in present_placements(index_path) if tier == "s3"} == set(on_s3)
    # The human report: one line per failed action, its reason included.
    proxy.clear()
    proxy.add(Fault("status", op("PutObject"), times=100_000, status=503))
    text = tierctl("-c", config, "apply", "--yes", timeout=180, env={"COLUMNS": "400"})
    assert text.returncode == 3
    lines = [line for line in text.stdout.splitlines() if line.strip().startswith("failed copy")]
    assert len(lines) == len(failed_copies) and all("SlowDown" in line for line in lines)
    FIGURES["persistent"] = {"faults_injected": proxy.injected(), "failed_actions": len(failed_copies)}


def test_corrupted_upload_fails_verification_source_kept_index_untouched(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 3, big=1)
    assert tierctl("-c", config, "scan").returncode == 0
    # A byte flipped on the wire, in a single PUT and in one part of a multipart upload.
    proxy.add(
        Fault("corrupt", lambda r: r.operation == "PutObject" and r.path.endswith("0001.log"), times=99),
        Fault("corrupt", op("UploadPart"), times=99),
    )
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=120)
    _no_traceback(result.stderr)
    assert result.returncode == 3
    report = json.loads(result.stdout)
    failed = {p["key"]: p["error"] for p in report["problems"] if p["status"] == "failed"}
    skipped = {p["key"] for p in report["problems"] if p["status"] == "skipped"}
    corrupted = {"logs/0001.log", "logs/big-0.bin"}
    assert set(failed) == corrupted == skipped  # the copy failed, the delete never ran
    assert all(
        (
            "store reports" in e
            or "read back" in e
            or "BadDigest" in e
            or "InvalidDigest" in e
            or "differ" in e
        )
        for e in failed.values()
    ), failed
    hot = local_files(tmp_path / "hot")
    assert {k: hot[k] for k in corrupted} == {k: originals[k] for k in corrupted}
    # Nothing corrupt is left under the final key, and the index records no S3 copy of them.
    assert not corrupted & set(s3_objects(moto, bucket))
    index_path = api.load(config).index_path
    assert not {(k, t) for k, t, _ in present_placements(index_path)} & {(k, "s3") for k in corrupted}
    FIGURES["corrupt_upload"] = {"faults_injected": proxy.injected(), "failed_verification": len(failed)}


def test_corrupt_existing_replica_is_not_trusted(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    """S3 already holds the object, same size and content mtime, other bytes (changed after
    an upload): the move verifies it before deleting the source, fails, and keeps hot."""
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 2)
    key = "logs/0000.log"
    good = originals[key]
    bad = bytes([good[0] ^ 1]) + good[1:]
    mtime = os.stat(tmp_path / "hot" / key).st_mtime
    moto.client().put_object(Bucket=bucket, Key=f"data/{key}", Body=bad, Metadata={"mtime": f"{mtime:.9f}"})
    assert tierctl("-c", config, "scan").returncode == 0
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=120)
    assert result.returncode == 3, result.stderr
    problems = {(p["op"], p["status"]) for p in json.loads(result.stdout)["problems"] if p["key"] == key}
    assert problems & {("copy", "failed"), ("verify", "failed")}
    assert (tmp_path / "hot" / key).read_bytes() == good
    assert s3_bytes(moto, bucket, key) == bad  # never trusted, never "fixed" blindly either


def test_rejected_credentials_one_line_and_nonzero_exit(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    config, _ = _sandbox(tmp_path, proxy.endpoint_url, bucket, 2)
    proxy.add(Fault("status", times=100_000, status=403))
    result = tierctl("-c", config, "scan", timeout=60)
    _no_traceback(result.stderr)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "access denied (InvalidAccessKeyId)" in errors[0], result.stderr
    assert "hint: check the tier's credentials" in result.stderr


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["nothing-listening", "stalls"])
def test_endpoint_that_does_not_answer(
    how: str,
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    if how == "stalls":
        endpoint = proxy.endpoint_url
        proxy.add(Fault("stall", times=100_000, seconds=30, status=0))
    else:
        endpoint = f"http://127.0.0.1:{_dead_port()}"
    config, _ = _sandbox(tmp_path, endpoint, bucket, 2, read_timeout=0.5, connect_timeout=0.5)
    started = time.monotonic()
    result = tierctl("-c", config, "scan", timeout=120)
    elapsed = time.monotonic() - started
    _no_traceback(result.stderr)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach the store" in errors[0], result.stderr
    FIGURES[f"unreachable_{how}_seconds"] = round(elapsed, 1)


def test_zz_print_figures() -> None:
    print(f"\nreliability figures (faults): {json.dumps(FIGURES)}")


_ = REGION
