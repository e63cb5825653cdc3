"""Object tags and user metadata from the stores feed the policy conditions ``tag.KEY`` and
``meta.KEY``: S3 tags and x-amz-meta-* (moto's server, behind a request-counting proxy), GCS
custom metadata (the emulator), local ``user.*`` xattrs; the index merge; the evaluation
rules (absent keys, unknown tags, copies that disagree).

Tags and metadata are arranged with each store's own API (boto3, the GCS JSON API,
os.setxattr), never through tierctl.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from tierctl.index import Index
from tierctl.model import Entry, ObjectSnapshot, Placement
from tierctl.policies import expr
from tierctl.policies.evaluate import decide, metadata_wanted
from tierctl.policies.loader import parse_config

from .conftest import DAY, CliResult, write_file
from .servers.faultproxy import FaultProxy
from .servers.gcs_server import PROJECT, GcsEmulator
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

BUCKET = "tierctl-metadata"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with MotoS3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def proxy(moto: MotoS3) -> Iterator[FaultProxy]:
    """Forwards to moto and logs every request: the tests count HEADs and GetObjectTagging."""
    with FaultProxy(moto.endpoint_url, lifetime=600) as running:
        yield running


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        server.create_bucket(BUCKET)
        yield server


def _ok(result: CliResult) -> CliResult:
    assert result.code == 0, result.err + result.out
    return result


def _copies(cli: Any, config: Path) -> set[str]:
    """The plan's copies as "source->target key"."""
    plan = json.loads(_ok(cli("-c", str(config), "plan", "--json")).out)
    return {f"{a['source']}->{a['target']} {a['key']}" for a in plan["actions"] if a["op"] == "copy"}


def _requests(proxy: FaultProxy) -> tuple[int, int]:
    """(HEAD requests, GetObjectTagging requests) the proxy has seen."""
    log = list(proxy.log)
    heads = sum(1 for e in log if e.request.method == "HEAD")
    tagging = sum(1 for e in log if e.request.method == "GET" and "tagging" in e.request.query)
    return heads, tagging


def _next_second() -> None:
    """S3 versions carry whole-second LastModified: let the clock pass one."""
    time.sleep(1.05 - time.time() % 1)


# -- S3: tags and x-amz-meta-* -------------------------------------------------------------
def _s3_policy(tmp_path: Path, proxy: FaultProxy, run: str, rules: str) -> Path:
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  s3:
    url: "s3://{BUCKET}/{run}"
    options:
      {{endpoint_url: '{proxy.endpoint_url}', region: {REGION}, key: {ACCESS_KEY}, secret: {SECRET_KEY}}}
  hot: {{url: ./hot}}
  warm: {{url: ./warm}}
datasets:
  d: {{prefix: d/, home: s3}}
policies:
  - name: p
    dataset: d
    rules:
{rules}
"""
    )
    return config


TAG_RULES = """\
      - when: 'tag.tier == "hot"'
        place: [s3, hot]
      - when: 'meta.owner == "ml"'
        place: [s3, warm]
      - when: "true"
        place: [s3]
