"""The daemon's parts in-process: schedules, the index lock, retries, the error budget,
the operational config sections, alerts and metrics."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tierctl import alerts, api, metrics, schedule
from tierctl.errors import ConfigError, IndexLocked, MoverError, ObjectNotFound
from tierctl.executor import ApplyOptions
from tierctl.index import lock as index_lock
from tierctl.model import Entry
from tierctl.movers.local import LocalMover
from tierctl.movers.retry import Backoff, RetryingMover, call_with_retries
from tierctl.policies.loader import parse_config
from tierctl.policies.model import AlertSettings
from tierctl.schedule import Scheduled

from .conftest import NOW, Sandbox


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


# -- schedules -------------------------------------------------------------------------------------
def test_six_fields_have_seconds_first_and_five_fields_are_plain_cron() -> None:
    assert schedule.next_slot("*/2 * * * * *", 1000.5) == 1002.0
    assert schedule.latest_slot("*/2 * * * * *", 1002.0) == 1002.0  # inclusive of now
    assert schedule.latest_slot("*/2 * * * * *", 1003.9) == 1002.0
    assert schedule.next_slot("0 3 * * *", ts("2026-05-01T10:00:00")) == ts("2026-05-02T03:00:00")
    assert schedule.problem("0 3 * * *") is None and schedule.problem("*/5 * * * * *") is None
    assert "5 or 6 fields" in (schedule.problem("0 0 3 * * * 2027") or "")
    assert "bad cron" in (schedule.problem("61 * * * *") or "")


def test_time_zone_moves_the_slots() -> None:
    # 03:00 in Paris is 01:00 UTC in summer.
    assert schedule.next_slot("0 3 * * *", ts("2026-07-01T00:00:00"), "Europe/Paris") == ts(
        "2026-07-01T01:00:00"
    )


P = Scheduled("daily", "logs", "0 3 * * *")


def test_a_policy_is_due_once_per_slot() -> None:
    now = ts("2026-05-02T03:00:05")
    due = schedule.decide(P, ts("2026-05-01T03:00:01"), now, "UTC", watching_since=ts("2026-05-01T00:00:00"))
    assert due is not None and due.trigger == "schedule" and due.slot == ts("2026-05-02T03:00:00")
    assert schedule.decide(P, ts("2026-05-02T03:00:01"), now, "UTC", watching_since=0.0) is None


def test_missed_windows_run_once_as_catch_up() -> None:
    # Off for three days: one run on start, labelled catch-up, not three.
    started = ts("2026-05-04T12:00:00")
    due = schedule.due_policies([P], {"daily": ts("2026-05-01T03:00:01")}, started, "UTC", started)
    assert [(d.policy, d.trigger, d.slot) for d in due] == [("daily", "catch-up", ts("2026-05-04T03:00:00"))]
    # With --once (no watcher), a run that missed only the current slot is on schedule...
    once = schedule.decide(P, ts("2026-05-03T03:00:01"), started, "UTC", None)
    assert once is not None and once.trigger == "schedule"
    # ...one that missed whole windows, or never ran, catches up.
    assert schedule.decide(P, ts("2026-05-01T03:00:01"), started, "UTC", None).trigger == "catch-up"  # type: ignore[union-attr]
    assert schedule.decide(P, None, started, "UTC", None).trigger == "catch-up"  # type: ignore[union-attr]


def test_policies_without_schedule_never_run_by_themselves() -> None:
    manual = Scheduled("manual", "logs", None)
    assert schedule.due_policies([manual], {}, NOW) == []
    assert schedule.next_wakeup([manual], NOW) is None


def test_a_run_serving_several_policies_counts_for_each() -> None:
    due = [schedule.Due("a", "d", 0, "schedule"), schedule.Due("b", "d", 0, "schedule")]
    label = schedule.policy_label(due)
    assert schedule.last_runs_by_policy([(label, 5.0), ("a", 7.0), (None, 9.0)]) == {"a": 7.0, "b": 5.0}


# -- the lock -------------------------------------------------------------------------------------
HOLD = """
import sys, time
from tierctl.index import lock
held = lock.acquire(sys.argv[1], command="holder-for-test")
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    path = str(tmp_path / "index.db.lock")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, path], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc, path
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_held_lock_refuses_naming_its_holder_and_a_dead_holder_is_taken_over(
    holder_process: tuple[subprocess.Popen[str], str],
) -> None:
    proc, path = holder_process
    with pytest.raises(IndexLocked) as info:
        index_lock.acquire(path)
    assert f"pid {proc.pid}" in str(info.value) and "holder-for-test" in str(info.value)
    assert info.value.exit_code == 4
    assert index_lock.probe(path).pid == proc.pid  # type: ignore[union-attr]
    started = time.monotonic()
    with pytest.raises(IndexLocked):
        index_lock.acquire(path, wait=0.5)
    assert time.monotonic() - started >= 0.45
    proc.kill()  # SIGKILL: no cleanup; the kernel drops the flock, the record stays behind
    proc.wait(timeout=10)
    assert index_lock.probe(path) is None
    lock = index_lock.acquire(path)
    try:
        assert lock.previous is not None and lock.previous.pid == proc.pid
        assert index_lock.read_holder(path).pid == os.getpid()  # type: ignore[union-attr]
    finally:
        lock.release()


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    path = str(tmp_path / "x.lock")
    with index_lock.hold(path), index_lock.hold(path):
        assert index_lock.probe(path) is not None
    assert index_lock.probe(path) is None


