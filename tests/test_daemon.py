"""The daemon as real processes: schedules with a seconds field so runs happen within the
test, signals, two daemons on one index, --once exit codes, alerts, metrics, and the
runs / history / status commands reading what the runs recorded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DAY, Sandbox, run_tierctl, write_file
from .test_daemon_units import Receiver, parse_prometheus

EVERY_2S = "*/2 * * * * *"


def policy_file(schedule: str | None = EVERY_2S, extra: str = "", jobs: int = 8) -> str:
    line = f'    schedule: "{schedule}"\n' if schedule else ""
    return (
        "version: 1\n"
        "tiers:\n  hot: {url: ./hot}\n  warm: {url: ./warm}\n"
        "datasets:\n  logs: {prefix: logs/, home: hot}\n"
        "policies:\n  - name: lifecycle\n    dataset: logs\n" + line + "    rules:\n"
        '      - when: "age < 7d"\n        place: [hot, warm]\n'
        '      - when: "age >= 7d"\n        place: [warm]\n'
        f"daemon: {{jobs: {jobs}}}\n" + extra
    )


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    """``tierctl daemon`` as a child process logging JSON lines to a file."""

    def __init__(self, box: Sandbox, *args: str, name: str = "daemon") -> None:
        self.log_path = box.root / f"{name}.log"
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tierctl", "-c", box.config, "daemon", "--log-format", "json", *args],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
        )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"msg": line})
        return out

    def logged(self, msg: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.lines() if e.get("msg", "").startswith(msg) and fields.items() <= e.items()]

    def wait_logged(
        self, msg: str, count: int = 1, timeout: float = 20, **fields: Any
    ) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (found := self.logged(msg, **fields)) and len(found) >= count and found,
            timeout,
            f"{count} x {msg!r} in the daemon log:\n{self.log_path.read_text()[-3000:]}",
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log_file.close()


@pytest.fixture
def daemons() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(box: Sandbox, *args: str, name: str = "daemon") -> Daemon:
        d = Daemon(box, *args, name=name)
        started.append(d)
        return d

    try:
        yield start
    finally:
        for d in started:
            d.stop()


def fill(box: Sandbox, n: int, *, age_days: float = 30, size: int = 64) -> dict[str, bytes]:
    now = time.time()
    files = {}
    for i in range(n):
        key = f"logs/{i // 500:02d}/{i:05d}.log"
        data = (f"{i}:" * size).encode()[:size]
        write_file(box.tier("hot"), key, data, now - age_days * DAY)
        files[key] = data
    return files


def cli_json(box: Sandbox, *args: str) -> Any:
    result = run_tierctl("-c", box.config, *args, "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def index_path(box: Sandbox) -> Path:
    return box.root / ".tierctl" / "index.db"


def recorded_actions(box: Sandbox) -> int:
    if not index_path(box).exists():
        return 0
    conn = sqlite3.connect(f"file:{index_path(box)}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM actions").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


# -- the tests ---------------------------------------------------------------------------------------
def test_sigterm_during_apply_loses_nothing_and_the_next_run_completes_the_plan(
    sandbox: Sandbox, daemons: Callable[..., Daemon]
) -> None:
    sandbox.write_config(policy_file("0 3 * * *", jobs=2))  # never-run policy: catch-up on start
    files = fill(sandbox, 3000)
    d = daemons(sandbox)
    wait_for(lambda: recorded_actions(sandbox) >= 200, 60, "the apply to get going")
    d.signal(signal.SIGTERM)
    assert d.wait(30) == 0
    d.wait_logged("daemon stopping", reason="signal")
    (run,) = cli_json(sandbox, "runs")
    assert run["outcome"] == "interrupted" and run["trigger"] == "catch-up"
    assert 0 < run["done"] < run["planned"] == 6000
    survivors = {**sandbox.files("warm"), **sandbox.files("hot")}
    assert survivors == files  # every object on at least one tier, bytes equal

    again = run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=120)
    assert again.returncode == 0, again.stderr
    assert sandbox.files("hot") == {} and sandbox.files("warm") == files
    newest = cli_json(sandbox, "runs")[0]
    assert newest["outcome"] == "ok" and newest["done"] + run["done"] >= 6000
    plan = run_tierctl("-c", sandbox.config, "plan", "--detailed-exitcode", timeout=30)
    assert plan.returncode == 0, plan.stdout


def test_second_daemon_refuses_and_status_metrics_runs_history_tell_the_story(
    sandbox: Sandbox, daemons: Callable[..., Daemon]
) -> None:
    sandbox.write_config(policy_file())
    files = fill(sandbox, 20)
    first = daemons(sandbox, "--metrics-addr", "127.0.0.1:0")
    first.wait_logged("run finished", count=2, outcome="ok")  # the catch-up, then on schedule
    triggers = [e["trigger"] for e in first.logged("run finished")]
    assert triggers[0] == "catch-up" and "schedule" in triggers[1:]

    second = daemons(sandbox, name="second")
    assert second.wait(20) == 4
    refusal = second.log_path.read_text()
    assert "a daemon already runs on this index" in refusal and f"pid {first.proc.pid}" in refusal
    once = run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=30)
    assert once.returncode == 4 and f"pid {first.proc.pid}" in once.stderr

    status = cli_json(sandbox, "status")
    assert status["daemon"]["pid"] == first.proc.pid
    (policy,) = status["policies"]
    assert policy["last_run"]["outcome"] == "ok" and policy["next_due"] is not None
    assert {(u["tier"], u["objects"]) for u in status["usage"]} == {("warm", 20)}

    url = first.logged("metrics served")[0]["url"]
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        samples = parse_prometheus(response.read().decode())
    assert samples['tierctl_objects{dataset="logs",tier="warm"}'] == 20
    assert samples['tierctl_runs_total{policy="lifecycle",outcome="ok"}'] >= 2
    assert samples['tierctl_last_success_timestamp_seconds{policy="lifecycle"}'] > time.time() - 60

    runs = cli_json(sandbox, "runs")
    moved = [r for r in runs if r["done"]]
    assert len(moved) == 1 and moved[0]["done"] == 40  # 20 copies and 20 deletes
    detail = cli_json(sandbox, "runs", "show", str(moved[0]["id"]))
    assert detail["actions"] == {"done": 40} and detail["problems"] == []
    key = next(iter(files))
    history = cli_json(sandbox, "history", key)
    assert [(e["event"], e["source"], e["tier"]) for e in history] == [
        ("seen", None, "hot"),  # where it was before the move, kept by the delete's record
        ("copy", "hot", "warm"),
        ("delete", None, "hot"),
    ]
    assert all(e["run"] == moved[0]["id"] and "age >= 7d" in e["reason"] for e in history[1:])
    text = run_tierctl("-c", sandbox.config, "status", timeout=30)
    assert "running" in text.stdout and f"pid {first.proc.pid}" in text.stdout

    first.signal(signal.SIGTERM)
    assert first.wait(20) == 0
    assert cli_json(sandbox, "status")["daemon"] is None


def test_sighup_with_a_broken_config_keeps_the_old_one(
    sandbox: Sandbox, daemons: Callable[..., Daemon]
) -> None:
    good = policy_file()
    sandbox.write_config(good)
    fill(sandbox, 5)
    d = daemons(sandbox)
    d.wait_logged("run finished", count=1)
    Path(sandbox.config).write_text(good.replace("rules:", "rules: [oops"))
    d.signal(signal.SIGHUP)
    (error,) = d.wait_logged("config reload failed")
    assert error["level"] == "error" and "policies.yaml" in error["msg"]
    before = len(d.logged("run finished"))
    d.wait_logged("run finished", count=before + 1)  # still running on the old config
    Path(sandbox.config).write_text(policy_file(schedule="*/3 * * * * *"))
    d.signal(signal.SIGHUP)
    d.wait_logged("config reloaded")
    d.signal(signal.SIGINT)
    assert d.wait(20) == 0


def test_once_exit_codes_and_a_failure_alert_by_webhook(
    sandbox: Sandbox, daemons: Callable[..., Daemon]
) -> None:
    # Nothing scheduled: nothing due, exit 0, no run recorded.
    sandbox.write_config(policy_file(schedule=None))
    fill(sandbox, 4)
    result = run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=30)
    assert result.returncode == 0 and "run starting" not in result.stderr

    receiver = Receiver()
    try:
        extra = f"alerts: {{on: [failure], webhook: '{receiver.url}'}}\n"
        sandbox.write_config(policy_file(extra=extra))
        (sandbox.tier("warm") / "logs" / "00" / "00001.log").mkdir(parents=True)  # a copy must fail
        result = run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=30)
        assert result.returncode == 3, result.stderr
        wait_for(lambda: receiver.received, 10, "the webhook")
        (alert,) = receiver.received
        assert alert["event"] == "failure" and alert["outcome"] == "partial" and alert["failed"] == 1
        assert alert["failures"][0]["key"] == "logs/00/00001.log"
        detail = cli_json(sandbox, "runs", "show", str(alert["run"]))
        assert [p["key"] for p in detail["problems"] if p["status"] == "failed"] == ["logs/00/00001.log"]
        # The failed action comes back in the next run (once the obstacle is gone).
        (sandbox.tier("warm") / "logs" / "00" / "00001.log").rmdir()
        time.sleep(2.1)  # the next slot
        assert run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=30).returncode == 0
        assert sandbox.files("hot") == {} and len(sandbox.files("warm")) == 4
    finally:
        receiver.close()

    # A broken policy file: exit 1 with a located message.
    Path(sandbox.config).write_text(policy_file().replace("hot, warm", "hot, nowhere"))
    result = run_tierctl("-c", sandbox.config, "daemon", "--once", timeout=30)
    assert result.returncode == 1 and "policies.yaml:" in result.stderr and "nowhere" in result.stderr


def test_idle_daemon_sleeps_without_using_cpu(sandbox: Sandbox, daemons: Callable[..., Daemon]) -> None:
    sandbox.write_config(policy_file(schedule="0 3 1 1 *"))
    d = daemons(sandbox)
    d.wait_logged("run finished")
    stat = Path(f"/proc/{d.proc.pid}/stat")
    ticks = lambda: sum(int(x) for x in stat.read_text().rsplit(")", 1)[1].split()[11:13])  # noqa: E731
    before = ticks()
    time.sleep(2)
    assert ticks() - before <= 2  # clock ticks (1/100 s): no busy loop
    assert os.path.exists(index_path(sandbox))