"""


def test_s3_tags_and_metadata_choose_the_plan(tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli):
    run = f"s{time.time_ns()}"
    client = moto.client()
    client.put_object(Bucket=BUCKET, Key=f"{run}/d/a.bin", Body=b"a" * 10, Tagging="tier=hot")
    client.put_object(Bucket=BUCKET, Key=f"{run}/d/b.bin", Body=b"b" * 10, Metadata={"Owner": "ml"})
    client.put_object(Bucket=BUCKET, Key=f"{run}/d/c.bin", Body=b"c" * 10)
    config = _s3_policy(tmp_path, proxy, run, TAG_RULES)

    _ok(cli("-c", str(config), "scan"))
    assert _requests(proxy) == (3, 3)  # new objects: one HEAD (mtime, metadata) and one tagging each
    assert _copies(cli, config) == {"s3->hot d/a.bin", "s3->warm d/b.bin"}

    # A no-op re-scan asks S3 for nothing per object: the index knows tags and metadata.
    proxy.log.clear()
    _ok(cli("-c", str(config), "scan"))
    assert _requests(proxy) == (0, 0)
    assert _copies(cli, config) == {"s3->hot d/a.bin", "s3->warm d/b.bin"}

    # New user metadata is a new object version (CopyObject): a plain re-scan sees it,
    # asking only about that object.
    _next_second()
    client.copy_object(
        Bucket=BUCKET,
        Key=f"{run}/d/b.bin",
        CopySource={"Bucket": BUCKET, "Key": f"{run}/d/b.bin"},
        MetadataDirective="REPLACE",
        Metadata={"owner": "ops"},
    )
    proxy.log.clear()
    _ok(cli("-c", str(config), "scan"))
    assert _requests(proxy) == (1, 1)
    assert _copies(cli, config) == {"s3->hot d/a.bin"}

    # PutObjectTagging keeps the version: a plain re-scan cannot see it, a refreshing one does.
    client.put_object_tagging(
        Bucket=BUCKET, Key=f"{run}/d/c.bin", Tagging={"TagSet": [{"Key": "tier", "Value": "hot"}]}
    )
    _ok(cli("-c", str(config), "scan"))
    assert _copies(cli, config) == {"s3->hot d/a.bin"}
    reports = json.loads(_ok(cli("-c", str(config), "scan", "--refresh-metadata", "--json")).out)
    assert [(r["tier"], r["changed"]) for r in reports if r["tier"] == "s3"] == [("s3", 1)]
    assert _copies(cli, config) == {"s3->hot d/a.bin", "s3->hot d/c.bin"}


def test_s3_reads_tags_only_when_a_policy_tests_them(tmp_path: Path, moto: MotoS3, proxy: FaultProxy, cli):
    run = f"u{time.time_ns()}"
    client = moto.client()
    for name in ("x", "y"):
        client.put_object(Bucket=BUCKET, Key=f"{run}/d/{name}.bin", Body=b"x", Tagging=f"tier={name}")
    plain = _s3_policy(tmp_path, proxy, run, '      - when: "age >= 0s"\n        place: [s3]\n')
    _ok(cli("-c", str(plain), "scan"))
    assert _requests(proxy) == (2, 0)  # the mtime needs a HEAD; tags are not read

    # The policy now tests tags the index does not know yet: no rule can be evaluated, so
    # nothing is planned (and explain says why) until a scan reads them.
    tagged = _s3_policy(tmp_path, proxy, run, '      - when: "tag.tier == x"\n        place: [s3, hot]\n')
    assert _copies(cli, tagged) == set()
    explained = json.loads(_ok(cli("-c", str(tagged), "explain", "d/x.bin", "--json")).out)
    assert explained["decision"] is None
    assert "tag.tier needs the object's tags, not known on [s3]" in explained["undecided"]
    assert explained["facts"]["tags"] is None
    proxy.log.clear()
    _ok(cli("-c", str(tagged), "scan"))
    assert _requests(proxy) == (0, 2)  # only the tags: mtimes and versions are known
    assert _copies(cli, tagged) == {"s3->hot d/x.bin"}
    explained = json.loads(_ok(cli("-c", str(tagged), "explain", "d/x.bin", "--json")).out)
    assert explained["facts"]["tags"] == {"tier": "x"} and explained["undecided"] is None


# -- GCS: custom metadata ---------------------------------------------------------------------
def _gcs_upload(server: GcsEmulator, name: str, data: bytes, metadata: dict[str, str]) -> None:
    resource = json.dumps({"name": name, "metadata": metadata})
    body = (
        (
            f"--B\r\nContent-Type: application/json\r\n\r\n{resource}\r\n"
            "--B\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + b"\r\n--B--"
    )
    response = requests.post(
        f"{server.endpoint_url}/upload/storage/v1/b/{BUCKET}/o",
        params={"uploadType": "multipart"},
        data=body,
        headers={"Content-Type": 'multipart/related; boundary="B"'},
        timeout=30,
    )
    response.raise_for_status()


def _gcs_set_metadata(server: GcsEmulator, name: str, metadata: dict[str, str]) -> None:
    url = f"{server.endpoint_url}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}"
    requests.patch(url, json={"metadata": metadata}, timeout=30).raise_for_status()


def test_gcs_custom_metadata_chooses_the_plan_and_a_change_replans(tmp_path: Path, gcs: GcsEmulator, cli):
    run = f"g{time.time_ns()}"
    _gcs_upload(gcs, f"{run}/d/a.bin", b"a", {"class": "hot"})
    _gcs_upload(gcs, f"{run}/d/b.bin", b"b", {"class": "cold"})
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  gcs:
    url: "gs://{BUCKET}/{run}"
    options: {{endpoint_url: '{gcs.endpoint_url}', token: anon, project: {PROJECT}}}
  hot: {{url: ./hot}}
datasets:
  d: {{prefix: d/, home: gcs}}
policies:
  - name: p
    dataset: d
    rules:
      - when: 'meta.class == "hot" and tag.anything == ""'
        place: [gcs, hot]
      - when: "true"
        place: [gcs]
"""
    )
    _ok(cli("-c", str(config), "scan"))
    assert _copies(cli, config) == {"gcs->hot d/a.bin"}
    _gcs_set_metadata(gcs, f"{run}/d/b.bin", {"class": "hot"})  # a metadata-only change
    scanned = json.loads(_ok(cli("-c", str(config), "scan", "--json")).out)
    assert sum(r["changed"] for r in scanned if r["tier"] == "gcs") == 1
    assert _copies(cli, config) == {"gcs->hot d/a.bin", "gcs->hot d/b.bin"}


