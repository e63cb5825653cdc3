"""Prometheus text exposition of the index's runs and usage, to a file and/or over HTTP.

The numbers come from the index (the journal of every run), not from counters in memory,
so they survive restarts and include manual applies. The text is rebuilt after every
daemon run; the HTTP server only hands out the latest text, it never touches the index.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tierctl.api_ops import MetricsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value:.17g}" for labels, value in samples]
    return lines


def render(snapshot: MetricsSnapshot, *, daemon_started: float | None = None) -> str:
    t = snapshot.totals
    lines: list[str] = []
    lines += _family(
        "tierctl_runs_total",
        "counter",
        "Runs recorded in the index, by policy and outcome.",
        ((_labels(policy=x.policy, outcome=x.outcome), x.runs) for x in t),
    )
    by_policy: dict[str, list[float]] = {}
    for x in t:
        row = by_policy.setdefault(x.policy, [0, 0])
        row[0] += x.bytes
        row[1] += x.failed
    lines += _family(
        "tierctl_bytes_moved_total",
        "counter",
        "Bytes copied by applied actions, by policy.",
        ((_labels(policy=p), v[0]) for p, v in sorted(by_policy.items())),
    )
    lines += _family(
        "tierctl_actions_failed_total",
        "counter",
        "Actions that failed, by policy.",
        ((_labels(policy=p), v[1]) for p, v in sorted(by_policy.items())),
    )
    lines += _family(
        "tierctl_last_success_timestamp_seconds",
        "gauge",
        "When the policy's latest successful run finished (Unix time).",
        (
            (_labels(policy=p), snapshot.last_success[p])
            for p in snapshot.policies
            if p in snapshot.last_success
        ),
    )
    lines += _family(
        "tierctl_objects",
        "gauge",
        "Objects present per dataset and tier, as the index knows them.",
        ((_labels(dataset=u.dataset, tier=u.tier), u.objects) for u in snapshot.usage),
    )
    lines += _family(
        "tierctl_bytes",
        "gauge",
        "Bytes present per dataset and tier, as the index knows them.",
        ((_labels(dataset=u.dataset, tier=u.tier), u.bytes) for u in snapshot.usage),
    )
    if daemon_started is not None:
        lines += _family(
            "tierctl_daemon_start_timestamp_seconds",
            "gauge",
            "When the running daemon started (Unix time).",
            [("", daemon_started)],
        )
    return "\n".join(lines) + "\n"


def write_textfile(path: str, text: str) -> None:
    """Atomically (temp + rename), as node_exporter's textfile collector requires."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


IDLE_POLL = 3600.0


class MetricsServer:
    """Serves the latest text at ``/metrics`` from a background thread."""

    def __init__(self, host: str, port: int) -> None:
        self._text = "# no run yet\n"
        self._guard = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = owner.text.encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not news

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        # No polling: serve_forever sleeps in select() until a scrape arrives (its default
        # 0.5 s poll would wake an idle daemon twice a second); close() wakes it instead.
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": IDLE_POLL},
            name="tierctl-metrics",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def text(self) -> str:
        with self._guard:
            return self._text

    def update(self, text: str) -> None:
        with self._guard:
            self._text = text

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        # shutdown() waits for serve_forever to acknowledge: it would block forever on a
        # server that was never started.
        if self.thread.is_alive():
            # shutdown() raises the flag serve_forever checks after each select(); a
            # connection of our own ends that select() now instead of after IDLE_POLL.
            stopper = threading.Thread(target=self.server.shutdown, daemon=True)
            stopper.start()
            while stopper.is_alive():
                with contextlib.suppress(OSError):
                    socket.create_connection(self.address, timeout=1.0).close()
                stopper.join(0.05)
        self.server.server_close()
