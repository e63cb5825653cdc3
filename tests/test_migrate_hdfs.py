"""``hdfs://`` tiers end to end: the real refusal where libhdfs cannot load, the policy
loader's refusal of writes, and `tierctl migrate` from an ``hdfs://`` source to moto's S3
server and to a local folder.

No NameNode runs here. The migrations use the registry's public seam: for the duration of a
test the ``hdfs`` scheme names :class:`LocalHdfsMover`, the production ``HdfsMover`` whose
``connect`` returns a local pyarrow file system (tests/movers/hdfs_local.py). Source files
are written straight into that folder, as files a cluster already holds.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tierctl.index import Index
from tierctl.movers import registry

from .conftest import CliResult, run_tierctl, write_file
from .movers.hdfs_local import LocalHdfsMover, folder_of
from .servers.moto_process import ACCESS_KEY, REGION, SECRET_KEY, MotoS3Process

BUCKET = "lake"
SOURCE = "hdfs://namenode:8020/warehouse/events"
MTIME = 1_700_000_000.25  # a fraction: the local file system keeps it, and so must every copy


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``hdfs://`` URLs open :class:`LocalHdfsMover` over ``tmp_path/cluster``."""
    root = tmp_path / "cluster"
    monkeypatch.setattr(LocalHdfsMover, "cluster_root", root)
    spec = dataclasses.replace(registry._SCHEMES["hdfs"], target="tests.movers.hdfs_local:LocalHdfsMover")
    monkeypatch.setitem(registry._SCHEMES, "hdfs", spec)
    return root


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Process]:
    with MotoS3Process() as server:
        server.create_bucket(BUCKET)
        yield server


def make_tree(cluster: Path, count: int) -> dict[str, bytes]:
    files = {}
    root = folder_of(cluster, SOURCE)
    for i in range(count):
        key = f"d{i // 10:02d}/part-{i:03d}.parquet"
        files[key] = f"{key}:{i}".encode() * (i + 1)
        write_file(root, key, files[key], MTIME + i)
    return files


def s3_args(moto: MotoS3Process) -> list[str]:
    options = {"endpoint_url": moto.endpoint_url, "region": REGION, "key": ACCESS_KEY, "secret": SECRET_KEY}
    return [a for k, v in options.items() for a in ("--dst-option", f"{k}={v}")]


# -- where libhdfs cannot load: the real failure, through the CLI ---------------------------------
POLICY = """\
version: 1
tiers:
  hdfs: {url: "hdfs://namenode:8020/warehouse"}
  s3: {url: "./s3"}
datasets:
  events: {prefix: "events/", home: hdfs}
policies:
  - name: offload
    dataset: events
    rules:
      - {when: "age >= 7d", place: [s3]}
      - {when: "true", place: [hdfs]}
"""


def test_scan_says_what_to_install_where_libhdfs_cannot_load(tmp_path: Path) -> None:
    """pyarrow is installed, this machine has no libhdfs: HadoopFileSystem(...) fails for real,
    once with no JAVA_HOME (libjvm) and once with a JDK's JAVA_HOME (libhdfs)."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "ARROW_LIBHDFS_DIR", "HADOOP_HOME")}
    jdks = sorted(glob.glob("/usr/lib/jvm/*/lib/server/libjvm.so"))
    runs = [("libjvm", env)]
    if jdks:
        runs.append(("libhdfs", {**env, "JAVA_HOME": str(Path(jdks[0]).parents[2])}))
    for missing, run_env in runs:
        result = subprocess.run(
            [sys.executable, "-m", "tierctl", "-c", "policy.yaml", "scan"],
            cwd=tmp_path,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        error, hint = result.stderr.strip().splitlines()
        assert error.startswith("error: hdfs://namenode:8020/warehouse: hdfs:// needs libhdfs")
        assert f"Unable to load {missing}" in error
        for needed in ("JAVA_HOME", "ARROW_LIBHDFS_DIR", "CLASSPATH=$(hadoop classpath --glob)"):
            assert needed in hint
        assert hint.endswith("webhdfs://namenode:9870/warehouse")


def test_scan_without_pyarrow_names_the_extra(tmp_path: Path) -> None:
    """As if pyarrow were not installed (``sys.modules['pyarrow'] = None`` makes its import
    fail): the install hint names tierctl's ``hdfs`` extra."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    code = "import sys; sys.modules['pyarrow'] = None; from tierctl.cli.main import run; run(sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, "-c", "policy.yaml", "scan"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pyarrow" in result.stderr and "pip install 'tierctl[hdfs]'" in result.stderr