# -- local tiers: user.* xattrs ---------------------------------------------------------------------
def test_local_xattrs_choose_the_plan_and_survive_copies(tmp_path: Path, cli):
    now = time.time()
    for name in ("keep", "other"):
        write_file(tmp_path / "hot", f"d/{name}.log", name.encode(), now - DAY)
    os.setxattr(tmp_path / "hot" / "d" / "keep.log", "user.keep", b"yes")
    config = tmp_path / "policies.yaml"
    config.write_text(
        """
version: 1
tiers:
  hot: {url: ./hot}
  warm: {url: ./warm}
datasets:
  d: {prefix: d/, home: hot}
policies:
  - name: p
    dataset: d
    rules:
      - when: 'meta.keep == "yes"'
        place: [hot, warm]
      - when: "true"
        place: [hot]
"""
    )
    _ok(cli("-c", str(config), "scan"))
    assert _copies(cli, config) == {"hot->warm d/keep.log"}
    applied = json.loads(_ok(cli("-c", str(config), "apply", "--yes", "--json")).out)
    assert applied["failed"] == 0
    # The copy carries the object's metadata in the index; the written file has no xattr,
    # and the union of both copies still says keep=yes: nothing more to do.
    with Index.open(str(tmp_path / ".tierctl" / "index.db")) as index:
        warm = next(p for p in index.placements("d/keep.log") if p.tier == "warm")
    assert dict(warm.metadata or {}) == {"keep": "yes"}
    _ok(cli("-c", str(config), "scan"))
    assert _copies(cli, config) == set()
    assert cli("-c", str(config), "plan", "--detailed-exitcode").code == 0

    # An xattr change alone is a change: the object is planned again.
    os.setxattr(tmp_path / "hot" / "d" / "other.log", "user.keep", b"yes")
    os.removexattr(tmp_path / "hot" / "d" / "keep.log", "user.keep")
    scanned = json.loads(_ok(cli("-c", str(config), "scan", "--json")).out)
    assert {r["tier"]: r["changed"] for r in scanned} == {"hot": 2, "warm": 0}
    plan = json.loads(_ok(cli("-c", str(config), "plan", "--json")).out)
    assert {(a["op"], a["target"], a["key"]) for a in plan["actions"]} == {
        ("copy", "warm", "d/other.log"),
        ("delete", "warm", "d/keep.log"),
    }


# -- the index: merge, copies ---------------------------------------------------------------------
def _entry(key: str, **kw: Any) -> Entry:
    return Entry(key, kw.pop("size", 3), kw.pop("mtime", 1000.0), **kw)


def test_index_merge_tags_and_metadata(tmp_path: Path):
    with Index.open(str(tmp_path / "i.db")) as index:
        first = [_entry("a", tags={"t": "1"}, metadata={}), _entry("b", atime=5.0), _entry("c", tags={})]
        index.scan_tier("d", "x", "", first, 10.0)
        index.record_verified("d", "a", "x", "crc32c:00", 11.0)
        before = index.conn.total_changes
        report = index.scan_tier("d", "x", "", first, 12.0)
        assert (report.changed, report.unchanged) == (0, 3)
        assert index.conn.total_changes == before  # a no-op re-scan writes nothing

        # A tag change alone: changed, verification kept; an entry without tags keeps them;
        # first knowledge of tags is no change; new content without them makes them unknown.
        again = [
            _entry("a", tags={"t": "2"}),
            _entry("b", tags={"k": "v"}, metadata={"m": "1"}),
            _entry("c", size=4),
        ]
        report = index.scan_tier("d", "x", "", again, 13.0)
        assert (report.changed, report.unchanged) == (2, 1)
        rows = {p.key: p for p in index.placements("a") + index.placements("b") + index.placements("c")}
        assert dict(rows["a"].tags or {}) == {"t": "2"} and dict(rows["a"].metadata or {}) == {}
        assert rows["a"].verified_at == 11.0 and rows["a"].changed_at == 13.0
        assert dict(rows["b"].tags or {}) == {"k": "v"} and rows["b"].changed_at is None
        assert rows["b"].atime == 5.0  # an entry without atime keeps the recorded one
        assert rows["c"].tags is None and rows["c"].metadata is None

        index.scan_tier("d", "x", "", [_entry("a"), _entry("b", size=9), _entry("c", size=4)], 14.0)
        b = index.placements("b")[0]
        assert b.atime == 5.0 and b.tags is None  # new content: atime kept, tags unknown


