"""``tier://``: the fsspec filesystem over the index, against local tiers, moto's S3 server
(GLACIER included), the GCS emulator, the WebHDFS server and the rclone binary.

Results are checked on the stores themselves (files, boto3) and in the index's SQLite file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.tests.abstract import AbstractFixtures, AbstractGetTests

from tierctl import api
from tierctl.errors import ConfigError
from tierctl.movers.base import Mover
from tierctl.movers.gcs import GCSMover
from tierctl.movers.local import LocalMover
from tierctl.movers.rclone import RcloneMover
from tierctl.movers.s3 import S3Mover
from tierctl.movers.webhdfs import WebHDFSMover
from tierctl.tierfs import ArchivedOnly, NotInNamespace, ReadOnlyNamespace, TierFileSystem

from .conftest import DAY, write_file
from .servers.gcs_server import PROJECT, GcsEmulator
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3
from .servers.webhdfs import WebHDFSServer

BUCKET = "tierctl-tierfs"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as server:
        server.create_bucket(BUCKET)
        yield server


def s3_options(server: MotoS3) -> dict[str, Any]:
    return {"endpoint_url": server.endpoint_url, "region": REGION, "key": ACCESS_KEY, "secret": SECRET_KEY}


def s3_tier(server: MotoS3, run: str, storage_class: str | None = None) -> str:
    doc: dict[str, Any] = {"url": f"s3://{BUCKET}/{run}", "options": s3_options(server)}
    if storage_class:
        doc["storage_class"] = storage_class
    return json.dumps(doc)


def put_s3(
    server: MotoS3, run: str, key: str, body: bytes, *, age_days: float, storage_class: str = "STANDARD"
):
    server.client().put_object(
        Bucket=BUCKET,
        Key=f"{run}/{key}",
        Body=body,
        StorageClass=storage_class,
        Metadata={"mtime": str(time.time() - age_days * DAY)},
    )


def write_config(root: Path, body: str) -> str:
    path = root / "policies.yaml"
    path.write_text("version: 1\n" + body)
    return str(path)


LOCAL = """\
tiers:
  hot:  {url: ./hot}
  warm: {url: ./warm}
  cold: {url: ./cold}
datasets:
  logs: {prefix: logs/}
  other: {prefix: other/}
"""


def tierfs(config: str) -> TierFileSystem:
    return fsspec.filesystem("tier", config=config)


def placements(config: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(key, tier) -> row, read from the index file directly."""
    conn = sqlite3.connect(api.load(config).index_path)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM placements WHERE state = 'present'").fetchall()
    conn.close()
    return {(r["key"], r["tier"]): dict(r) for r in rows}


# -- reading -----------------------------------------------------------------------------------
def test_reads_the_current_content_from_the_best_placement(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL)
    now = time.time()
    write_file(tmp_path / "cold", "logs/a.log", b"a on cold", now - 9 * DAY)
    write_file(tmp_path / "warm", "logs/a.log", b"a on cold", now - 9 * DAY)
    write_file(tmp_path / "hot", "logs/b.log", b"old b", now - 9 * DAY)  # a stale copy
    write_file(tmp_path / "cold", "logs/b.log", b"newer b", now - 1 * DAY)
    api.scan(api.load(config))

    with fsspec.open("tier://logs/a.log", "rb", config=config) as f:
        assert f.read() == b"a on cold"
        assert f.tier == "warm"  # local tiers in the policy file's order
    with fsspec.open("tier://logs/b.log", "rb", config=config) as f:
        assert f.read() == b"newer b"  # never the stale copy on hot
        assert f.tier == "cold"
    with fsspec.open("tier://logs/b.log", "rt", config=config) as text:
        assert text.read() == "newer b"
    assert tierfs(config).cat("tier://logs/a.log", start=2, end=4) == b"on"


