"""End to end against real servers on loopback: moto's S3 server and the GCS emulator.

Results are checked with boto3 and the emulator's JSON API, never with tierctl itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from .conftest import DAY, CliResult, write_file
from .servers.gcs_server import PROJECT, GcsEmulator
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

BUCKET = "tierctl-e2e"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        server.create_bucket(BUCKET)
        yield server


def _s3_options(server: MotoS3) -> str:
    return (
        f"{{endpoint_url: '{server.endpoint_url}', region: {REGION}, key: {ACCESS_KEY},"
        f" secret: {SECRET_KEY}, part_size: 5242880}}"
    )


def _gcs_objects(server: GcsEmulator, prefix: str) -> dict[str, bytes]:
    base = f"{server.endpoint_url}/storage/v1/b/{BUCKET}/o"
    listing = requests.get(base, params={"prefix": prefix}, timeout=10).json()
    out = {}
    for item in listing.get("items", []):
        name = item["name"]
        media = requests.get(f"{base}/{quote(name, safe='')}", params={"alt": "media"}, timeout=10)
        out[name[len(prefix) :]] = media.content
    return out


def _s3_objects(server: MotoS3, prefix: str) -> dict[str, str]:
    client = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        o["Key"][len(prefix) :]: o.get("StorageClass", "STANDARD")
        for p in pages
        for o in p.get("Contents", [])
    }


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err + result.out
    return result


def test_example_policy_hot_local_replica_gcs_archive_glacier(
    tmp_path: Path, moto: MotoS3, gcs: GcsEmulator, cli
):
    run = f"r{time.time_ns()}"
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  nvme: {{url: ./nvme}}
  gcs:
    url: "gs://{BUCKET}/{run}"
    options: {{endpoint_url: '{gcs.endpoint_url}', token: anon, project: {PROJECT}}}
  glacier: {{url: "s3://{BUCKET}/{run}", storage_class: GLACIER, options: {_s3_options(moto)}}}
datasets:
  events: {{prefix: events/, home: nvme}}
policies:
  - name: events-lifecycle
    dataset: events
    rules:
      - when: "age < 7d"
        place: [nvme, gcs]
      - when: "age < 3y"
        place: [gcs, glacier]
      - when: "age >= 3y"
        delete: true
"""
    )
    now = time.time()
    ages = {
        "young-1d": 1,
        "young-3d": 3,
        "old-10d": 10,
        "old-100d": 100,
        "old-400d": 400,
        "ancient-4y": 4 * 365 + 1,
    }
    originals = {}
    for name, age in ages.items():
        data = f"{name} ".encode() * 6000  # > 40 KiB: smaller objects lose money in GLACIER (cost guard)
        write_file(tmp_path / "nvme", f"events/{name}.parquet", data, now - age * DAY)
        originals[f"events/{name}.parquet"] = data
    _ok(cli("-c", str(config), "scan"))
    applied = json.loads(_ok(cli("-c", str(config), "apply", "--yes", "--json")).out)
    assert applied["failed"] == 0 and applied["skipped"] == 0

    young = {k for k in originals if "young" in k}
    old = {k for k in originals if "old-" in k}
    # Local: only the young files remain.
    local = {
        p.relative_to(tmp_path / "nvme").as_posix() for p in (tmp_path / "nvme").rglob("*") if p.is_file()
    }
    assert local == young
    # GCS (read through the emulator's API): young and old, byte for byte.
    assert _gcs_objects(gcs, f"{run}/") == {k: originals[k] for k in young | old}
    # S3 (boto3): the old files, all in GLACIER; nothing else.
    assert _s3_objects(moto, f"{run}/") == {k: "GLACIER" for k in old}
    # The content mtime travelled as metadata: the archive copy is not young again.
    head = moto.client().head_object(Bucket=BUCKET, Key=f"{run}/events/old-400d.parquet")
    assert now - float(head["Metadata"]["mtime"]) > 399 * DAY
    # Nothing more to do, even after a fresh scan of every tier.
    _ok(cli("-c", str(config), "scan"))
    assert _ok(cli("-c", str(config), "plan", "--detailed-exitcode")).out.startswith("No changes.")
    where = json.loads(_ok(cli("-c", str(config), "where", "events/old-400d.parquet", "--json")).out)
    placements = {p["tier"]: p for p in where["objects"][0]["placements"]}
    assert set(placements) == {"gcs", "glacier"}
    assert placements["glacier"]["storage_class"] == "GLACIER"


