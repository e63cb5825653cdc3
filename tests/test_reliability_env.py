"""A destination that is full or read-only (a real tmpfs, mounted by the test; these
machines run the tests as root): every failed copy says why in one line, the run exits
non-zero, sources stay intact, no temp file is left behind, and the index records only
what the destination holds."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl import api

from .conftest import Sandbox
from .reliability import local_files, present_placements, tierctl


@pytest.fixture
def small_cold(sandbox: Sandbox) -> Iterator[Path]:
    """tier 'cold' on a 1 MiB tmpfs."""
    cold = sandbox.tier("cold")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); these tests run as root in CI")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(cold)], capture_output=True)
    assert done.returncode == 0, f"cannot mount a tmpfs although root: {done.stderr!r}"
    try:
        yield cold
    finally:
        subprocess.run(["umount", "-l", str(cold)], capture_output=True, check=False)


def _populate(sandbox: Sandbox, n: int, size: int) -> dict[str, bytes]:
    now = time.time()
    data = {f"logs/{i:03d}.log": os.urandom(size) for i in range(n)}
    for key, body in data.items():
        sandbox.put("hot", key, body, age_days=100, now=now)
    return data


def _failed(result) -> list[dict]:
    return [p for p in json.loads(result.stdout)["problems"] if p["status"] == "failed"]


def test_full_destination(sandbox: Sandbox, small_cold: Path) -> None:
    originals = _populate(sandbox, 8, 300 * 1024)  # 2.4 MB into 1 MiB
    assert tierctl("-c", sandbox.config, "scan").returncode == 0
    result = tierctl("-c", sandbox.config, "apply", "--yes", "--json")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    failed = _failed(result)
    assert failed and all("no space left on device" in p["error"] and "\n" not in p["error"] for p in failed)
    assert (
        local_files(sandbox.tier("hot")).items()
        >= {k: v for k, v in originals.items() if k in {p["key"] for p in failed}}.items()
    )
    cold = local_files(small_cold)
    assert not [k for k in cold if ".tierctl-tmp-" in k], "a failed write left its temp file"
    assert all(originals[k] == v for k, v in cold.items())
    for key, data in originals.items():
        assert local_files(sandbox.tier("hot")).get(key) == data or cold.get(key) == data
    index_path = api.load(sandbox.config).index_path
    assert {k for k, t, _ in present_placements(index_path) if t == "cold"} == set(cold)


def test_read_only_destination(sandbox: Sandbox, small_cold: Path) -> None:
    originals = _populate(sandbox, 3, 1000)
    remount = subprocess.run(["mount", "-o", "remount,ro", str(small_cold)], capture_output=True)
    assert remount.returncode == 0, f"cannot remount read-only although root: {remount.stderr!r}"
    assert tierctl("-c", sandbox.config, "scan").returncode == 0
    result = tierctl("-c", sandbox.config, "apply", "--yes", "--json")
    assert result.returncode == 3 and "Traceback" not in result.stderr
    failed = _failed(result)
    assert len(failed) == 3 and all("read-only file system" in p["error"] for p in failed)
    assert local_files(sandbox.tier("hot")) == originals


def test_permission_denied_for_an_unprivileged_user(sandbox: Sandbox, tmp_path: Path) -> None:
    """Root ignores file modes, so tierctl runs as 'nobody' here, against a destination
    folder owned by root with mode 0755."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start a process as another user")
    originals = _populate(sandbox, 2, 1000)
    for path in [tmp_path, *tmp_path.parents]:
        if str(path) in ("/", "/tmp"):
            break
        os.chmod(path, os.stat(path).st_mode | 0o755)
    for dirpath, dirnames, filenames in os.walk(sandbox.root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o777)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o666)
    os.chmod(sandbox.root, 0o777)
    os.chmod(sandbox.tier("cold"), 0o755)  # root's, not writable by nobody
    env = {"HOME": str(sandbox.root)}
    probe = subprocess.run(["/bin/true"], user=65534, group=65534, check=False)
    assert probe.returncode == 0
    if not _runnable_by_nobody(os.sys.executable):
        pytest.skip(
            f"environment limit: the interpreter {os.sys.executable} lies under a folder 'nobody'"
            " cannot enter; test_permission_denied_in_process covers the same mapping"
        )
    scan = subprocess.run(
        [os.sys.executable, "-m", "tierctl", "-c", sandbox.config, "scan"],
        user=65534,
        group=65534,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if scan.returncode != 0 and "Permission denied" in scan.stderr and "python" in scan.stderr.lower():
        pytest.fail(f"the test interpreter is not readable by 'nobody': {scan.stderr[-300:]}")
    assert scan.returncode == 0, scan.stderr
    result = subprocess.run(
        [os.sys.executable, "-m", "tierctl", "-c", sandbox.config, "apply", "--yes", "--json"],
        user=65534,
        group=65534,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    failed = _failed(result)
    assert len(failed) == 2 and all("permission denied" in p["error"] for p in failed)
    assert local_files(sandbox.tier("hot")) == originals


def _runnable_by_nobody(path: str) -> bool:
    try:
        done = subprocess.run([path, "-c", "pass"], user=65534, group=65534, capture_output=True, timeout=30)
    except PermissionError:
        return False
    return done.returncode == 0


def test_permission_denied_in_process(sandbox: Sandbox, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES from the file system (what a non-root user meets) -> one line per action."""
    from tierctl.movers.local import LocalMover

    originals = _populate(sandbox, 2, 1000)
    assert cli("-c", sandbox.config, "scan").code == 0

    def refuse(self: object, parent: str):
        raise PermissionError(13, "Permission denied", parent)

    monkeypatch.setattr(LocalMover, "_temp_file", refuse)
    result = cli("-c", sandbox.config, "apply", "--yes", "--json")
    assert result.code == 3 and "Traceback" not in result.err
    failed = [p for p in json.loads(result.out)["problems"] if p["status"] == "failed"]
    assert len(failed) == 2 and all(p["error"].endswith("permission denied") for p in failed)
    assert local_files(sandbox.tier("hot")) == originals
