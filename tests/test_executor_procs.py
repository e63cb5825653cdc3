"""Small local copies on worker processes (tierctl.executor_procs): the same results as on
threads, and the same safety when stopped, when a run fails, when killed or interrupted,
and when a worker dies alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tierctl import api
from tierctl.executor import BUDGET_MIN_ACTIONS, ApplyOptions
from tierctl.executor_procs import PROCESS_MIN_UNITS

from .conftest import Sandbox

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="worker processes are Linux-only")

COPY_POLICY = """\
version: 1
tiers:
  hot:  {url: ./hot}
  warm: {url: ./warm}
datasets:
  logs: {prefix: logs/, home: hot}
policies:
  - name: mirror
    dataset: logs
    rules:
      - when: "true"
        place: [hot, warm]
"""


def _fill(box: Sandbox, files: int) -> dict[str, bytes]:
    now = time.time()
    box.tier("hot").mkdir(exist_ok=True)
    box.tier("warm").mkdir(exist_ok=True)
    box.write_config(COPY_POLICY)
    data = {f"logs/{i % 40:02d}/{i:05d}.log": os.urandom(100 + i % 3000) for i in range(files)}
    for key, body in data.items():
        box.put("hot", key, body, age_days=1, now=now)
    return data


def _forks_during(fn: object) -> int:
    """How many times this process forks while ``fn()`` runs."""
    count = [0]

    def forked() -> None:
        count[0] += 1

    os.register_at_fork(after_in_parent=forked)  # there is no unregister: counted by window
    assert callable(fn)
    before = count[0]
    fn()
    return count[0] - before


def _index_rows(config_path: str) -> list[tuple[Any, ...]]:
    config = api.load(config_path)
    with api.open_index(config, create=False) as index:
        return sorted(
            index.conn.execute(
                "SELECT dataset, key, tier, size, mtime, checksum, state FROM placements"
            ).fetchall()
        )


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _spawn_apply(config: str, *, new_session: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tierctl", "-c", config, "apply", "--yes", "--json", "--jobs", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def _wait_for_workers(proc: subprocess.Popen[str], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = _children(proc.pid)
        if kids:
            return kids
        if proc.poll() is not None:
            break
        time.sleep(0.002)
    _out, err = proc.communicate()
    raise AssertionError(f"no worker process appeared: {proc.returncode} {err[-2000:]}")


def _check_consistent(box: Sandbox, data: dict[str, bytes]) -> None:
    """Nothing half-written under a final name; the index lists no copy the disk lacks."""
    warm = box.files("warm")
    for key, body in warm.items():
        if ".tierctl-tmp-" not in key:
            assert body == data[key], f"warm/{key} differs from its source"
    for _dataset, key, tier, size, _mtime, _checksum, state in _index_rows(box.config):
        if tier == "warm" and state == "present":
            assert key in warm and len(warm[key]) == size, f"index lists warm/{key}, the disk not"


def _converges(box: Sandbox, data: dict[str, bytes]) -> None:
    """A scan (which removes temp files of writers that are gone) and an apply finish the
    job: every copy there, byte for byte, nothing else, nothing left to plan."""
    scan = subprocess.run(
        [sys.executable, "-m", "tierctl", "-c", box.config, "scan"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert scan.returncode == 0, scan.stderr[-2000:]
    again = subprocess.run(
        [sys.executable, "-m", "tierctl", "-c", box.config, "apply", "--yes", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["failed"] == 0
    assert box.files("warm") == data
    plan = api.plan(api.load(box.config))
    assert plan.actions == [], plan.actions[:3]


def test_small_copies_run_on_processes_and_are_recorded_as_on_threads(tmp_path: Path) -> None:
    files = PROCESS_MIN_UNITS + 44
    boxes = {mode: Sandbox(tmp_path / mode) for mode in ("procs", "threads")}
    for box in boxes.values():
        box.root.mkdir()
        _fill(box, 0)  # tiers and policy file
    data = {f"logs/{i % 7}/{i:04d}.log": os.urandom(50 + 13 * i) for i in range(files)}
    mtimes = {key: 1_700_000_000.0 + i for i, key in enumerate(data)}
    for box in boxes.values():
        for key, body in data.items():
            path = box.put("hot", key, body, age_days=0, now=mtimes[key])
            os.utime(path, (mtimes[key], mtimes[key]))
    reports = {}
    forks = {}
    for mode, box in boxes.items():
        config = api.load(box.config)
        api.scan(config)
        plan = api.plan(config)
        assert len(plan.actions) == files
        options = ApplyOptions(
            jobs=4, digest=config.digest_algorithm, processes=0 if mode == "threads" else 64
        )

        def run(
            config: Any = config, plan: Any = plan, options: ApplyOptions = options, mode: str = mode
        ) -> None:
            reports[mode] = api.apply(config, plan, options=options)

        forks[mode] = _forks_during(run)
        assert box.files("warm") == data
    assert forks["threads"] == 0
    assert forks["procs"] == min(4, len(os.sched_getaffinity(0)))
    for report in reports.values():
        assert (report.done, report.failed, report.skipped, report.bytes) == (
            files,
            0,
            0,
            sum(map(len, data.values())),
        )
    rows = {mode: _index_rows(box.config) for mode, box in boxes.items()}
    assert rows["procs"] == rows["threads"]
    assert len(rows["procs"]) == 2 * files and all(r[5] for r in rows["procs"])
    for mode, box in boxes.items():  # the journal holds each copy's steps, as on threads
        config = api.load(box.config)
        verified = [
            a
            for a in api.run_steps(config, reports[mode].run_id)
            if any(s.step == "verified" for s in a.steps)
        ]
        assert len(verified) == files, mode


def test_a_stop_starts_no_new_unit_and_records_what_ran(sandbox: Sandbox) -> None:
    data = _fill(sandbox, 2000)
    config = api.load(sandbox.config)
    api.scan(config)
    plan = api.plan(config)
    stop = threading.Event()

    class StopSoon:
        seen = 0

        def started(self, objects: int, total_bytes: int) -> None:
            pass

        def advanced(self, nbytes: int) -> None:
            self.seen += 1
            if self.seen >= 40:
                stop.set()

        def finished_object(self, results: object) -> None:
            pass

    report = api.apply(
        config,
        plan,
        options=ApplyOptions(jobs=4, digest=config.digest_algorithm, stop=stop),
        events=StopSoon(),
    )
    assert report.interrupted and report.outcome == "interrupted"
    assert 40 <= report.done < 2000 and report.failed == 0
    recorded = [r for r in _index_rows(sandbox.config) if r[2] == "warm"]
    assert len(recorded) == report.done  # every copy that ran is recorded, and only those
    warm = sandbox.files("warm")
    assert len(warm) == report.done and all(warm[k] == data[k] for k in warm)
    _converges(sandbox, data)


def test_a_failing_run_stops_within_a_few_units(sandbox: Sandbox) -> None:
    """Every write fails (each target folder is a file): the error budget ends the run
    after a few units, not after the hundreds queued to the workers."""
    _fill(sandbox, 1000)
    for sub in range(40):
        (sandbox.tier("warm") / "logs").mkdir(exist_ok=True)
        (sandbox.tier("warm") / "logs" / f"{sub:02d}").write_bytes(b"not a folder")
    config = api.load(sandbox.config)
    api.scan(config)
    plan = api.plan(config)
    report = api.apply(
        config, plan, options=ApplyOptions(jobs=4, digest=config.digest_algorithm, max_failure_share=0.5)
    )
    assert report.error and "error budget" in report.error
    assert report.done == 0
    workers = min(4, len(os.sched_getaffinity(0)))
    # Units already running when the first failure is seen, then one at a time per worker
    # until BUDGET_MIN_ACTIONS have finished.
    assert BUDGET_MIN_ACTIONS <= report.failed <= BUDGET_MIN_ACTIONS + 4 * workers, report.failed


def test_kill_9_takes_the_workers_with_it_and_loses_nothing(sandbox: Sandbox) -> None:
    data = _fill(sandbox, 4000)
    assert api.scan(api.load(sandbox.config)) is not None
    proc = _spawn_apply(sandbox.config)
    try:
        workers = _wait_for_workers(proc)
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(_alive(w) for w in workers), "a worker outlived the killed apply"
    _check_consistent(sandbox, data)
    _converges(sandbox, data)


def test_ctrl_c_records_what_finished_and_ends_the_workers(sandbox: Sandbox) -> None:
    data = _fill(sandbox, 4000)
    api.scan(api.load(sandbox.config))
    proc = _spawn_apply(sandbox.config, new_session=True)
    try:
        workers = _wait_for_workers(proc)
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it: to the whole group
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode == 0:  # finished before the signal: nothing to check about stopping
        pytest.fail("the run finished before Ctrl-C; give it more files")
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert not any(_alive(w) for w in workers)
    _check_consistent(sandbox, data)
    recorded = {r[1] for r in _index_rows(sandbox.config) if r[2] == "warm"}
    assert recorded and recorded == set(k for k in sandbox.files("warm") if ".tierctl-tmp-" not in k)
    with api.open_index(api.load(sandbox.config), create=False) as index:
        statuses = dict(index.conn.execute("SELECT status, count(*) FROM actions GROUP BY status").fetchall())
    # The workers ignored the signal: every unit they had started finished; none failed.
    assert statuses == {"done": len(recorded)}, statuses
    _converges(sandbox, data)


def test_a_worker_killed_alone_fails_only_its_units(sandbox: Sandbox) -> None:
    data = _fill(sandbox, 4000)
    api.scan(api.load(sandbox.config))
    proc = _spawn_apply(sandbox.config)
    try:
        workers = _wait_for_workers(proc)
        os.kill(workers[0], signal.SIGKILL)
        out, _err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads(out)
    assert report["done"] + report["failed"] == len(data), report
    assert 0 < report["failed"] < len(data) and report["done"] > 0, report
    errors = {p["error"] for p in report["problems"]}
    assert all("worker process" in e and "died" in e for e in errors), errors
    assert proc.returncode != 0
    _check_consistent(sandbox, data)
    _converges(sandbox, data)
