"""Conditional creates on S3 (``write(if_absent=True)``, ``If-None-Match: *``), against real
servers: moto (enforces the header), moto behind a proxy that drops it and ``rclone serve
s3`` (both ignore it: a PUT overwrites). Wherever the header is ignored nothing is ever
overwritten; where it is enforced a new small object costs one PUT, no HEAD.

Stores are inspected with boto3 and the proxy's request log, never through tierctl."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tierctl.errors import ObjectChanged, ObjectExists
from tierctl.movers.s3 import S3Mover
from tierctl.movers.s3_conditional import PROBE_KEY, PROBE_PREFIX
from tierctl.movers.s3_errors import mover_error
from tierctl.movers.s3_requests import S3ResponseError

from .conftest import DAY, CliResult
from .reliability import new_bucket, s3_bytes, s3_objects
from .servers.faultproxy import Fault, FaultProxy
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

MTIME = 1_700_000_000.5


class IgnoresIfNoneMatch(FaultProxy):
    """moto behind a proxy that drops ``If-None-Match`` on its way: a store that ignores it.
    The log still shows what the client sent."""

    def _handler(self) -> Any:
        base: Any = super()._handler()

        class Handler(base):  # type: ignore[misc, valid-type]
            def _forward(self, body: bytes) -> Any:
                del self.headers["If-None-Match"]
                return super()._forward(body)

        return Handler


@pytest.fixture
def ignoring(moto: MotoS3) -> Iterator[FaultProxy]:
    with IgnoresIfNoneMatch(moto.endpoint_url, lifetime=240) as p:
        yield p


def _mover(endpoint: str, bucket: str, **options: Any) -> S3Mover:
    return S3Mover(
        f"s3://{bucket}/data",
        endpoint_url=endpoint,
        region=REGION,
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        part_size=5 << 20,
        **options,
    )


def _create(mover: S3Mover, key: str, data: bytes) -> object:
    return mover.write(key, [data], size=len(data), mtime=MTIME, if_absent=True)


def _is_probe(request: Any) -> bool:
    """The probe's own requests: its DELETEs and PUTs."""
    return PROBE_PREFIX in request.path


def _requests(proxy: FaultProxy, *, probes: bool = False) -> list[tuple[str, str, int | None]]:
    """(operation, path, status) in order; the probe's own requests only with ``probes``."""
    return [
        (e.request.operation, e.request.path, e.status)
        for e in list(proxy.log)
        if probes or not _is_probe(e.request)
    ]


def _probe_requests(proxy: FaultProxy) -> list[tuple[str, int | None]]:
    return [(e.request.operation, e.status) for e in list(proxy.log) if _is_probe(e.request)]


# -- the mover ----------------------------------------------------------------------------------
def test_moto_enforces_it_one_put_per_create_and_refuses_existing(moto: MotoS3, proxy: FaultProxy) -> None:
    bucket = new_bucket(moto)
    mover = _mover(proxy.endpoint_url, bucket)
    for i in range(5):
        _create(mover, f"new/{i}", b"x%d" % i)
    assert mover.conditional.known is True
    # The probe: remove one a killed run left, create, be refused, delete; nothing is left.
    assert _probe_requests(proxy) == [
        ("DeleteObject", 204),
        ("PutObject", 200),
        ("PutObject", 412),
        ("DeleteObject", 204),
    ]
    assert set(s3_objects(moto, bucket)) == {f"new/{i}" for i in range(5)}
    # Then one PUT per new object, each carrying the condition; no HEAD.
    creates = _requests(proxy)
    assert [(op, status) for op, _, status in creates] == [("PutObject", 200)] * 5
    assert all(e.request.headers.get("if-none-match") == "*" for e in proxy.log if e.request.method == "PUT")
    # An existing object is refused by the store itself, in one request, and stays as it was.
    proxy.log.clear()
    with pytest.raises(ObjectExists):
        _create(mover, "new/0", b"another writer")
    assert [(op, status) for op, _, status in _requests(proxy)] == [("PutObject", 412)]
    assert s3_bytes(moto, bucket, "new/0") == b"x0"
    mover.close()