def test_a_placement_gone_before_or_during_the_read_falls_back_to_the_next(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL)
    data = bytes(range(256)) * 4096  # 1 MiB
    mtime = time.time() - DAY
    for tier in ("hot", "warm"):
        write_file(tmp_path / tier, "logs/big.bin", data, mtime)
    api.scan(api.load(config))
    fs = tierfs(config)

    with fs.open("tier://logs/big.bin", block_size=64 * 1024) as f:
        first = f.read(100_000)
        assert f.tier == "hot"
        (tmp_path / "hot/logs/big.bin").unlink()  # e.g. an apply moved it meanwhile
        rest = f.read()
        assert f.tier == "warm"
    assert first + rest == data
    assert fs.cat("tier://logs/big.bin") == data  # the index still names hot: skipped


def test_seeking_reads_zip_and_csv_through_tier_urls(tmp_path: Path) -> None:
    """zipfile seeks to the central directory at the end first, as parquet readers seek to
    the footer: ranged reads on a remote tier, and the stdlib readers get the same bytes."""
    config = write_config(tmp_path, LOCAL)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(50):
            archive.writestr(f"part-{i}.csv", "id,value\n" + "".join(f"{j},{i * j}\n" for j in range(200)))
    write_file(tmp_path / "cold", "logs/2026/bundle.zip", buffer.getvalue(), time.time())
    api.scan(api.load(config))

    with fsspec.open("tier://logs/2026/bundle.zip", config=config) as f, zipfile.ZipFile(f) as archive:
        assert len(archive.namelist()) == 50
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("part-7.csv"), "utf-8")))
    assert rows[3] == {"id": "3", "value": "21"}


def test_dask_reads_text_through_tier_urls(tmp_path: Path) -> None:
    """An fsspec-aware application (dask.bag, installed with the test extra) reads tier://
    URLs, globs included, with no knowledge of which tier holds each file."""
    import dask
    import dask.bag

    config = write_config(tmp_path, LOCAL)
    write_file(tmp_path / "warm", "logs/t1.csv", b"a,b\n1,2\n3,4\n", time.time())
    write_file(tmp_path / "cold", "logs/t2.csv", b"a,b\n5,6\n", time.time())
    api.scan(api.load(config))
    lines = dask.bag.read_text("tier://logs/t*.csv", storage_options={"config": config})
    with dask.config.set(scheduler="synchronous"):
        rows = sorted(line.strip() for line in lines.compute())
    assert rows == ["1,2", "3,4", "5,6", "a,b", "a,b"]


@pytest.mark.parametrize("store", ["local", "s3", "gcs", "webhdfs", "rclone"])
def test_movers_read_ranges(store: str, tmp_path: Path, moto: MotoS3) -> None:
    """read_range on every mover: native ranges where the store serves them, the streaming
    default on rclone; the range may run past the end."""
    data = bytes(range(256)) * 300
    mover: Mover
    with contextlib.ExitStack() as stack:
        if store == "local":
            mover = LocalMover(f"file://{tmp_path}/tier")
        elif store == "s3":
            mover = S3Mover(f"s3://{BUCKET}/r{time.time_ns()}", **s3_options(moto))
        elif store == "gcs":
            gcs = stack.enter_context(GcsEmulator())
            gcs.create_bucket(BUCKET)
            mover = GCSMover(f"gs://{BUCKET}/r", endpoint_url=gcs.endpoint_url, token="anon", project=PROJECT)
        elif store == "webhdfs":
            server = stack.enter_context(WebHDFSServer(tmp_path / "hdfs"))
            mover = WebHDFSMover(f"{server.url}/data/tier", user="hdfs")
        else:
            mover = RcloneMover(f"s3://{BUCKET}/r{time.time_ns()}", **s3_options(moto))
        mover.write("d/x.bin", [data], size=len(data), mtime=time.time())
        assert mover.capabilities.ranged_reads == (store != "rclone")
        assert mover.read_range("d/x.bin", 0, 10) == data[:10]
        assert mover.read_range("d/x.bin", 70_000, 70_123) == data[70_000:70_123]
        assert mover.read_range("d/x.bin", len(data) - 5, len(data) + 100) == data[-5:]
        assert mover.read_range("d/x.bin", 5, 5) == b""
        mover.close()