def test_manual_apply_refuses_while_the_index_is_locked(sandbox: Sandbox, cli) -> None:
    sandbox.put("hot", "logs/a.log", b"a", age_days=1, now=time.time())
    config = api.load(sandbox.config)
    lock_file = index_lock.lock_path(config.index_path)
    os.makedirs(os.path.dirname(lock_file), exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", HOLD, lock_file], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        result = cli("-c", sandbox.config, "apply", "--yes", "--refresh")
        assert result.code == 4, result.err
        assert f"pid {other.pid}" in result.err and "--wait" in result.err
    finally:
        other.kill()
        other.wait(timeout=10)
    assert cli("-c", sandbox.config, "apply", "--yes", "--wait", "5").code == 0


# -- retries ----------------------------------------------------------------------------------------
class Flaky(LocalMover):
    """Fails the first ``n`` calls of each kind with a retryable error."""

    def __init__(self, url: str, failures: int, retryable: bool = True) -> None:
        super().__init__(url)
        self.left: dict[str, int] = {}
        self.failures = failures
        self.retryable = retryable
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        left = self.left.setdefault(kind, self.failures)
        if left:
            self.left[kind] = left - 1
            raise MoverError(f"{kind}: 503 slow down", retryable=self.retryable)

    def stat(self, key: str) -> Entry:
        self._maybe_fail("stat")
        return super().stat(key)

    def write(self, key, chunks, **kwargs):  # type: ignore[no-untyped-def]
        self._maybe_fail("write")
        return super().write(key, chunks, **kwargs)


def test_backoff_is_exponential_with_full_jitter() -> None:
    b = Backoff(attempts=5, base_delay=1.0, max_delay=5.0)
    rng = random.Random(1)
    for retry, cap in enumerate([1, 2, 4, 5, 5]):
        delays = [b.delay(retry, rng) for _ in range(200)]
        assert min(delays) >= 0 and max(delays) <= cap and max(delays) > cap * 0.8


def test_retrying_mover_retries_repeatable_calls_only(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    sleeps: list[float] = []
    flaky = Flaky(tmp_path.as_uri(), failures=2)
    mover = RetryingMover(flaky, Backoff(3, 0.01, 0.02), sleep=sleeps.append)
    assert mover.stat("a").size == 1 and flaky.calls["stat"] == 3 and len(sleeps) == 2
    with pytest.raises(MoverError):  # a write is never retried: its stream cannot be replayed
        mover.write("b", iter([b"y"]), size=1, mtime=NOW)
    assert flaky.calls["write"] == 1
    fatal = RetryingMover(Flaky(tmp_path.as_uri(), 1, retryable=False), Backoff(3, 0, 0), sleep=sleeps.append)
    with pytest.raises(MoverError):
        fatal.stat("a")
    assert fatal.inner.calls["stat"] == 1  # type: ignore[attr-defined]


def test_retried_delete_whose_first_answer_was_lost_succeeds(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    inner = LocalMover(tmp_path.as_uri())
    calls = []

    def lossy_delete(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            LocalMover.delete(inner, key)
            raise ConnectionResetError("reset after the delete happened")
        raise ObjectNotFound(key)

    inner.delete = lossy_delete  # type: ignore[method-assign]
    RetryingMover(inner, Backoff(3, 0, 0)).delete("a")
    assert len(calls) == 2 and not (tmp_path / "a").exists()


def test_call_with_retries_gives_up_after_attempts() -> None:
    calls = []

    def boom() -> None:
        calls.append(1)
        raise MoverError("throttled", retryable=True)

    with pytest.raises(MoverError):
        call_with_retries(boom, Backoff(4, 0, 0), sleep=lambda _: None)
    assert len(calls) == 4


def _plan_copies(sandbox: Sandbox, n: int) -> tuple[object, object]:
    now = time.time()
    for i in range(n):
        sandbox.put("hot", f"logs/{i:03d}.log", b"x" * 10, age_days=1, now=now)
    config = api.load(sandbox.config)
    api.scan(config)
    return config, api.plan(config)


def test_a_copy_failing_with_a_retryable_write_error_is_redone_from_the_source(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, plan = _plan_copies(sandbox, 3)
    flaky = Flaky(sandbox.tier("warm").as_uri(), failures=2)
    monkeypatch.setattr("tierctl.api.open_mover", lambda t: flaky if t.name == "warm" else LocalMover(t.url))
    options = ApplyOptions(digest=config.digest_algorithm, retry=Backoff(3, 0.001, 0.002))  # type: ignore[attr-defined]
    report = api.apply(config, plan, options=options)  # type: ignore[arg-type]
    assert report.outcome == "ok", report.problems
    assert flaky.calls["write"] == 5  # two failures, then three copies
    assert sandbox.files("warm") == sandbox.files("hot")


def test_the_error_budget_stops_a_run_that_keeps_failing(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, plan = _plan_copies(sandbox, 60)
    broken = Flaky(sandbox.tier("warm").as_uri(), failures=10**6, retryable=False)
    monkeypatch.setattr("tierctl.api.open_mover", lambda t: broken if t.name == "warm" else LocalMover(t.url))
    options = ApplyOptions(digest=config.digest_algorithm, jobs=1, max_failure_share=0.2)  # type: ignore[attr-defined]
    report = api.apply(config, plan, options=options)  # type: ignore[arg-type]
    assert report.outcome == "failed" and "error budget" in (report.error or "")
    assert report.failed < 20  # stopped early, not all 60 tried
    from tierctl import api_ops

    detail = api_ops.run_detail(config, report.run_id)  # type: ignore[arg-type]
    assert detail.run.outcome == "failed" and "error budget" in (detail.run.error or "")
    assert detail.not_started > 0 and all("503" in (p.error or "") for p in detail.problems)


# -- config sections --------------------------------------------------------------------------------
BASE = "tiers: {a: ./a}\ndatasets: {d: {prefix: d/}}\n"


def test_operational_sections_parse_with_defaults(tmp_path: Path) -> None:
    text = BASE + (
        "daemon: {timezone: Europe/Paris, error_budget: 0.5}\nretries: {attempts: 2}\n"
        "alerts: {webhook: 'http://127.0.0.1:9/x', on: [failure, success]}\nmetrics: {textfile: m.prom}\n"
    )
    config = parse_config(text, str(tmp_path / "p.yaml"))
    assert config.daemon.timezone == "Europe/Paris" and config.daemon.error_budget == 0.5
    assert config.retries.attempts == 2 and config.retries.max_delay == 30.0
    assert config.alerts.on == ("failure", "success")
    assert config.metrics.textfile == str(tmp_path / "m.prom")
    assert parse_config(BASE, str(tmp_path / "p.yaml")).daemon.timezone == "UTC"


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("daemon: {timezone: Mars/Olympus}\n", "unknown time zone", 3),
        ("daemon:\n  error_budget: 3\n", "error_budget must be a number from 0 to 1", 4),
        ("retries: {attempts: 0}\n", "attempts must be a whole number", 3),
        ("alerts: {on: [sometimes], webhook: 'http://x/'}\n", "on must list events", 3),
        ("alerts: {webhook: 'ftp://x/'}\n", "webhook must be an http(s) URL", 3),
        ("alerts: {}\n", "needs a command or a webhook", 3),
        ("metrics: {listen: nowhere}\n", "HOST:PORT", 3),
        ("daemon: {timezon: UTC}\n", "did you mean 'timezone'", 3),
    ],
)
def test_operational_mistakes_are_located(tmp_path: Path, text: str, fragment: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text, str(tmp_path / "p.yaml"))
    problem = getattr(info.value, "problems", [info.value])[0]
    assert fragment in f"{problem.message} {problem.hint}" and problem.location.line == line, str(info.value)


# -- alerts and metrics ---------------------------------------------------------------------------------
class Receiver:
    """A tiny HTTP server on 127.0.0.1 recording POSTed JSON bodies."""

    def __init__(self) -> None:
        received = self.received = []  # type: ignore[var-annotated]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_alerts_post_and_run_commands_and_never_raise(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        out = tmp_path / "alert.json"
        settings = AlertSettings(("failure",), f"cat > {out}", receiver.url, 5.0)
        assert alerts.send(settings, {"outcome": "partial", "run": 7, "policy": "p"}) == []
        assert receiver.received[0]["event"] == "failure" and receiver.received[0]["run"] == 7
        assert json.loads(out.read_text())["policy"] == "p"
        assert alerts.send(settings, {"outcome": "ok"}) == []  # success not asked for
        assert len(receiver.received) == 1
    finally:
        receiver.close()
    broken = AlertSettings(("failure",), "exit 3", "http://127.0.0.1:1/nothing", 2.0)
    failures = alerts.send(broken, {"outcome": "failed"})
    assert len(failures) == 2 and "exited 3" in failures[0]


def test_metrics_text_is_prometheus_exposition(sandbox: Sandbox) -> None:
    from tierctl import api_ops

    config, plan = _plan_copies(sandbox, 3)
    api.apply(config, plan)  # type: ignore[arg-type]
    text = metrics.render(api_ops.metrics_snapshot(config), daemon_started=123.0)  # type: ignore[arg-type]
    samples = parse_prometheus(text)
    assert samples[('tierctl_objects{dataset="logs",tier="warm"}')] == 3
    assert samples[('tierctl_runs_total{policy="",outcome="ok"}')] == 1
    assert samples["tierctl_daemon_start_timestamp_seconds"] == 123.0


def parse_prometheus(text: str) -> dict[str, float]:
    """Strictly parse the text format's sample lines (every non-comment line must parse)."""
    samples: dict[str, float] = {}
    declared: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        name_labels, _, value = line.rpartition(" ")
        assert name_labels.split("{")[0] in declared, line
        samples[name_labels] = float(value)
    return samples


def test_the_metrics_endpoint_does_not_poll_and_still_closes_at_once() -> None:
    import urllib.request

    server = metrics.MetricsServer("127.0.0.1", 0)
    assert metrics.IDLE_POLL >= 60  # an idle daemon is not woken by its own endpoint
    server.update("tierctl_up 1\n")
    server.start()
    host, port = server.address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        assert reply.read() == b"tierctl_up 1\n"
    closer = threading.Thread(target=server.close)
    closer.start()
    closer.join(timeout=10)  # serve_forever sleeps up to IDLE_POLL; close() must wake it
    assert not closer.is_alive()
    assert not server.thread.is_alive()
