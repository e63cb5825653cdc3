"""`tierctl migrate --preserve`: mode, owner and group travel with the content.

Real components only: the WebHDFS protocol server (tests/servers/webhdfs.py), moto's S3
server in a child process, the GCS emulator, local folders. HDFS attributes are set and
read through the server (SETOWNER / SETPERMISSION over HTTP, ``file_status``).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tierctl.api_migrate import MigrateOptions, migrate

from .conftest import CliResult
from .servers.gcs_server import PROJECT, GcsEmulator
from .servers.moto_process import ACCESS_KEY, REGION, SECRET_KEY, MotoS3Process
from .servers.webhdfs import WebHDFSServer

BUCKET = "preserve"
MTIME = 1_700_000_000.0
FILES = {"a/one.csv": b"one,1\n", "a/two.csv": b"two,2\n" * 50, "b/three.bin": os.urandom(3000)}
# HDFS attributes of each file: (owner, group, permission). Owners that exist on this host.
HDFS_ATTRS = {
    "a/one.csv": ("nobody", "nogroup", "640"),
    "a/two.csv": ("root", "root", "600"),
    "b/three.bin": ("nobody", "root", "755"),
}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3Process]:
    with MotoS3Process() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsEmulator]:
    with GcsEmulator() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def hdfs(tmp_path: Path) -> Iterator[WebHDFSServer]:
    with WebHDFSServer(tmp_path / "hdfs", batch_size=2) as server:
        yield server


@pytest.fixture(autouse=True)
def _no_policy_file_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TIERCTL_CONFIG", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def hdfs_call(
    server: WebHDFSServer, method: str, path: str, op: str, user: str = "hdfs", **params: str
) -> None:
    response = requests.request(
        method, f"{server.http_url}{path}", params={"op": op, "user.name": user, **params}, timeout=10
    )
    response.raise_for_status()


def make_hdfs_tree(server: WebHDFSServer, base: str = "/warehouse/events") -> None:
    """FILES under ``base``, as a cluster holds them, with HDFS_ATTRS set by the superuser."""
    root = server.local_path(base)
    for key, data in FILES.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    for key, (owner, group, permission) in HDFS_ATTRS.items():
        hdfs_call(server, "PUT", f"{base}/{key}", "SETOWNER", owner=owner, group=group)
        hdfs_call(server, "PUT", f"{base}/{key}", "SETPERMISSION", permission=permission)


def opts(source: str, destination: str, tmp_path: Path, **extra: object) -> MigrateOptions:
    return MigrateOptions(
        source=source,
        destination=destination,
        source_options={"user": "hdfs"} if source.startswith("webhdfs") else {},
        state_dir=str(tmp_path / "state"),
        **extra,  # type: ignore[arg-type]
    )


def s3_options(server: MotoS3Process) -> dict[str, str]:
    return {"endpoint_url": server.endpoint_url, "region": REGION, "key": ACCESS_KEY, "secret": SECRET_KEY}


# -- WebHDFS -> local: modes and owners applied ----------------------------------------------------
def test_hdfs_to_local_applies_mode_owner_group(hdfs: WebHDFSServer, tmp_path: Path) -> None:
    make_hdfs_tree(hdfs)
    dst = tmp_path / "local"
    report = migrate(
        opts(f"{hdfs.url}/warehouse/events", str(dst), tmp_path, preserve=("mtime", "mode", "owner", "group"))
    )
    assert report.ok, report.to_dict()
    assert report.copied.files == 3 and report.attributes.applied == 3
    for key, (owner, group, permission) in local_ids().items():
        st = os.stat(dst / key)
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (int(permission, 8), owner, group), key
        assert st.st_mtime == MTIME
        assert (dst / key).read_bytes() == FILES[key]
    doc = report.to_dict()["preserve"]
    assert doc["native"] == ["mtime", "mode", "owner", "group"] and doc["metadata"] == []


def local_ids() -> dict[str, tuple[int, int, str]]:
    """HDFS_ATTRS with the names as this host's uid and gid."""
    return {
        key: (pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid, permission)
        for key, (owner, group, permission) in HDFS_ATTRS.items()
    }