# -- the namespace -------------------------------------------------------------------------------
def test_listing_shows_the_logical_tree_across_tiers(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL)
    now = time.time()
    layout = {
        "hot": ["logs/2026/11/01.log", "logs/2026/11/02.log", "logs/top.log"],
        "warm": ["logs/2026/10/30.log", "logs/2025.log", "logs/a.log", "logs/b.log", "logs/c.log"],
        "cold": ["logs/2025/01/01.log", "logs/2026/11/01.log", "logs/z.log", "other/x"],
    }
    for tier, keys in layout.items():
        for key in keys:
            write_file(tmp_path / tier, key, b"x" * 3, now - DAY)
    api.scan(api.load(config))
    fs = tierfs(config)

    assert fs.ls("tier://", detail=False) == ["logs", "other"]
    assert fs.ls("tier://logs/", detail=False) == [  # in key order: "2025.log" < "2025/"
        "logs/2025.log",
        "logs/2025",
        "logs/2026",
        "logs/a.log",
        "logs/b.log",
        "logs/c.log",
        "logs/top.log",
        "logs/z.log",
    ]
    assert fs.ls("tier://logs/2026", detail=False) == ["logs/2026/10", "logs/2026/11"]
    (one, two) = fs.ls("tier://logs/2026/11")
    assert one["name"] == "logs/2026/11/01.log" and one["tiers"] == ["cold", "hot"] and one["size"] == 3
    assert two["tiers"] == ["hot"]
    assert fs.info("tier://logs/2026")["type"] == "directory"
    assert fs.isfile("tier://logs/2025.log") and fs.isdir("tier://logs/2025")
    assert fs.find("tier://logs/2026") == [
        "logs/2026/10/30.log",
        "logs/2026/11/01.log",
        "logs/2026/11/02.log",
    ]
    assert len(fs.find("tier://")) == 11
    assert fs.glob("tier://logs/2026/*/0*.log") == ["logs/2026/11/01.log", "logs/2026/11/02.log"]
    assert fs.du("tier://logs/2026") == 9
    assert not fs.exists("tier://logs/nothing")
    with pytest.raises(FileNotFoundError):
        fs.ls("tier://logs/nothing")
    with pytest.raises(NotInNamespace) as info:
        fs.info("tier://nodataset/x")
    assert "logs, other" in info.value.hint


def test_tier_urls_are_read_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL)
    write_file(tmp_path / "hot", "logs/a.log", b"a", time.time())
    api.scan(api.load(config))
    fs = tierfs(config)
    for attempt in (
        lambda: fs.open("tier://logs/new.log", "wb"),
        lambda: fs.pipe("tier://logs/a.log", b"overwritten"),
        lambda: fs.rm("tier://logs/a.log"),
        lambda: fs.mkdir("tier://logs/dir"),
    ):
        with pytest.raises(ReadOnlyNamespace):
            attempt()
    assert (tmp_path / "hot/logs/a.log").read_bytes() == b"a"
    with pytest.raises(IsADirectoryError):
        fs.open("tier://logs")


# -- S3, archived objects, last access ------------------------------------------------------------
def s3_config(tmp_path: Path, moto: MotoS3, run: str, extra: str = "", rules: str = "") -> str:
    return write_config(
        tmp_path,
        f"""\
tiers:
  cache: {{url: ./cache}}
  hot: {{url: ./hot}}
  s3: {s3_tier(moto, run)}
  glacier: {s3_tier(moto, run, "GLACIER")}
datasets:
  events: {{prefix: events/}}
{extra}
policies:
  - name: events
    dataset: events
    rules:
{rules or '      - {when: "true", place: [s3]}'}
""",
    )


