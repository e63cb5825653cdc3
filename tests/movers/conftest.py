"""Real stores for the mover suite: moto's S3 server and the GCS emulator, one each per
session, on loopback. Each test gets its own fresh prefix in a shared bucket."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from ..servers.gcs_server import PROJECT, GcsEmulator
from ..servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

S3_BUCKET = "tierctl-movers"
GCS_BUCKET = "tierctl-movers"
PART_SIZE = 5 << 20  # the smallest S3 allows, so the 50 MB case is a 10-part upload


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with MotoS3() as server:
        server.create_bucket(S3_BUCKET)
        yield server


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        server.create_bucket(GCS_BUCKET)
        yield server


def fresh_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def s3_options(server: MotoS3) -> dict[str, object]:
    return {
        "endpoint_url": server.endpoint_url,
        "region": REGION,
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "part_size": PART_SIZE,
    }


def gcs_options(server: GcsEmulator) -> dict[str, object]:
    return {"endpoint_url": server.endpoint_url, "token": "anon", "project": PROJECT}