def test_record_copy_carries_the_source_metadata(tmp_path: Path):
    with Index.open(str(tmp_path / "i.db")) as index:
        index.scan_tier("d", "a", "", [_entry("k", tags={"t": "a"}, metadata={"m": "a"})], 1.0)
        index.scan_tier("d", "b", "", [_entry("k", tags={"t": "b"}, metadata={"m": "b"})], 1.0)
        index.scan_tier("d", "old", "", [_entry("k", size=1, tags={"t": "old"})], 1.0)
        index.record_copy("d", "k", "c", _entry("k"), "crc32c:00", 2.0, source="b")
        index.record_copy("d", "k", "e", _entry("k"), "crc32c:00", 2.0)  # no source: a same-content copy
        index.record_copy("d", "k", "f", _entry("k", tags={"own": "1"}), "crc32c:00", 2.0, source="b")
        got = {p.tier: (p.tags, p.metadata) for p in index.placements("k")}
    assert got["c"] == ({"t": "b"}, {"m": "b"})
    assert got["e"] == ({"t": "a"}, {"m": "a"})
    assert got["f"] == ({"own": "1"}, {"m": "b"})


# -- evaluation ------------------------------------------------------------------------------------
CASES = [
    # (condition, tags, expected): an absent key reads as "", so != holds for it.
    ('tag.team == "ml"', {"team": "ml"}, True),
    ('tag.team == "ml"', {}, False),
    ('tag.team != "ml"', {}, True),
    ('tag.team != "ml"', {"team": "ml"}, False),
    ('tag.team == ""', {}, True),
    ('tag.team != ""', {"team": "x"}, True),
    ('tag.team ~ "m*"', {"team": "ml"}, True),
    ('not tag.team == "ml"', {}, True),
    ('tag.app.tier == "cold"', {"app.tier": "cold"}, True),  # dotted keys
    ('tag.team == "ml" or age > 1d', None, "unknown"),
    ('age > 1d and tag.team == "ml"', None, False),  # decided before the tags are needed
    ('tag.Team == "ml"', {"team": "ml"}, False),  # keys are case-sensitive
]


@pytest.mark.parametrize(("condition", "tags", "expected"), CASES)
def test_condition_on_tags(condition: str, tags: dict[str, str] | None, expected: object):
    facts = expr.Facts(age=3600.0, size=1, tags=tags, meta={})
    node = expr.parse(condition)
    if expected == "unknown":
        with pytest.raises(expr.UnknownFact):
            node.evaluate(facts)
    else:
        assert node.evaluate(facts) is expected


POLICY = """
version: 1
tiers:
  a: ./a
  b: ./b
  c: ./c
datasets:
  d: {prefix: d/, home: a}
classes:
  tagged: 'tag.keep == "yes"'
policies:
  - name: p
    dataset: d
    rules:
      - class: tagged
        place: [a, b]
      - when: 'meta.owner == "ml"'
        place: [a, c]
      - when: "true"
        place: [a]
"""


def _object(*placements: Placement) -> ObjectSnapshot:
    return ObjectSnapshot("d", "d/k", placements, 1.0)


def _placement(tier: str, tags: dict[str, str] | None, meta: dict[str, str] | None) -> Placement:
    return Placement("d", "d/k", tier, 10, 1000.0, first_seen=1.0, tags=tags, metadata=meta)


def test_copies_merge_with_the_first_declared_tier_winning():
    config = parse_config(POLICY, "/p.yaml")
    assert metadata_wanted(config, "d") == {"tags", "metadata"}  # class references count
    obj = _object(
        _placement("c", {"keep": "no"}, {"owner": "ml"}),
        _placement("a", {"keep": "yes"}, {}),
    )
    decision = decide(config, obj, obj.placements[1], 2000.0)
    assert decision is not None and decision.desired == ("a", "b")
    assert decision.facts.tags == {"keep": "yes"} and decision.facts.meta == {"owner": "ml"}
    # One copy whose tags are unknown: the first rule cannot be evaluated, nothing is decided.
    unknown = _object(_placement("a", {"keep": "yes"}, {}), _placement("c", None, {}))
    assert decide(config, unknown, unknown.placements[0], 2000.0) is None
    # Metadata known everywhere, tags everywhere: a later rule decides as usual.
    plain = _object(_placement("a", {}, {"owner": "ml"}))
    decision = decide(config, plain, plain.placements[0], 2000.0)
    assert decision is not None and decision.desired == ("a", "c")