def test_s3_reads_and_archived_only_objects_say_how_to_restore(tmp_path: Path, moto: MotoS3) -> None:
    run = f"r{time.time_ns()}"
    put_s3(moto, run, "events/2026/11/01.csv", b"id\n1\n", age_days=3)
    put_s3(moto, run, "events/2020/01/01.csv", b"old\n", age_days=2000, storage_class="GLACIER")
    config = s3_config(tmp_path, moto, run)
    api.scan(api.load(config))
    fs = tierfs(config)

    with fs.open("tier://events/2026/11/01.csv") as f:
        assert f.read() == b"id\n1\n" and f.tier == "s3"
    assert fs.info("tier://events/2020/01/01.csv")["readable"] is False
    with pytest.raises(ArchivedOnly) as raised:
        fs.open("tier://events/2020/01/01.csv")
    error = raised.value
    assert isinstance(error, PermissionError)  # an OSError for fsspec applications
    assert "glacier (GLACIER, archived)" in error.message
    assert "tierctl apply" in error.hint and "restore" in error.hint
    assert "place: [cache, glacier]" in error.hint  # the first readable tier, for the example


def test_reads_are_recorded_and_last_access_rules_plan_by_them_on_s3(tmp_path: Path, moto: MotoS3) -> None:
    """S3 keeps no access time: tier:// records it, so `last_access > 30d` archives only the
    object nobody read (without the record both would look idle for their whole age)."""
    run = f"r{time.time_ns()}"
    for name in ("read", "unread"):
        put_s3(moto, run, f"events/{name}.csv", b"x,y\n", age_days=100)
    rules = '      - {when: "last_access > 30d", place: [glacier]}\n      - {when: "true", place: [s3]}'
    config = s3_config(tmp_path, moto, run, rules=rules)
    cfg = api.load(config)
    api.scan(cfg)

    def transitions() -> list[str]:
        # allow_costly: the cost guard would keep 4-byte objects out of GLACIER
        return sorted(a.key for a in api.plan(cfg, allow_costly=True).actions if a.op == "transition")

    assert transitions() == ["events/read.csv", "events/unread.csv"]
    before = time.time()
    fs = tierfs(config)
    with fs.open("tier://events/read.csv") as f:
        f.read()
    assert fs.backend.access.pending() == 1  # gathered in memory, not one write per read
    assert fs.flush_reads()
    assert placements(config)[("events/read.csv", "s3")]["atime"] >= before
    assert placements(config)[("events/unread.csv", "s3")]["atime"] is None
    assert transitions() == ["events/unread.csv"]
    api.scan(cfg)  # a scan of a store without access times keeps the recorded one
    assert transitions() == ["events/unread.csv"]