def test_transition_in_place_then_restore_and_copy_back(tmp_path: Path, moto: MotoS3, cli):
    run = f"t{time.time_ns()}"
    s3_url = f"s3://{BUCKET}/{run}"

    def write_policy(rules: str) -> str:
        path = tmp_path / "policies.yaml"
        path.write_text(
            f"""
version: 1
tiers:
  hot: {{url: ./hot}}
  s3: {{url: "{s3_url}", options: {_s3_options(moto)}}}
  glacier:
    url: "{s3_url}"
    storage_class: GLACIER
    restore: {{days: 3, tier: Bulk}}
    options: {_s3_options(moto)}
datasets:
  d: {{prefix: d/}}
policies:
  - name: p
    dataset: d
    rules:
{rules}
"""
        )
        return str(path)

    now = time.time()
    # Over GLACIER's 40 KiB per-object overhead, so the cost guard lets them in.
    originals = {f"d/f{i}.bin": bytes([i]) * (48 * 1024 + i) for i in range(3)}
    for key, data in originals.items():
        write_file(tmp_path / "hot", key, data, now - 40 * DAY)

    # 1. Hot and a standard S3 copy.
    config = write_policy('      - {when: "true", place: [hot, s3]}')
    _ok(cli("-c", config, "scan"))
    _ok(cli("-c", config, "apply", "--yes"))
    assert _s3_objects(moto, f"{run}/") == {k: "STANDARD" for k in originals}

    # 2. Archive: S3 STANDARD -> GLACIER is an in-place transition, not a copy and a delete.
    config = write_policy('      - {when: "true", place: [glacier]}')
    plan = json.loads(_ok(cli("-c", config, "plan", "--json")).out)
    assert sorted({(a["op"], a["source"], a["target"]) for a in plan["actions"]}) == [
        ("delete", None, "hot"),
        ("transition", "s3", "glacier"),
    ]
    client = moto.client()
    puts_before = {k: client.head_object(Bucket=BUCKET, Key=f"{run}/{k}")["ETag"] for k in originals}
    _ok(cli("-c", config, "apply", "--yes"))
    assert _s3_objects(moto, f"{run}/") == {k: "GLACIER" for k in originals}
    assert not any((tmp_path / "hot").rglob("*.bin"))
    for key in originals:  # same content (ETag), content mtime kept through the class change
        head = client.head_object(Bucket=BUCKET, Key=f"{run}/{key}")
        assert head["ETag"] == puts_before[key]
        assert abs(float(head["Metadata"]["mtime"]) - (now - 40 * DAY)) < 0.01
    _ok(cli("-c", config, "scan"))  # the listing is routed to the glacier tier by class
    assert _ok(cli("-c", config, "plan", "--detailed-exitcode")).out.startswith("No changes.")

    # 3. Bring them back hot: the archived objects are restored first, then copied.
    config = write_policy('      - {when: "true", place: [hot, glacier]}')
    plan = json.loads(_ok(cli("-c", config, "plan", "--json")).out)
    assert {a["op"] for a in plan["actions"]} == {"restore"}
    assert {(a["restore_days"], a["restore_speed"]) for a in plan["actions"]} == {(3, "Bulk")}
    _ok(cli("-c", config, "apply", "--yes"))
    restore = client.head_object(Bucket=BUCKET, Key=f"{run}/d/f0.bin").get("Restore", "")
    assert "ongoing-request" in restore
    where = json.loads(_ok(cli("-c", config, "where", "d/f0.bin", "--json")).out)
    assert where["objects"][0]["placements"][0]["restore_state"] == "restoring"
    plan = json.loads(_ok(cli("-c", config, "plan", "--json")).out)
    assert {(a["op"], a["source"], a["target"]) for a in plan["actions"]} == {("copy", "glacier", "hot")}
    _ok(cli("-c", config, "apply", "--yes"))
    assert {
        p.relative_to(tmp_path / "hot").as_posix(): p.read_bytes() for p in (tmp_path / "hot").rglob("*.bin")
    } == originals
    assert _s3_objects(moto, f"{run}/") == {k: "GLACIER" for k in originals}


def test_no_action_reads_an_archived_object(tmp_path: Path, moto: MotoS3, cli):
    """An object only in GLACIER, not restored, wanted hot: the plan asks for a restore and
    a copy attempted meanwhile waits (skipped), it never reads or fails."""
    run = f"a{time.time_ns()}"
    client = moto.client()
    client.put_object(
        Bucket=BUCKET,
        Key=f"{run}/d/x.bin",
        Body=b"archived bytes",
        StorageClass="GLACIER",
        Metadata={"mtime": str(time.time() - 100 * DAY)},
    )
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  hot: {{url: ./hot}}
  glacier: {{url: "s3://{BUCKET}/{run}", storage_class: GLACIER, options: {_s3_options(moto)}}}
datasets:
  d: {{prefix: d/}}
policies:
  - name: p
    dataset: d
    rules:
      - {{when: "true", place: [hot, glacier]}}
"""
    )
    _ok(cli("-c", str(config), "scan"))
    where = json.loads(_ok(cli("-c", str(config), "where", "d/x.bin", "--json")).out)
    (placement,) = where["objects"][0]["placements"]
    assert placement["tier"] == "glacier" and placement["storage_class"] == "GLACIER"
    plan = json.loads(_ok(cli("-c", str(config), "plan", "--json")).out)
    assert [a["op"] for a in plan["actions"]] == ["restore"]
