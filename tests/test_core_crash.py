"""Kill -9 a real apply at several points: after each kill every object still has an
intact copy, and re-running converges to the declared layout with every byte intact."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tierctl import api
from tierctl.index import Index

from .conftest import Sandbox, run_tierctl

FILES = 2000


def _intact_copies(sandbox: Sandbox, originals: dict[str, bytes]) -> dict[str, int]:
    counts = {}
    for key, data in originals.items():
        counts[key] = sum(
            1
            for tier in ("hot", "warm", "cold")
            if (p := sandbox.tier(tier) / key).exists() and p.read_bytes() == data
        )
    return counts


def _count_files(root) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def test_sigkill_during_apply_loses_nothing_and_rerun_converges(sandbox: Sandbox) -> None:
    now = time.time()
    originals = {}
    for i in range(FILES):
        key = f"logs/{i // 100:02d}/{i:05d}.log"
        data = os.urandom(2048) + key.encode()
        sandbox.put("hot", key, data, age_days=100 + i % 50, now=now)  # all due for cold
        originals[key] = data
    assert run_tierctl("-c", sandbox.config, "scan").returncode == 0

    kills = 0
    for fraction in (0.1, 0.3, 0.5, 0.7, 0.9):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tierctl",
                "-c",
                sandbox.config,
                "apply",
                "--yes",
                "--json",
                "--jobs",
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if _count_files(sandbox.tier("cold")) >= fraction * FILES:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.communicate(timeout=60)
        counts = _intact_copies(sandbox, originals)
        lost = [k for k, n in counts.items() if n == 0]
        assert not lost, (
            f"after a kill at {fraction:.0%}, {len(lost)} objects have no intact copy: {lost[:3]}"
        )
    assert kills >= 4, f"only {kills} runs were killed mid-way"

    final = run_tierctl("-c", sandbox.config, "apply", "--yes", "--json")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["failed"] == 0

    # The index agrees with a fresh scan, and nothing is left to do.
    config = api.load(sandbox.config)
    with Index.open(config.index_path) as index:
        before = {(r[1], r[2], r[3]) for r in index.dump() if r[8] == "present"}
    assert run_tierctl("-c", sandbox.config, "scan").returncode == 0
    with Index.open(config.index_path) as index:
        after = {(r[1], r[2], r[3]) for r in index.dump() if r[8] == "present"}
    assert before == after == {(k, "cold", len(v)) for k, v in originals.items()}
    # Temp files of killed writes were never listed, and the scan removed them.
    assert sandbox.files("cold") == originals
    assert sandbox.files("hot") == {}
    assert run_tierctl("-c", sandbox.config, "plan", "--detailed-exitcode").returncode == 0


def test_a_write_into_a_folder_removes_temp_files_killed_writers_left_there(tmp_path) -> None:
    """A run killed mid-write leaves `.tierctl-tmp-<pid>-…`; the next write into that folder
    (a resumed run redoing the copy) removes it, without waiting for a scan. A live
    writer's temp file is never touched."""
    from tierctl.movers.local import TEMP_PREFIX, LocalMover

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "tier" / "logs"
    folder.mkdir(parents=True)
    left = folder / f"{TEMP_PREFIX}{dead.pid}-0123456789abcdef"
    left.write_bytes(b"half a file")
    live = folder / f"{TEMP_PREFIX}{os.getpid()}-fedcba9876543210"
    live.write_bytes(b"being written")
    mover = LocalMover(f"file://{tmp_path / 'tier'}")
    mover.write("logs/new.bin", [b"x"], size=1, mtime=time.time())
    assert not left.exists() and live.exists() and mover.removed_temp_files == 1
    assert (folder / "new.bin").read_bytes() == b"x"