def test_without_preserve_modes_are_the_writers(hdfs: WebHDFSServer, tmp_path: Path) -> None:
    """Only --preserve carries attributes: a plain migration leaves umask modes."""
    make_hdfs_tree(hdfs)
    dst = tmp_path / "plain"
    report = migrate(opts(f"{hdfs.url}/warehouse/events", str(dst), tmp_path))
    assert report.ok and report.copied.files == 3
    assert os.stat(dst / "a/two.csv").st_mode & 0o777 != 0o600
    assert os.stat(dst / "a/one.csv").st_uid == os.geteuid()


# -- re-runs: attributes never re-copy content; changed ones are set in place (DistCp -update -p)
def test_rerun_reapplies_changed_permissions_without_copying(hdfs: WebHDFSServer, tmp_path: Path) -> None:
    make_hdfs_tree(hdfs)
    dst = tmp_path / "local"
    options = opts(f"{hdfs.url}/warehouse/events", str(dst), tmp_path, preserve=("mtime", "mode", "group"))
    assert migrate(options).copied.files == 3
    hdfs_call(hdfs, "PUT", "/warehouse/events/a/one.csv", "SETPERMISSION", permission="604")
    hdfs_call(hdfs, "PUT", "/warehouse/events/b/three.bin", "SETOWNER", group="nogroup")
    hdfs.clear_requests()
    again = migrate(options)
    assert again.ok, again.to_dict()
    assert again.copied.files == 0 and again.attributes.updated == 2
    assert not any(op == "OPEN" for _, op, _ in hdfs.requests)  # no content read again
    assert not any(op == "GETFILESTATUS" for _, op, _ in hdfs.requests)  # from listings only
    assert os.stat(dst / "a/one.csv").st_mode & 0o777 == 0o604
    assert os.stat(dst / "b/three.bin").st_gid == grp.getgrnam("nogroup").gr_gid
    assert migrate(options).attributes.updated == 0  # and then it holds


def test_dry_run_counts_attribute_updates(hdfs: WebHDFSServer, tmp_path: Path) -> None:
    make_hdfs_tree(hdfs)
    dst = tmp_path / "local"
    options = opts(f"{hdfs.url}/warehouse/events", str(dst), tmp_path, preserve=("mode",))
    migrate(options)
    hdfs_call(hdfs, "PUT", "/warehouse/events/a/two.csv", "SETPERMISSION", permission="644")
    dry = migrate(MigrateOptions(**{**options.__dict__, "dry_run": True}))
    assert (dry.planned_copies.files, dry.attributes.updated) == (0, 1)
    assert os.stat(dst / "a/two.csv").st_mode & 0o777 == 0o600  # untouched


# -- WebHDFS -> S3 (moto): recorded as x-amz-meta-* ------------------------------------------------
def test_hdfs_to_s3_records_user_metadata(hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path) -> None:
    make_hdfs_tree(hdfs)
    options = opts(
        f"{hdfs.url}/warehouse/events",
        f"s3://{BUCKET}/events",
        tmp_path,
        preserve=("mtime", "mode", "owner", "group"),
    )
    options = MigrateOptions(**{**options.__dict__, "destination_options": s3_options(moto)})
    report = migrate(options)
    assert report.ok and report.copied.files == 3, report.to_dict()
    doc = report.to_dict()["preserve"]
    assert doc["native"] == [] and doc["metadata"] == ["mtime", "mode", "owner", "group"]
    client = moto.client()
    for key, (owner, group, permission) in HDFS_ATTRS.items():
        head = client.head_object(Bucket=BUCKET, Key=f"events/{key}")
        assert head["Metadata"] == {"mode": permission, "owner": owner, "group": group, "mtime": "1700000000"}
    # An attribute change alone re-copies nothing (S3 metadata follows the next content change).
    hdfs_call(hdfs, "PUT", "/warehouse/events/a/one.csv", "SETPERMISSION", permission="600")
    again = migrate(options)
    assert again.ok and again.copied.files == 0 and again.attributes.updated == 0


def test_s3_metadata_comes_back_to_local_as_modes(
    hdfs: WebHDFSServer, moto: MotoS3Process, tmp_path: Path
) -> None:
    """HDFS -> S3 -> local: the recorded attributes are applied on the way back."""
    make_hdfs_tree(hdfs)
    to_s3 = opts(f"{hdfs.url}/warehouse/events", f"s3://{BUCKET}/round", tmp_path, preserve=("all",))
    assert migrate(MigrateOptions(**{**to_s3.__dict__, "destination_options": s3_options(moto)})).ok
    back = opts(f"s3://{BUCKET}/round", str(tmp_path / "back"), tmp_path, preserve=("mode",))
    report = migrate(MigrateOptions(**{**back.__dict__, "source_options": s3_options(moto)}))
    assert report.ok and report.copied.files == 3
    assert os.stat(tmp_path / "back/a/two.csv").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "back/b/three.bin").st_mode & 0o777 == 0o755


