"""Helpers for the reliability tests (tests/test_reliability_*.py): moto behind the fault
proxy, sandboxes with local and S3 tiers, and checks made on the stores directly (boto3,
plain file reads), never through tierctl.

This module is also a pytest plugin (``pytest_plugins`` in tests/conftest.py): its fixtures
``moto`` (one server per test module), ``proxy`` (a fresh fault proxy per test) and
``rclone_s3`` (``rclone serve s3`` per test module, checking signatures) are requested by
argument name, never imported. A module that defines its own ``moto`` fixture
uses that one instead."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tierctl.index import Index

from .servers.faultproxy import FaultProxy
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

TEMP_PREFIX = ".tierctl-tmp-"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with MotoS3() as server:
        yield server


@pytest.fixture
def proxy(moto: MotoS3) -> Iterator[FaultProxy]:
    with FaultProxy(moto.endpoint_url, lifetime=240) as p:
        yield p


_RCLONE_LISTENING = re.compile(r"Starting s3 server on \[?(http://127\.0\.0\.1:\d+)")


@contextlib.contextmanager
def serving_rclone_s3(
    tmp_path_factory: pytest.TempPathFactory, key: str = ACCESS_KEY, secret: str = SECRET_KEY
) -> Iterator[str]:
    """``rclone serve s3`` over a fresh folder (each top-level folder a bucket), accepting
    only ``key``/``secret`` (it checks signatures); yields its endpoint URL."""
    rclone = Path(sys.executable).with_name("rclone")
    root, log = tmp_path_factory.mktemp("rclone-s3"), tmp_path_factory.mktemp("rclone-log") / "log"
    argv = [str(rclone), "serve", "s3", str(root), "--addr", "127.0.0.1:0"]
    argv += ["--auth-key", f"{key},{secret}", "--config", os.devnull]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 20
        while not (match := _RCLONE_LISTENING.search(log.read_text(errors="replace"))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def rclone_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """:func:`serving_rclone_s3` with moto_server's credentials, one per test module."""
    with serving_rclone_s3(tmp_path_factory) as endpoint:
        yield endpoint


def new_bucket(moto: MotoS3) -> str:
    return moto.create_bucket(f"rel-{uuid.uuid4().hex[:12]}")


def s3_tier(bucket: str, endpoint: str, **extra: Any) -> str:
    """A flow-style YAML tier entry for an S3 tier on moto (credentials from the env)."""
    options = {
        "endpoint_url": endpoint,
        "region": REGION,
        "key": "${TIERCTL_TEST_S3_KEY}",
        "secret": "${TIERCTL_TEST_S3_SECRET}",
        **extra,
    }
    body = ", ".join(f"{k}: {_yaml(v)}" for k, v in options.items())
    return f'{{url: "s3://{bucket}/data", options: {{{body}}}}}'


def _yaml(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


S3_ENV = {"TIERCTL_TEST_S3_KEY": ACCESS_KEY, "TIERCTL_TEST_S3_SECRET": SECRET_KEY}


def write_config(root: Path, text: str) -> str:
    path = root / "policies.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def tierctl(*args: str, cwd: str | None = None, timeout: float = 120, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "tierctl", *args],
        cwd=cwd,
        env={**os.environ, **S3_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierctl", *args],
        env={**os.environ, **S3_ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILL cannot be ignored
        proc.communicate(timeout=30)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def s3_objects(moto: MotoS3, bucket: str, prefix: str = "data/") -> dict[str, dict[str, Any]]:
    """key (below ``prefix``) -> list entry (Size, ETag), read with boto3 directly."""
    client = moto.client()
    out: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) :]] = item
    return out


def s3_bytes(moto: MotoS3, bucket: str, key: str, prefix: str = "data/") -> bytes:
    return moto.client().get_object(Bucket=bucket, Key=prefix + key)["Body"].read()


def incomplete_uploads(moto: MotoS3, bucket: str) -> list[dict[str, Any]]:
    return moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def local_files(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (temp files included, under their own names)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def present_placements(index_path: str) -> set[tuple[str, str, int]]:
    with Index.open(index_path, create=False) as index:
        return {(r[1], r[2], r[3]) for r in index.dump() if r[8] == "present"}


def secret_free(text: str | bytes, *secrets: str) -> list[str]:
    """The secrets that occur in ``text`` (empty when none leaks)."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    return [s for s in secrets if s.encode() in data]
