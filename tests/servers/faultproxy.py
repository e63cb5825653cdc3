"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for putting in front of moto.

``FaultProxy(upstream)`` forwards every request to ``upstream`` (``http://host:port``) and
records it; a programmable schedule of :class:`Fault` rules makes chosen requests fail
instead:

- ``status``: answer 500 InternalError / 503 SlowDown / 403 InvalidAccessKeyId with S3's
  XML error body, without forwarding;
- ``drop_request``: read part of the request, then close the connection (no answer);
- ``drop_response``: forward, then send the status line, headers and half the body,
  then close the connection;
- ``stall``: hold the request ``seconds`` before forwarding it (or forever-ish, bounded by
  ``seconds``, then close the connection without an answer);
- ``corrupt``: flip one byte of a PUT body on its way to the store (wire corruption);
- ``hook``: call ``hook(request)`` (tests kill a client here, at an exact request) and
  hang up without an answer; before forwarding, or with ``after_forward`` once the store
  has acted on the request.

Each rule fires at most ``times`` times (bounded) for requests its ``match`` accepts,
after skipping the first ``after`` matches. The proxy stops by itself after ``lifetime``
seconds, and every stall is bounded, so a test that forgets it cannot hang.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)
BAD_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidAccessKeyId</Code>'
    b"<Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>"
)
_BODIES = {500: INTERNAL, 503: SLOWDOWN, 403: BAD_KEY}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}


