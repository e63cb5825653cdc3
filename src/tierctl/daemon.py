"""``tierctl daemon``: run each policy on its schedule, visibly, and safe to kill.

The loop: find the due policies (:mod:`tierctl.schedule`, from the runs in the index),
run scan -> plan -> apply per dataset (:func:`tierctl.api_ops.run_cycle`), alert, refresh
the metrics, then sleep until the next slot or a signal. Thin: the work is in the api.

Signals (handlers only set flags and wake the loop through a pipe; nothing else runs in
a handler):
- SIGTERM / SIGINT: no new actions start; in-flight units finish and are recorded; the run
  ends "interrupted" (a later run picks the rest up); exit 0. A second one hurries: the
  executor stops waiting for new results and the process exits 130.
- SIGHUP: reload the policy file; if it is invalid, log why and keep the old one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from tierctl import alerts, api, api_ops, metrics, schedule
from tierctl.errors import EXIT_ERROR, EXIT_LOCKED, EXIT_OK, EXIT_PARTIAL, TierctlError
from tierctl.index import lock as index_lock
from tierctl.policies.model import Config
from tierctl.policies.operations import parse_address

log = logging.getLogger("tierctl.daemon")


@dataclass(frozen=True)
class DaemonOptions:
    config_path: str | None = None
    index: str | None = None
    once: bool = False
    wait: float = 0.0  # for the daemon lock; with --once also for the index lock
    metrics_addr: str | None = None


# -- logs --------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", {})
        if fields:
            text += "  " + " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return text


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("tierctl")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _info(message: str, **fields: Any) -> None:
    log.info(message, extra={"fields": fields})


# -- the daemon ----------------------------------------------------------------------------------
class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.stop = threading.Event()
        self.reload_requested = False
        self.started = time.time()
        self.attempted: dict[str, float] = {}  # policy -> slot tried by this process
        self.server: metrics.MetricsServer | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # signal handlers: flags and a wake-up byte only
    def _on_stop(self, signum: int, frame: object) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()
        self._wake()

    def _on_hangup(self, signum: int, frame: object) -> None:
        self.reload_requested = True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _sleep_until(self, deadline: float | None) -> None:
        """Block (no CPU) until ``deadline``, a signal, or forever if None."""
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        with contextlib.suppress(InterruptedError):
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass

    def run(self) -> int:
        config = api.load(self.options.config_path, index=self.options.index)
        daemon_lock = index_lock.lock_path(config.index_path, index_lock.DAEMON)
        busy = "a daemon already runs on this index:"
        with index_lock.hold(daemon_lock, wait=self.options.wait, busy=busy) as held:
            if held.previous is not None:
                log.warning("took over the lock of a daemon that is gone: %s", held.previous.describe())
            previous = self._install_signals()
            try:
                return self._serve(config)
            finally:
                self._restore_signals(previous)
                if self.server is not None:
                    self.server.close()
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _install_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        for signum, handler in (
            (signal.SIGTERM, self._on_stop),
            (signal.SIGINT, self._on_stop),
            (signal.SIGHUP, self._on_hangup),
        ):
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def _serve(self, config: Config) -> int:
        once = self.options.once
        _info(
            "daemon started" if not once else "checking what is due",
            pid=os.getpid(),
            host=socket.gethostname(),
            config=config.path,
            index=config.index_path,
            timezone=config.daemon.timezone,
            scheduled=sum(1 for p in config.policies if p.schedule),
        )
        self._start_metrics(config)
        self._refresh_metrics(config)
        exit_code = EXIT_OK
        while not self.stop.is_set():
            if self.reload_requested:
                config = self._reload(config)
            now = time.time()
            due = [
                d
                for d in api_ops.due_now(config, now, watching_since=None if once else self.started)
                if self.attempted.get(d.policy) != d.slot
            ]
            for dataset, group in schedule.group_by_dataset(due).items():
                if self.stop.is_set():
                    break
                exit_code = max(exit_code, self._cycle(config, dataset, group))
            if due:
                self._refresh_metrics(config)
            if once:
                break
            wake = api_ops.next_wakeup(config, time.time())
            if wake is not None:
                log.debug("sleeping until %s", time.strftime("%H:%M:%S", time.localtime(wake)))
            self._sleep_until(wake)
        _info("daemon stopping" if not once else "done", reason="signal" if self.stop.is_set() else "once")
        return exit_code if once else EXIT_OK

    def _cycle(self, config: Config, dataset: str, due: list[schedule.Due]) -> int:
        for d in due:
            self.attempted[d.policy] = d.slot
        label = schedule.policy_label(due)
        _info("run starting", policy=label, dataset=dataset, trigger=due[0].trigger)
        lock_wait = self.options.wait if self.options.once else math.inf

        def on_lock_wait(holder: index_lock.Holder | None) -> None:
            _info("waiting for the index", held_by=holder.describe() if holder else "another process")

        try:
            result = api_ops.run_cycle(
                config, dataset, due, stop=self.stop, lock_wait=lock_wait, on_lock_wait=on_lock_wait
            )
        except Exception as exc:  # a bug must not kill the daemon: record, log, go on
            log.exception("run failed with an internal error", extra={"fields": {"policy": label}})
            error = f"internal error: {type(exc).__name__}: {exc}"
            run_id = api_ops.record_unstarted_run(config, due[0].trigger, label, error)
            result = api_ops.CycleResult(dataset, label, due[0].trigger, "failed", run_id=run_id, error=error)
        self._report(config, result)
        if result.locked:
            return EXIT_LOCKED
        if result.report is None and result.outcome == "failed":
            return EXIT_ERROR
        if result.outcome in ("partial", "failed"):
            return EXIT_PARTIAL
        return EXIT_OK

    def _report(self, config: Config, result: api_ops.CycleResult) -> None:
        report = result.report
        fields: dict[str, Any] = {
            "run": result.run_id,
            "policy": result.policy,
            "dataset": result.dataset,
            "trigger": result.trigger,
            "outcome": result.outcome,
            "planned": result.planned,
            "done": report.done if report else 0,
            "failed": report.failed if report else 0,
            "skipped": report.skipped if report else 0,
            "bytes": report.bytes if report else 0,
            "seconds": round(result.finished_at - result.started_at, 3),
        }
        if result.error:
            fields["error"] = result.error
        level = logging.INFO if result.outcome in ("ok", "interrupted") else logging.WARNING
        log.log(level, "run finished", extra={"fields": fields})
        for warning in result.warnings:
            log.warning("scan: %s", warning)
        failures = [
            {"key": p.action.key, "op": p.action.op, "target": p.action.target, "error": p.error}
            for p in (report.problems if report else [])[:20]
        ]
        payload = {
            **fields,
            "event": alerts.event_of(result.outcome),
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "host": socket.gethostname(),
            "config": config.path,
            "failures": failures,
        }
        if config.alerts.command or config.alerts.webhook:
            alerts.send(config.alerts, payload)

    def _reload(self, config: Config) -> Config:
        self.reload_requested = False
        try:
            new = api.load(self.options.config_path, index=self.options.index)
        except TierctlError as exc:
            log.error(
                "config reload failed; keeping the previous config: %s",
                str(exc).replace("\n", "; "),
                extra={"fields": {"config": config.path}},
            )
            return config
        if new.index_path != config.index_path:
            log.error("config reload refused: the index moved (%s); restart the daemon", new.index_path)
            return config
        _info("config reloaded", config=new.path, scheduled=sum(1 for p in new.policies if p.schedule))
        return new

    # -- metrics ---------------------------------------------------------------------------------
    def _start_metrics(self, config: Config) -> None:
        address = self.options.metrics_addr or config.metrics.listen
        if not address or self.options.once:
            return
        host, port = parse_address(address)
        self.server = metrics.MetricsServer(host, port)
        self.server.start()
        bound_host, bound_port = self.server.address
        _info("metrics served", url=f"http://{bound_host}:{bound_port}/metrics")

    def _refresh_metrics(self, config: Config) -> None:
        if self.server is None and not config.metrics.textfile:
            return
        try:
            text = metrics.render(
                api_ops.metrics_snapshot(config), daemon_started=None if self.options.once else self.started
            )
            if self.server is not None:
                self.server.update(text)
            if config.metrics.textfile:
                metrics.write_textfile(config.metrics.textfile, text)
        except (OSError, TierctlError) as exc:
            log.warning("metrics not refreshed: %s", exc)


def run_daemon(options: DaemonOptions) -> int:
    return Daemon(options).run()