# -- WebHDFS -> GCS (emulator): custom metadata --------------------------------------------------
def test_hdfs_to_gcs_records_custom_metadata(hdfs: WebHDFSServer, gcs: GcsEmulator, tmp_path: Path) -> None:
    make_hdfs_tree(hdfs)
    options = opts(f"{hdfs.url}/warehouse/events", f"gs://{BUCKET}/events", tmp_path, preserve=("all",))
    gcs_options = {"endpoint_url": gcs.endpoint_url, "token": "anon", "project": PROJECT}
    report = migrate(MigrateOptions(**{**options.__dict__, "destination_options": gcs_options}))
    assert report.ok and report.copied.files == 3, report.to_dict()
    for key, (owner, group, permission) in HDFS_ATTRS.items():
        name = quote(f"events/{key}", safe="")
        resource = requests.get(f"{gcs.endpoint_url}/storage/v1/b/{BUCKET}/o/{name}", timeout=10).json()
        metadata = resource["metadata"]
        assert (metadata["mode"], metadata["owner"], metadata["group"]) == (permission, owner, group)


# -- local -> WebHDFS: SETPERMISSION / SETOWNER --------------------------------------------------
def make_local_tree(root: Path) -> None:
    for key, data in FILES.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (MTIME, MTIME))
    os.chmod(root / "a/one.csv", 0o640)
    os.chmod(root / "a/two.csv", 0o600)
    if os.geteuid() == 0:
        os.chown(root / "a/one.csv", 65534, 65534)  # nobody:nogroup