def test_a_probe_a_killed_run_left_is_removed_by_the_next_probe(moto: MotoS3, proxy: FaultProxy) -> None:
    """A run killed between the probe's write and its delete leaves a zero-byte probe object
    at the tier's root; the next mover that probes removes it (and its own)."""
    bucket = new_bucket(moto)
    stale = f"data/{PROBE_KEY}"
    moto.client().put_object(Bucket=bucket, Key=stale, Body=b"")
    mover = _mover(proxy.endpoint_url, bucket)
    _create(mover, "new/a", b"a")
    assert mover.conditional.known is True
    assert set(s3_objects(moto, bucket)) == {"new/a"}
    mover.close()


def test_the_s3fs_path_sends_it_too(moto: MotoS3, proxy: FaultProxy) -> None:
    from tierctl.movers.s3 import _LEAN_OFF

    bucket = new_bucket(moto)
    mover = _mover(proxy.endpoint_url, bucket)
    mover._lean = _LEAN_OFF
    _create(mover, "a", b"first")
    assert mover.conditional.known is True
    proxy.log.clear()
    with pytest.raises(ObjectExists):
        _create(mover, "a", b"second")
    assert [(op, status) for op, _, status in _requests(proxy)] == [("PutObject", 412)]
    assert s3_bytes(moto, bucket, "a") == b"first"


def test_a_store_that_ignores_it_never_overwrites(moto: MotoS3, ignoring: FaultProxy) -> None:
    bucket = new_bucket(moto)
    mover = _mover(ignoring.endpoint_url, bucket)
    moto.client().put_object(Bucket=bucket, Key="data/taken", Body=b"someone else's")
    with pytest.raises(ObjectExists):
        _create(mover, "taken", b"mine")
    assert mover.conditional.known is False  # the probe's second PUT was accepted
    assert _probe_requests(ignoring) == [
        ("DeleteObject", 204),
        ("PutObject", 200),
        ("PutObject", 200),
        ("DeleteObject", 204),
    ]
    assert s3_bytes(moto, bucket, "taken") == b"someone else's"
    # A new key: HEAD first (not atomic, as without conditional creates), then the PUT.
    ignoring.log.clear()
    _create(mover, "free", b"mine")
    assert [(op, status) for op, _, status in _requests(ignoring)] == [
        ("HeadObject", 404),
        ("PutObject", 200),
    ]
    assert s3_bytes(moto, bucket, "free") == b"mine"
    assert set(s3_objects(moto, bucket)) == {"taken", "free"}  # the probe is gone


def test_a_refused_or_failing_probe_means_head_first(moto: MotoS3, proxy: FaultProxy) -> None:
    """A store that refuses the header's first PUT, or cannot be probed: never trusted."""
    bucket = new_bucket(moto)
    mover = _mover(proxy.endpoint_url, bucket)
    proxy.add(Fault("status", lambda r: PROBE_PREFIX in r.path and r.method == "PUT", times=1, status=500))
    moto.client().put_object(Bucket=bucket, Key="data/taken", Body=b"theirs")
    with pytest.raises(ObjectExists):
        _create(mover, "taken", b"mine")
    assert mover.conditional.known is False
    assert s3_bytes(moto, bucket, "taken") == b"theirs"


