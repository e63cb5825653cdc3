"""The S3 mover's lean path speaks HTTP/1.1 itself (movers/s3_requests.py): these tests put
a scripted server on a real socket and check what the mover makes of each kind of answer
(chunked bodies, interim 100s, Connection: close, HTTP/1.0, bodies read to the close,
folded and bare-LF headers, truncated or garbled answers, stray bytes) and what it sends."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tierctl.errors import MoverError, ObjectNotFound
from tierctl.movers.s3 import S3Mover

LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"  # 1_700_000_000
HEAD_OK = (
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "e"\r\n'
    f"Last-Modified: {LAST_MODIFIED}\r\nx-amz-meta-mtime: 1700000000\r\n\r\n"
).encode()
NO_BUCKET_XML = b"<?xml version='1.0'?><Error><Code>NoSuchBucket</Code><Message>m</Message></Error>"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which accepted connection carried it


# (request number, request) -> bytes to send, and whether to close the connection after them
Script = Callable[[int, Request], "tuple[bytes, bool]"]


@dataclass
class ScriptedServer:
    script: Script
    requests: list[Request] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn, self.connections), daemon=True).start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                request = Request(method, path, headers, body, number)
                self.requests.append(request)
                answer, close = self.script(len(self.requests) - 1, request)
                conn.sendall(answer)
                if close:
                    return

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def _mover(server: ScriptedServer) -> S3Mover:
    mover = S3Mover("s3://bkt/data", endpoint_url=server.endpoint, region="us-east-1", key="k", secret="s")
    assert mover._requests() is not None
    return mover


def _put_answer(etag: str = '"0cc175b9c0f1b6a831c399e269772661"', extra: str = "") -> bytes:
    """A PUT answer carrying ETag (MD5 of b"a") and Last-Modified: no HEAD follows."""
    return (
        f"HTTP/1.1 200 OK\r\nETag: {etag}\r\nLast-Modified: {LAST_MODIFIED}\r\n"
        f"{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_what_a_put_sends(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, r: (_put_answer(), False))
    mover = _mover(server)
    entry = mover.write("dir/a b+c", [b"a"], size=1, mtime=1_700_000_000.5, metadata={"Owner": "x  y"})
    assert entry.checksum and entry.checksum.endswith(":0cc175b9c0f1b6a831c399e269772661")
    (put,) = server.requests
    assert (put.method, put.path, put.body) == ("PUT", "/bkt/data/dir/a%20b%2Bc", b"a")
    assert put.headers["content-length"] == "1" and put.headers["host"] == server.endpoint[len("http://") :]
    assert put.headers["content-md5"] == "DMF1ucDxtqgxw5niaXcmYQ=="
    assert put.headers["x-amz-meta-owner"] == "x  y" and put.headers["x-amz-meta-mtime"] == "1700000000.5"
    assert put.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=k/")
    assert "x-amz-content-sha256" in put.headers and "x-amz-date" in put.headers


def test_a_chunked_error_body_is_read_and_the_connection_kept(
    serve: Callable[[Script], ScriptedServer],
) -> None:
    chunks = NO_BUCKET_XML[:20], NO_BUCKET_XML[20:]
    chunked = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: t\r\n\r\n"
    error = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
    server = serve(lambda n, r: (error if n == 0 else HEAD_OK, False))
    mover = _mover(server)
    with pytest.raises(MoverError, match="bucket does not exist"):
        mover.write("k", [b"a"], size=1, mtime=1.0)
    assert mover.stat("k").size == 5  # the next answer is read whole, on the same connection
    assert server.connections == 1


def test_an_interim_100_continue_is_skipped(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, r: (b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD_OK, False))
    mover = _mover(server)
    assert mover.stat("k").size == 5
    assert mover.stat("k").size == 5
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        HEAD_OK.replace(b"200 OK\r\n", b"200 OK\r\nConnection: close\r\n"),
        HEAD_OK.replace(b"HTTP/1.1", b"HTTP/1.0"),
    ],
    ids=["connection-close", "http-1.0"],
)
def test_a_connection_the_answer_closes_is_not_reused(
    serve: Callable[[Script], ScriptedServer], answer: bytes
) -> None:
    # The server would go on serving the connection: only the client's reading of the
    # answer makes it open a new one.
    server = serve(lambda n, r: (answer, False))
    mover = _mover(server)
    for _ in range(3):
        assert mover.stat("k").size == 5
    assert server.connections == 3


def test_http_1_0_keep_alive_is_reused(serve: Callable[[Script], ScriptedServer]) -> None:
    answer = HEAD_OK.replace(b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n")
    server = serve(lambda n, r: (answer, False))
    mover = _mover(server)
    for _ in range(3):
        assert mover.stat("k").size == 5
    assert server.connections == 1


def test_a_body_without_length_is_read_to_the_close(serve: Callable[[Script], ScriptedServer]) -> None:
    error = b"HTTP/1.1 404 Not Found\r\n\r\n" + NO_BUCKET_XML
    server = serve(lambda n, r: (error, True) if n == 0 else (HEAD_OK, False))
    mover = _mover(server)
    with pytest.raises(MoverError, match="bucket does not exist"):
        mover.write("k", [b"a"], size=1, mtime=1.0)
    assert mover.stat("k").size == 5
    assert server.connections == 2


def test_folded_and_bare_lf_headers_are_read(serve: Callable[[Script], ScriptedServer]) -> None:
    folded = HEAD_OK.replace(b"Tue, 14 Nov 2023 22:13:20 GMT", b"Tue, 14 Nov 2023\r\n\t 22:13:20 GMT")
    folded = folded.replace(b"x-amz-meta-mtime: 1700000000\r\n", b"")
    bare = HEAD_OK.replace(b"\r\n", b"\n")
    server = serve(lambda n, r: (folded if n == 0 else bare, False))
    mover = _mover(server)
    assert mover.stat("k").mtime == 1_700_000_000  # from the folded Last-Modified
    assert mover.stat("k").size == 5
    assert server.connections == 1


def test_stray_bytes_after_an_answer_retire_the_connection(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, r: (HEAD_OK + b"garbage", False))
    mover = _mover(server)
    for _ in range(3):
        assert mover.stat("k").size == 5
    assert server.connections == 3


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 500\r\n\r\n" + NO_BUCKET_XML,  # short body
        b"HTTP/1.1 200 OK\r\nContent-Len",  # cut in the headers
        b"",  # closed without an answer (on a new connection: not sent again)
        b"SPDY/3 200 OK\r\n\r\n",  # not HTTP
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",  # bad chunk size
    ],
    ids=["short-body", "cut-headers", "no-answer", "bad-status-line", "bad-chunk"],
)
def test_a_broken_answer_is_a_retryable_error(
    serve: Callable[[Script], ScriptedServer], answer: bytes
) -> None:
    server = serve(lambda n, r: (answer, True))
    mover = _mover(server)
    with pytest.raises(MoverError) as failed:
        mover.write("k", [b"a"], size=1, mtime=1.0)
    assert failed.value.retryable and "cannot reach the store" in str(failed.value)
    assert len(server.requests) == 1


def test_not_found_and_the_etag_check_still_apply(serve: Callable[[Script], ScriptedServer]) -> None:
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    server = serve(lambda n, r: (missing, False) if r.method == "HEAD" else (_put_answer('"0"'), False))
    mover = _mover(server)
    with pytest.raises(ObjectNotFound):
        mover.stat("k")
    entry = mover.write("k", [b"a"], size=1, mtime=1.0)
    # The store's ETag is what the entry carries: copy_verified compares it with our MD5.
    assert entry.checksum and entry.checksum.endswith(":0")


def test_a_header_that_would_inject_a_line_is_never_sent(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda n, r: (_put_answer(), False))
    lean = _mover(server)._requests()
    assert lean is not None
    for bad in (
        {"x-amz-meta-a": "v\r\nx-amz-meta-b: injected"},
        {"x-amz-meta-a": "v\nx-amz-meta-b: injected"},
        {"x-amz-meta-a": "v\rx-amz-meta-b: injected"},
        {"x-amz-meta-a b": "v"},
        {"x:y": "v"},
    ):
        with pytest.raises(ValueError):
            lean.put("data/k", b"a", bad)
    assert server.requests == []