@dataclass(frozen=True)
class Request:
    """What the proxy saw: method, path (key part), query parameters, and S3 operation."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """The S3 API call, from method and query (enough for the calls tierctl makes)."""
        q, m = self.query, self.method
        if m == "PUT":
            if "partNumber" in q:
                return "UploadPart"
            return "CopyObject" if "x-amz-copy-source" in self.headers else "PutObject"
        if m == "POST":
            if "uploads" in q:
                return "CreateMultipartUpload"
            if "uploadId" in q:
                return "CompleteMultipartUpload"
            return "POST"
        if m == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in q else "DeleteObject"
        if m == "GET":
            if "uploads" in q:
                return "ListMultipartUploads"
            if "list-type" in q or self.path.count("/") <= 1:
                return "ListObjects"
            return "GetObject"
        if m == "HEAD":
            return "HeadObject"
        return m


@dataclass
class Fault:
    """One rule of the schedule. ``kind``: status | drop_request | drop_response | stall |
    corrupt | hook. ``match(request) -> bool`` picks the requests it applies to."""

    kind: str
    match: Callable[[Request], bool] = lambda r: True
    times: int = 1
    after: int = 0
    every: int = 1  # fire on every n-th match only (after ``after``)
    status: int = 503
    seconds: float = 0.0
    hook: Callable[[Request], None] | None = None
    after_forward: bool = False  # hook: forward first (the store acts), then hook and hang up
    seen: int = 0
    fired: int = 0

    def take(self, request: Request) -> bool:
        if self.fired >= self.times or not self.match(request):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.seen - self.after - 1) % self.every:
            return False
        self.fired += 1
        return True


def op(*names: str) -> Callable[[Request], bool]:
    """A ``match`` for requests whose S3 operation is one of ``names``."""
    return lambda r: r.operation in names


def key_matches(pattern: str) -> Callable[[Request], bool]:
    rx = re.compile(pattern)
    return lambda r: bool(rx.search(r.path))


@dataclass
class LogEntry:
    request: Request
    status: int | None  # None: no answer was sent (dropped)
    fault: str | None
    at: float = field(default_factory=time.monotonic)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hang up mid-request on purpose (kills, timeouts): not news


class FaultProxy:
    """A running proxy: ``endpoint_url`` goes where moto's would."""

    def __init__(self, upstream: str, *, lifetime: float = 300.0, max_stall: float = 30.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.lifetime = lifetime
        self.max_stall = max_stall
        self.faults: list[Fault] = []
        self.log: list[LogEntry] = []
        self._guard = threading.Lock()
        self._stopping = threading.Event()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True)
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    # -- schedule and figures --------------------------------------------------------------
    def add(self, *faults: Fault) -> None:
        with self._guard:
            self.faults.extend(faults)

    def clear(self) -> None:
        with self._guard:
            self.faults.clear()

    def injected(self) -> int:
        return sum(1 for e in self.log if e.fault)

    def count(self, operation: str | None = None, *, fault: bool | None = None) -> int:
        return sum(
            1
            for e in list(self.log)
            if (operation is None or e.request.operation == operation)
            and (fault is None or bool(e.fault) == fault)
        )

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- life ------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the handler -----------------------------------------------------------------------
    def _pick(self, request: Request) -> Fault | None:
        with self._guard:
            for fault in self.faults:
                if fault.take(request):
                    return fault
        return None

    def _record(self, request: Request, status: int | None, fault: str | None) -> None:
        with self._guard:
            self.log.append(LogEntry(request, status, fault))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return bytes(out)
                        piece = self.rfile.read(size)
                        if len(piece) != size:
                            raise ConnectionError("chunked request body cut short")
                        out += piece
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) != length:  # the client went away mid-body: forward nothing
                    raise ConnectionError(f"request body cut at {len(body)} of {length} bytes")
                return body

            def _drop(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request(
                    self.command, parts.path, parse_qs(parts.query, keep_blank_values=True), headers
                )
                fault = proxy._pick(request)
                kind = fault.kind if fault else None
                if kind == "drop_request":
                    length = int(self.headers.get("Content-Length") or 0)
                    if length:
                        self.rfile.read(min(length, max(1, length // 2)))
                    proxy._record(request, None, kind)
                    return self._drop()
                body = self._read_body()
                if kind == "hook":
                    assert fault is not None and fault.hook is not None
                    if fault.after_forward:
                        self._forward(body)
                    fault.hook(request)
                    proxy._record(request, None, kind)
                    return self._drop()
                if kind == "status":
                    assert fault is not None
                    proxy._record(request, fault.status, kind)
                    return self._answer(
                        fault.status, _BODIES.get(fault.status, b""), [("Content-Type", "application/xml")]
                    )
                if kind == "stall":
                    assert fault is not None
                    deadline = time.monotonic() + min(fault.seconds, proxy.max_stall)
                    while time.monotonic() < deadline and not proxy._stopping.is_set():
                        time.sleep(0.02)
                    if fault.status == 0:  # stall, then hang up without an answer
                        proxy._record(request, None, kind)
                        return self._drop()
                if kind == "corrupt" and body:
                    flipped = bytearray(body)
                    flipped[len(flipped) // 2] ^= 0xFF
                    body = bytes(flipped)
                status, reason, out_headers, out_body = self._forward(body)
                if kind == "drop_response":
                    # Logged before the client can see any of the answer (a HEAD's is whole
                    # once its headers are sent): a test reading the log right after sees it.
                    proxy._record(request, None, kind)
                    self.send_response(status, reason)
                    for name, value in out_headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(out_body)))
                    self.end_headers()
                    self.wfile.write(out_body[: len(out_body) // 2])
                    self.wfile.flush()
                    return self._drop()
                proxy._record(request, status, kind if kind in ("stall", "corrupt") else None)
                self.send_response(status, reason)
                for name, value in out_headers:
                    self.send_header(name, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(out_body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(out_body)

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body if body else None, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    kept = [
                        (k, v)
                        for k, v in response.getheaders()
                        if k.lower() not in _HOP_BY_HOP
                        and (k.lower() != "content-length" or self.command == "HEAD")
                    ]
                    return response.status, response.reason, kept, data
                finally:
                    conn.close()

            def _handle_any(self) -> None:
                try:
                    self._serve()
                except (TimeoutError, ConnectionError, BrokenPipeError):
                    self.close_connection = True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle_any

        return Handler