def test_reads_are_not_blocked_by_a_busy_index(tmp_path: Path) -> None:
    config = write_config(tmp_path, LOCAL)
    for i in range(200):
        write_file(tmp_path / "warm", f"logs/{i:03}.log", b"data", time.time() - DAY)
    cfg = api.load(config)
    api.scan(cfg)
    fs = tierfs(config)
    blocker = sqlite3.connect(cfg.index_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # what an apply's write holds
    try:
        started = time.perf_counter()
        for i in range(200):
            assert fs.cat(f"tier://logs/{i:03}.log") == b"data"
        elapsed = time.perf_counter() - started
        assert not fs.flush_reads(busy_timeout=0.05)  # kept for later, read not failed
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert elapsed < 5.0
    assert fs.flush_reads()
    recorded = [r["atime"] for (k, t), r in placements(config).items() if t == "warm"]
    assert len(recorded) == 200 and min(recorded) >= started - 60


# -- the read-through cache ------------------------------------------------------------------------
def test_cache_fills_serves_locally_and_evicts_least_recently_read(tmp_path: Path, moto: MotoS3) -> None:
    run = f"r{time.time_ns()}"
    for name in "abc":
        put_s3(moto, run, f"events/{name}.bin", name.encode() * 10, age_days=1)
    config = s3_config(tmp_path, moto, run, extra="cache: {tier: cache, max_size: 25}")
    cfg = api.load(config)
    write_file(tmp_path / "cache", "events/only-here.bin", b"o" * 5, time.time() - 300 * DAY)
    api.scan(cfg)  # only-here.bin: cached long ago, its other copies gone since
    fs = tierfs(config)

    with fs.open("tier://events/a.bin") as f:
        assert f.read() == b"a" * 10 and f.tier == "cache"
    assert (tmp_path / "cache/events/a.bin").read_bytes() == b"a" * 10
    assert placements(config)[("events/a.bin", "cache")]["verified_at"] is not None
    with fs.open("tier://events/a.bin") as f:  # the next read is local
        assert f.read() == b"a" * 10 and f.tier == "cache"
    fs.flush_reads()
    time.sleep(0.01)
    for name in "bc":
        assert fs.cat(f"tier://events/{name}.bin") == name.encode() * 10
        fs.flush_reads()

    cached = sorted(p.name for p in (tmp_path / "cache/events").iterdir())
    assert cached == ["b.bin", "c.bin", "only-here.bin"]  # a: least recently read of those with a copy
    rows = placements(config)
    assert ("events/a.bin", "cache") not in rows and ("events/a.bin", "s3") in rows
    assert moto.client().get_object(Bucket=BUCKET, Key=f"{run}/events/a.bin")["Body"].read() == b"a" * 10
    assert fs.backend.cache is not None and fs.backend.cache.usage() == 25
    assert fs.cat("tier://events/a.bin") == b"a" * 10  # evicted: read again from s3 (and cached)


def test_policies_neither_count_nor_delete_cache_placements(tmp_path: Path, moto: MotoS3) -> None:
    run = f"r{time.time_ns()}"
    put_s3(moto, run, "events/kept.bin", b"k" * 10, age_days=1)
    put_s3(moto, run, "events/expired.bin", b"e" * 10, age_days=800)
    rules = (
        '      - {when: "age > 2y", delete: true}\n'
        '      - {when: "copies < 2", place: [s3, hot]}\n'
        '      - {when: "true", place: [s3]}'
    )
    config = s3_config(tmp_path, moto, run, extra="cache: {tier: cache, max_size: 1MiB}", rules=rules)
    cfg = api.load(config)
    api.scan(cfg)
    fs = tierfs(config)
    for name in ("kept", "expired"):
        with fs.open(f"tier://events/{name}.bin") as f:
            f.read()
            assert f.tier == "cache"
    plan = api.plan(cfg, force=True, allow_costly=True)
    actions = sorted((a.op, a.key, a.target) for a in plan.actions)
    assert actions == [
        ("copy", "events/kept.bin", "hot"),  # the cached copy does not count as a second copy
        ("delete", "events/expired.bin", "cache"),  # an expired object leaves the cache too
        ("delete", "events/expired.bin", "s3"),
    ]


@pytest.mark.parametrize(
    ("cache", "message"),
    [
        ("{tier: s3, max_size: 1GiB}", "must be a local tier"),
        ("{tier: cahce, max_size: 1GiB}", "unknown tier 'cahce'"),
        ("{tier: cache}", "cache needs `max_size`"),
        ("{tier: cache, max_size: 12 parsecs}", "bad size"),
        ("{tier: cache, max_size: 1GiB, from: [cache]}", "cannot be one of the tiers it caches"),
        ("{tier: hot, max_size: 1GiB}", "places objects on 'hot', the cache tier"),
    ],
)
def test_cache_section_errors_are_located(tmp_path: Path, moto: MotoS3, cache: str, message: str) -> None:
    rules = '      - {when: "true", place: [s3, hot]}'
    config = s3_config(tmp_path, moto, "r", extra=f"cache: {cache}", rules=rules if "hot" in cache else "")
    with pytest.raises(ConfigError) as raised:
        api.load(config)
    assert message in str(raised.value)
    assert raised.value.location is not None and raised.value.location.line > 1


# -- fsspec's own abstract tests ------------------------------------------------------------------------
class TestFsspecAbstractGet(AbstractFixtures, AbstractGetTests):
    """fsspec's ``get`` suite: the read side of its abstract tests (copy, mv, put, pipe and
    open write through the filesystem, which tier:// refuses). The scenarios are written to a
    local tier and scanned instead of being created through the filesystem."""

    @pytest.fixture
    def tier_root(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("tierfs-abstract")
        write_config(
            root, "tiers:\n  hot: {url: ./hot}\n  cold: {url: ./cold}\ndatasets:\n  d: {prefix: data/}\n"
        )
        return root

    @pytest.fixture
    def fs(self, tier_root: Path) -> TierFileSystem:
        return tierfs(str(tier_root / "policies.yaml"))

    @pytest.fixture
    def fs_path(self) -> str:
        return "d/base"

    @pytest.fixture
    def fs_join(self) -> Any:
        return lambda *parts: "/".join(p.rstrip("/") for p in parts)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # folders exist only as key prefixes

    def _scenario(self, tier_root: Path, fs: TierFileSystem, files: dict[str, bytes]) -> str:
        for i, (name, data) in enumerate(sorted(files.items())):
            tier = ("hot", "cold")[i % 2]  # the scenario spread over two tiers
            write_file(tier_root / tier, f"data/base/source/{name}", data, time.time())
        api.scan(fs.config)
        return "d/base/source"

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, tier_root: Path, fs: TierFileSystem) -> str:
        names = ["file1", "file2", "subdir/subfile1", "subdir/subfile2", "subdir/nesteddir/nestedfile"]
        return self._scenario(tier_root, fs, dict.fromkeys(names, b""))

    @pytest.fixture
    def fs_glob_edge_cases_files(self, tier_root: Path, fs: TierFileSystem) -> str:
        names = ["file1", "file2"] + [
            f"subdir{i}/{leaf}" for i in range(2) for leaf in ("subfile1", "subfile2", "nesteddir/nestedfile")
        ]
        return self._scenario(tier_root, fs, dict.fromkeys(names, b""))

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, tier_root: Path, fs: TierFileSystem) -> str:
        return self._scenario(tier_root, fs, {"subdir.txt": b"", "subdir/subfile.txt": b""})

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, tier_root: Path, fs: TierFileSystem) -> str:
        from hashlib import md5

        files = {f"{md5(str(i).encode()).hexdigest()}.txt": str(i).encode() for i in range(10)}
        return self._scenario(tier_root, fs, files)

    def test_get_directory_recursive(
        self,
        fs: TierFileSystem,
        fs_join: Any,
        fs_path: str,
        local_fs: Any,
        local_join: Any,
        local_target: str,
    ) -> None:
        """fsspec's case makes its source with ``fs.mkdir`` and ``fs.touch``; here those two
        write to a tier and scan, and the rest of the case runs unchanged on tier://."""
        super().test_get_directory_recursive(
            _WritesThroughATier(fs), fs_join, fs_path, local_fs, local_join, local_target
        )


class _WritesThroughATier:
    """tier:// for fsspec's test code, except that mkdir/touch put files on the first tier."""

    def __init__(self, fs: TierFileSystem) -> None:
        self._fs = fs

    def mkdir(self, path: str, **kwargs: Any) -> None:
        pass  # folders are implied by keys

    def touch(self, path: str, **kwargs: Any) -> None:
        config = self._fs.config
        root = Path(config.tiers[next(iter(config.tiers))].url.removeprefix("file://"))
        dataset, _, rest = path.partition("/")
        write_file(root, config.datasets[dataset].prefix + rest, b"", time.time())
        api.scan(config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)