# -- writes onto hdfs:// are refused when the policy loads -----------------------------------------
def test_a_policy_that_would_write_to_hdfs_is_refused_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(POLICY.replace("home: hdfs", "home: s3"))
    result = run_tierctl("-c", "policy.yaml", "validate", cwd=str(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    out = result.stdout + result.stderr
    assert "policy.yaml:12:31: policy 'offload' rule 2 would copy objects onto tier 'hdfs'" in out
    assert "webhdfs://" in out
    # As the dataset's home the same tier is fine: place keeps what it holds.
    (tmp_path / "policy.yaml").write_text(POLICY)
    assert run_tierctl("-c", "policy.yaml", "validate", cwd=str(tmp_path)).returncode == 0


def test_migrate_to_hdfs_is_refused_before_connecting(tmp_path: Path, cli: Callable[..., CliResult]) -> None:
    write_file(tmp_path / "src", "a.bin", b"a", MTIME)
    result = cli("migrate", str(tmp_path / "src"), "hdfs://namenode:8020/warehouse/in")
    assert result.code == 1
    assert "would copy objects onto tier 'destination', which tierctl cannot write to" in result.err
    assert "libhdfs" in result.err and "Unable to load" not in result.err  # no connection tried


# -- migrations from hdfs:// (the local pyarrow file system standing in for the cluster) ------------
def test_migrate_hdfs_to_s3_copies_verifies_records_then_moves(
    cluster: Path, moto: MotoS3Process, cli: Callable[..., CliResult]
) -> None:
    files = make_tree(cluster, 40)
    args = ["migrate", SOURCE, f"s3://{BUCKET}/from-hdfs", *s3_args(moto), "--json"]
    first = cli(*args)
    assert first.code == 0, first.err
    report = json.loads(first.out)
    total = sum(map(len, files.values()))
    assert report["copied"] == report["listed"] == {"files": 40, "bytes": total}
    client = moto.client()
    for key, data in files.items():
        got = client.get_object(Bucket=BUCKET, Key=f"from-hdfs/{key}")
        assert got["Body"].read() == data
        assert abs(float(got["Metadata"]["mtime"]) - (MTIME + int(key[-11:-8]))) < 1e-6  # its age
    # The index holds both placements, the destination verified with the stream's digest.
    with Index.open(report["index"]) as index:
        placements = {p.tier: p for p in index.placements("d01/part-013.parquet")}
    assert set(placements) == {"source", "destination"}
    assert placements["destination"].verified_at is not None
    assert abs(placements["source"].mtime - (MTIME + 13)) < 1e-6
    assert abs(placements["destination"].mtime - placements["source"].mtime) < 1e-6
    # A re-run copies nothing; --delete-source then removes each source file, its copy verified.
    again = json.loads(cli(*args).out)
    assert again["up_to_date"]["files"] == 40 and not again.get("copied", {}).get("files")
    moved = cli(*args, "--delete-source")
    assert moved.code == 0, moved.err
    assert json.loads(moved.out)["deleted_from_source"]["files"] == 40
    assert [p for p in folder_of(cluster, SOURCE).rglob("*") if p.is_file()] == []
    assert len(client.list_objects_v2(Bucket=BUCKET, Prefix="from-hdfs/")["Contents"]) == 40


def test_migrate_hdfs_to_local_recopies_what_changed(
    cluster: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    files = make_tree(cluster, 12)
    destination = tmp_path / "nvme"
    assert cli("migrate", SOURCE, str(destination)).code == 0
    for key, data in files.items():
        copy = destination.joinpath(*key.split("/"))
        assert copy.read_bytes() == data
        assert abs(copy.stat().st_mtime - (MTIME + int(key[-11:-8]))) < 1e-6
    write_file(folder_of(cluster, SOURCE), "d00/part-004.parquet", b"rewritten", MTIME + 500)
    result = cli("migrate", SOURCE, str(destination), "--json")
    report = json.loads(result.out)
    assert (report["copied"]["files"], report["up_to_date"]["files"]) == (1, 11)
    assert hashlib.sha256(destination.joinpath("d00", "part-004.parquet").read_bytes()).hexdigest() == (
        hashlib.sha256(b"rewritten").hexdigest()
    )