def test_local_to_hdfs_sets_permission_and_owner(hdfs: WebHDFSServer, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_local_tree(src)
    options = MigrateOptions(
        source=str(src),
        destination=f"{hdfs.url}/landing",
        destination_options={"user": "hdfs"},  # the superuser: may give files away
        preserve=("mode", "owner", "group"),
    )
    report = migrate(options)
    assert report.ok, report.to_dict()
    ops = [(op, path) for _, op, path in hdfs.requests]
    assert sum(op == "SETPERMISSION" for op, _ in ops) == 3 and sum(op == "SETOWNER" for op, _ in ops) == 3
    # Applied to the temp name, before the rename: the key never shows the writer's defaults.
    assert all(".tierctl-tmp-" in path for op, path in ops if op in ("SETPERMISSION", "SETOWNER"))
    one = hdfs.file_status("/landing/a/one.csv")
    assert one["permission"] == "640"
    if os.geteuid() == 0:
        assert (one["owner"], one["group"]) == ("nobody", "nogroup")
    assert hdfs.file_status("/landing/a/two.csv")["permission"] == "600"


def test_owner_refused_by_hdfs_is_reported_not_failed(
    hdfs: WebHDFSServer, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """As a non-superuser only your own files and groups: the content is copied and
    verified, the owner is reported as not preserved, and the run exits 3."""
    src = tmp_path / "src"
    make_local_tree(src)
    hdfs_call(hdfs, "PUT", "/landing", "MKDIRS")
    hdfs_call(hdfs, "PUT", "/landing", "SETOWNER", owner="etl", group="etl")
    result = cli(
        "migrate",
        str(src),
        f"{hdfs.url}/landing",
        "--dst-option",
        "user=etl",
        "--preserve",
        "mode,owner",
        "--json",
    )
    assert result.code == 3, result.err
    report = json.loads(result.out)
    assert report["copied"]["files"] == 3 and report["failed"]["files"] == 0
    preserve = report["preserve"]
    assert preserve["native"] == ["mtime", "mode", "owner"]
    # The local owners (root, nobody) are not etl, and only the superuser gives files away.
    assert preserve["not_preserved_files"] == 3
    assert {p["attribute"] for p in preserve["not_preserved"]} == {"owner"}
    assert "not permitted" in preserve["not_preserved"][0]["why"]
    status = hdfs.file_status("/landing/a/one.csv")
    assert (status["owner"], status["permission"]) == ("etl", "640")  # the mode did go through
    assert hdfs.local_path("/landing/b/three.bin").read_bytes() == FILES["b/three.bin"]


# -- local as non-root: chown refused ------------------------------------------------------------
@pytest.fixture
def as_nobody(tmp_path: Path) -> Iterator[Callable[[], None]]:
    """Switch this process's effective uid/gid to nobody for the body of a test (and back)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a file another user owns")
    switched = threading.Event()

    def switch() -> None:
        os.setegid(65534)
        os.seteuid(65534)
        switched.set()

    try:
        yield switch
    finally:
        if switched.is_set():
            os.seteuid(0)
            os.setegid(0)


def test_local_chown_as_non_root_is_reported(tmp_path: Path, as_nobody: Callable[[], None]) -> None:
    base = Path(tempfile.mkdtemp(prefix="tierctl-preserve-"))  # pytest's tmp_path is root-only
    try:
        _chown_as_nobody(base, tmp_path, as_nobody)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _chown_as_nobody(base: Path, tmp_path: Path, as_nobody: Callable[[], None]) -> None:
    os.chmod(base, 0o777)
    src = base / "src"
    make_local_tree(src)
    for path in (src, src / "a", src / "b"):
        os.chmod(path, 0o755)
    os.chmod(src / "a/two.csv", 0o644)  # readable by nobody, owned by root
    # The same kind of run as root first, so every lazy import is done before the switch.
    warm = MigrateOptions(source=str(src), destination=str(tmp_path / "warm"), index=str(tmp_path / "w.db"))
    assert migrate(warm).ok
    options = MigrateOptions(
        source=str(src), destination=str(base / "dst"), index=str(base / "m.db"), preserve=("mode", "owner")
    )
    as_nobody()
    report = migrate(options)
    assert report.copied.files == 3 and not report.failed.files
    assert not report.ok  # an owner asked for and not kept
    not_kept = {key for key, name, _ in report.attributes.examples if name == "owner"}
    assert not_kept == {"a/one.csv", "a/two.csv", "b/three.bin"} - {"a/one.csv"}  # one.csv: nobody's own
    assert os.stat(base / "dst/a/two.csv").st_mode & 0o777 == 0o644
    assert (base / "dst/b/three.bin").read_bytes() == FILES["b/three.bin"]


# -- the CLI ---------------------------------------------------------------------------------------
def test_unknown_preserve_name_is_refused(cli: Callable[..., CliResult]) -> None:
    result = cli("migrate", "webhdfs://nn:9870/a", "s3://b/a", "--preserve", "mtime,colour")
    assert result.code == 1 and "unknown attribute 'colour'" in result.err and "owner" in result.err


def test_preserve_mtime_alone_still_works(
    hdfs: WebHDFSServer, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    make_hdfs_tree(hdfs)
    result = cli(
        "migrate",
        f"{hdfs.url}/warehouse/events",
        str(tmp_path / "d"),
        "--src-option",
        "user=hdfs",
        "--preserve",
        "mtime",
        "--json",
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["preserve"]["requested"] == ["mtime"]
    assert os.stat(tmp_path / "d/a/one.csv").st_mtime == MTIME


def test_preserve_refused_where_the_destination_keeps_nothing(
    hdfs: WebHDFSServer, gcs: GcsEmulator, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """rclone's GCS backend reads no user metadata back: refused before anything is copied."""
    make_hdfs_tree(hdfs)
    gcs_options = {"endpoint_url": gcs.endpoint_url, "token": "anon", "project": PROJECT}
    config = tmp_path / "policies.yaml"
    config.write_text(
        f"""
version: 1
tiers:
  hdfs: {{url: "{hdfs.url}/warehouse/events", options: {{user: hdfs}}}}
  gcs: {{url: "gs://{BUCKET}/rc", mover: rclone, options: {json.dumps(gcs_options)}}}
datasets:
  events: {{prefix: "", home: hdfs}}
"""
    )
    result = cli(
        "-c",
        str(config),
        "migrate",
        f"{hdfs.url}/warehouse/events",
        f"gs://{BUCKET}/rc",
        "--preserve",
        "perms",
    )
    assert result.code == 1 and "--preserve mode" in result.err and "hint" in result.err, result.err
    assert not any(op == "OPEN" for _, op, _ in hdfs.requests)