def test_the_refusal_codes() -> None:
    what = "s3://b/data/k"
    for code, status in (("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)):
        assert isinstance(mover_error(S3ResponseError(code, status), what, creating=True), ObjectExists)
    # Not a create: a 412 is a changed source (CopySourceIfMatch), a 409 a plain failure.
    assert isinstance(mover_error(S3ResponseError("PreconditionFailed", 412), what), ObjectChanged)
    assert not isinstance(mover_error(S3ResponseError("ConditionalRequestConflict", 409), what), ObjectExists)


# -- rclone serve s3 ------------------------------------------------------------------------------
def test_rclone_serve_s3_ignores_it_and_nothing_is_overwritten(rclone_s3: str) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=rclone_s3, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    )
    client.create_bucket(Bucket="conditional")
    # What the server does: a second PUT with If-None-Match: * overwrites.
    client.put_object(Bucket="conditional", Key="plain", Body=b"1", IfNoneMatch="*")
    client.put_object(Bucket="conditional", Key="plain", Body=b"2", IfNoneMatch="*")
    assert client.get_object(Bucket="conditional", Key="plain")["Body"].read() == b"2"
    mover = _mover(rclone_s3, "conditional")
    client.put_object(Bucket="conditional", Key="data/taken", Body=b"theirs")
    with pytest.raises(ObjectExists):
        _create(mover, "taken", b"mine")
    assert mover.conditional.known is False
    assert client.get_object(Bucket="conditional", Key="data/taken")["Body"].read() == b"theirs"
    _create(mover, "free", b"mine")
    listed = client.list_objects_v2(Bucket="conditional", Prefix="data/")["Contents"]
    assert sorted(o["Key"] for o in listed) == ["data/free", "data/taken"]  # no probe left


# -- end to end: apply ------------------------------------------------------------------------------
def _sandbox(tmp_path: Path, endpoint: str, bucket: str, files: int) -> tuple[str, dict[str, bytes]]:
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""\
version: 1
tiers:
  hot: {{url: ./hot}}
  s3: {{url: "s3://{bucket}/data", options: {{endpoint_url: "{endpoint}", region: {REGION},
        key: {ACCESS_KEY}, secret: {SECRET_KEY}, part_size: 5242880}}}}
datasets:
  logs: {{prefix: logs/, home: hot}}
policies:
  - name: archive
    dataset: logs
    rules:
      - when: "age >= 30d"
        place: [hot, s3]
retries: {{attempts: 3, base_delay: 0.02, max_delay: 0.1}}
"""
    )
    old = time.time() - 40 * DAY
    originals = {f"logs/{i:03d}.log": os.urandom(300 + i) for i in range(files)}
    for key, data in originals.items():
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (old, old))
    return str(config), originals


def _apply(cli: Callable[..., CliResult], config: str) -> dict[str, Any]:
    scanned = cli("-c", config, "scan")
    assert scanned.code == 0, scanned.err
    result = cli("-c", config, "apply", "--yes", "--json")
    report: dict[str, Any] = json.loads(result.out)
    return report


@pytest.mark.parametrize("store", ["enforces", "ignores"])
def test_apply_leaves_an_object_that_appeared_since_the_scan(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
    ignoring: FaultProxy,
    cli: Callable[..., CliResult],
    store: str,
) -> None:
    front = proxy if store == "enforces" else ignoring
    bucket = new_bucket(moto)
    refused = f"/{bucket}/data/logs/002.log"
    config, originals = _sandbox(tmp_path, front.endpoint_url, bucket, 6)
    assert cli("-c", config, "scan").code == 0
    # Someone writes another object under one of the planned keys after the scan.
    moto.client().put_object(Bucket=bucket, Key="data/logs/002.log", Body=b"theirs")
    report = json.loads(cli("-c", config, "apply", "--yes", "--json").out)
    problems = {(p["op"], p["key"], p["status"]) for p in report["problems"]}
    assert problems == {("copy", "logs/002.log", "skipped")}
    assert any("not overwritten" in p["error"] for p in report["problems"] if p["op"] == "copy")
    assert s3_bytes(moto, bucket, "logs/002.log") == b"theirs"
    assert (tmp_path / "hot" / "logs/002.log").read_bytes() == originals["logs/002.log"]
    others = {k: v for k, v in originals.items() if k != "logs/002.log"}
    assert {k: s3_bytes(moto, bucket, k) for k in others} == others
    puts = [(path, status) for op, path, status in _requests(front) if op == "PutObject"]
    heads = [path for op, path, _ in _requests(front) if op == "HeadObject"]
    if store == "enforces":
        # One PUT per new object and no HEAD; the refused key alone is HEADed, after its PUT.
        assert sorted(puts) == sorted([(f"/{bucket}/data/{k}", 200) for k in others] + [(refused, 412)])
        assert heads == [refused]
    else:
        # A HEAD before each create (the refused key's twice: the mover's, then the copy's
        # own check on ObjectExists) and a PUT per new object.
        assert sorted(heads) == sorted([f"/{bucket}/data/{k}" for k in originals] + [refused])
        assert sorted(puts) == sorted((f"/{bucket}/data/{k}", 200) for k in others)


def test_apply_resumes_onto_the_planned_copy_already_there(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli: Callable[..., CliResult]
) -> None:
    """The target holds exactly the planned object (an interrupted run wrote it and nothing
    recorded it): the refused create falls back to verifying it as found."""
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 3)
    key = "logs/001.log"
    mtime = os.stat(tmp_path / "hot" / key).st_mtime
    # Scanned before the object was there: the plan copies it onto an absent target.
    assert cli("-c", config, "scan").code == 0
    moto.client().put_object(
        Bucket=bucket, Key=f"data/{key}", Body=originals[key], Metadata={"mtime": f"{mtime:.9f}"}
    )
    before = s3_objects(moto, bucket)[key]
    report = json.loads(cli("-c", config, "apply", "--yes", "--json").out)
    assert report["failed"] == 0 and report["skipped"] == 0, report["problems"]
    after = s3_objects(moto, bucket)[key]
    assert (after["ETag"], after["LastModified"]) == (before["ETag"], before["LastModified"])  # not rewritten
    assert {k: s3_bytes(moto, bucket, k) for k in originals} == originals
    refused = [s for op, path, s in _requests(proxy) if op == "PutObject" and path.endswith(key)]
    assert refused == [412]


def test_a_lost_answer_to_a_conditional_put_ends_verified(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli: Callable[..., CliResult]
) -> None:
    """The store took the PUT, the answer never came back: the retry's create is refused,
    and the copy is verified as found instead of failing or writing again."""
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 3)
    key = "logs/000.log"
    proxy.add(
        Fault(
            "hook",
            lambda r: r.operation == "PutObject" and r.path.endswith(key),
            hook=lambda r: None,
            after_forward=True,
        )
    )
    report = _apply(cli, config)
    assert report["failed"] == 0 and report["skipped"] == 0, report["problems"]
    assert {k: s3_bytes(moto, bucket, k) for k in originals} == originals
    attempts = [status for op, path, status in _requests(proxy) if op == "PutObject" and path.endswith(key)]
    assert attempts == [None, 412]  # taken but unanswered, then refused


def test_a_source_gone_since_the_scan_with_the_copy_already_there(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli: Callable[..., CliResult]
) -> None:
    """An interrupted move stored the copy and deleted the source, and recorded neither: the
    copy is found on S3 and recorded, as when the target is stat'ed first."""
    bucket = new_bucket(moto)
    config, originals = _sandbox(tmp_path, proxy.endpoint_url, bucket, 2)
    key = "logs/000.log"
    mtime = os.stat(tmp_path / "hot" / key).st_mtime
    assert cli("-c", config, "scan").code == 0
    moto.client().put_object(
        Bucket=bucket, Key=f"data/{key}", Body=originals[key], Metadata={"mtime": f"{mtime:.9f}"}
    )
    (tmp_path / "hot" / key).unlink()
    report = json.loads(cli("-c", config, "apply", "--yes", "--json").out)
    assert report["failed"] == 0, report["problems"]
    assert {k: s3_bytes(moto, bucket, k) for k in originals} == originals


def test_a_planned_replacement_is_not_a_create(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli: Callable[..., CliResult]
) -> None:
    """The plan replaces a known older copy (``expect``): stat, then a plain PUT, as before."""
    bucket = new_bucket(moto)
    config, _ = _sandbox(tmp_path, proxy.endpoint_url, bucket, 2)
    assert _apply(cli, config)["failed"] == 0
    key, newer = "logs/001.log", b"a newer version"
    path = tmp_path / "hot" / key
    path.write_bytes(newer)
    os.utime(path, (time.time() - 35 * DAY, time.time() - 35 * DAY))
    proxy.log.clear()
    report = _apply(cli, config)
    assert report["failed"] == 0 and report["skipped"] == 0, report["problems"]
    assert s3_bytes(moto, bucket, key) == newer
    sent = [(e.request.operation, e.request.headers.get("if-none-match")) for e in proxy.log]
    assert sent.count(("PutObject", None)) == 1 and ("HeadObject", None) in sent
    assert not [op for op, condition in sent if condition]
