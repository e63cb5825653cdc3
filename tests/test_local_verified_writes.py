"""Copies onto a local disk are verified by the write itself (the stream's digest and the
written byte count); off a local disk, or when the tier asks, they are read back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tierctl.errors import ConfigError
from tierctl.movers.local import _DISK_FILE_SYSTEMS, LocalMover, file_system_type

from .conftest import CliResult, Sandbox


def test_file_system_type_reads_the_mount_table() -> None:
    assert file_system_type("/proc/self") == "proc"
    assert file_system_type("/proc") == "proc"
    assert file_system_type("/") not in (None, "proc")


def test_local_disk_writes_verify_themselves_elsewhere_they_are_read_back(tmp_path: Path) -> None:
    on_disk = file_system_type(str(tmp_path)) in _DISK_FILE_SYSTEMS
    assert LocalMover(str(tmp_path)).capabilities.verified_writes is on_disk
    # procfs stands in for a file system that is not a local disk (nfs, fuse.*, 9p, ...).
    assert LocalMover("/proc/tierctl-nowhere").capabilities.verified_writes is False
    assert LocalMover(str(tmp_path), read_back=True).capabilities.verified_writes is False
    assert LocalMover(str(tmp_path), read_back="no").capabilities.verified_writes is on_disk


def test_local_tier_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        LocalMover(str(tmp_path), read_bak=True)
    with pytest.raises(ConfigError, match="read_back"):
        LocalMover(str(tmp_path), read_back="sometimes")


@pytest.mark.parametrize("read_back", [None, True])
def test_apply_journals_how_each_copy_was_verified(
    sandbox: Sandbox, cli: Callable[..., CliResult], read_back: bool | None
) -> None:
    option = "" if read_back is None else ", options: {read_back: true}"
    config = sandbox.write_config(
        f"""\
        version: 1
        tiers:
          hot:  {{url: ./hot}}
          warm: {{url: ./warm{option}}}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: copy
            dataset: logs
            rules:
              - when: "true"
                place: [hot, warm]
        """
    )
    for i in range(3):
        sandbox.put("hot", f"logs/{i}.log", b"x" * (100 + i), age_days=1, now=1_790_000_000.0)
    assert cli("-c", config, "scan").code == 0
    applied = cli("-c", config, "apply", "--yes", "--json")
    assert applied.code == 0, applied.err
    run = json.loads(applied.out)["run"]
    shown = cli("-c", config, "runs", "show", str(run), "--steps", "--json")
    assert shown.code == 0, shown.err
    actions = json.loads(shown.out)["steps"]
    verified = [s["detail"]["by"] for a in actions for s in a["steps"] if s["step"] == "verified"]
    assert len(verified) == 3
    on_disk = file_system_type(str(sandbox.root)) in _DISK_FILE_SYSTEMS
    assert set(verified) == {"write" if on_disk and read_back is None else "read-back"}
    assert sandbox.files("warm") == sandbox.files("hot")
