"""The lean request path of the S3 mover: single-object PUT, HEAD and DELETE.

Small objects are bound by the client's CPU per request (DESIGN.md, "Performance
principles"): through s3fs/aiobotocore one upload costs ~1.8 ms of CPU, most of it in
botocore's generic request pipeline (event hooks, endpoint rules, user-agent building,
response parsing) and in handing each call to s3fs's event loop thread. These three
requests are simple enough to send directly, from the calling thread, over a small pool of
persistent connections: :mod:`.s3_sign` signs each one (botocore's SigV4 signature, byte
for byte, with the signing key derived once a day), and the request and its answer are
written and read here as HTTP/1.1 (http.client's email-based header parsing alone cost
more CPU than the rest of an upload). Against ``rclone serve s3`` the mover's share of one
small upload (HEAD, PUT, HEAD) is ~0.4 ms of CPU, ~1 ms with botocore's signer and
http.client.

What is not done here is exactly what botocore decides, resolved once per mover by a
botocore client built with the mover's options (:func:`open_requests`): the object URL
(endpoint, path or virtual-host addressing, FIPS/dual-stack settings of the profile), the
signing region and name, the credentials (explicit key/secret/token, or the profile and
environment chain; refreshable credentials are read afresh for every request), and the CA
bundle (``ca_bundle`` / ``AWS_CA_BUNDLE``, else botocore's). TLS certificates and host
names are always verified.

When the lean path cannot reproduce the s3fs path's setup (a proxy in the environment,
no credentials, an S3 Express bucket) :func:`open_requests` returns None, and when the
store answers that the bucket lives elsewhere (a region redirect, which aiobotocore
follows) a request raises :class:`LeanUnavailable`: the mover then uses s3fs for good.

Answers are shaped like botocore's (``ETag``, ``ContentLength``, ``LastModified``,
``Metadata``...), and S3 errors are raised as :class:`S3ResponseError` carrying a
botocore-style ``response`` mapping, so one classification (:mod:`.s3_errors`) serves both
paths.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import re
import select
import socket
import ssl
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tierctl.movers.options import StoreOptions
from tierctl.movers.s3_sign import SigV4Signer, amz_date, payload_hash

DEFAULT_TIMEOUT = 60.0  # botocore's connect and read timeouts
META_PREFIX = "x-amz-meta-"
# Answers that mean "this bucket is served from another region or endpoint": aiobotocore's
# redirect handling follows them, this path does not.
_REDIRECT_STATUS = frozenset({301, 307})
_REDIRECT_CODES = frozenset({"PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed"})


class LeanUnavailable(Exception):
    """This store needs what only the s3fs path does (a region redirect): use that."""


class S3ResponseError(Exception):
    """An S3 error answer; ``response`` has botocore's shape (``Error.Code``, status)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"S3 error {code} (HTTP {status})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


# An answer's headers: names in lower case (S3 sends no header twice that matters here).
Headers = dict[str, str]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes


@dataclass(frozen=True)
class _Target:
    """Where and how requests for one bucket go, as botocore resolved it."""

    scheme: str
    host: str  # the Host header: host[:port], the port only when not the scheme's default
    connect_host: str
    port: int
    path_prefix: str  # URL path of the bucket, ending in "/" ("/bucket/" or "/")
    region: str  # signing region
    service: str  # signing name


class S3Requests:
    """Signed PUT/HEAD/DELETE of objects of one bucket. Thread-safe: each request takes a
    connection from the pool (or opens one) and gives it back if it may be reused."""

    def __init__(
        self,
        target: _Target,
        credentials: Any,
        *,
        max_idle: int,
        connect_timeout: float,
        read_timeout: float,
        ssl_context: ssl.SSLContext | None,
        extra_headers: Mapping[str, str],
    ) -> None:
        from botocore.utils import percent_encode

        self._target = target
        self._credentials = credentials
        self._signer = SigV4Signer(target.region, target.service)
        self._quote = percent_encode
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._extra = dict(extra_headers)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    # -- the three requests -----------------------------------------------------------------
    def head(self, full_key: str) -> dict[str, Any]:
        """HeadObject, answered in botocore's shape."""
        return head_fields(self.send("HEAD", full_key).headers)

    def put(self, full_key: str, body: bytes, headers: Mapping[str, str]) -> Headers:
        """PutObject of ``body``; ``headers``: Content-MD5, metadata, storage class."""
        return self.send("PUT", full_key, body=body, headers=headers).headers

    def delete(self, full_key: str) -> None:
        self.send("DELETE", full_key)

    # -- plumbing ---------------------------------------------------------------------------
    def send(
        self, method: str, full_key: str, *, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """One signed request. Raises :class:`S3ResponseError` for S3 error answers,
        :class:`LeanUnavailable` for redirects, ``OSError`` / ``http.client.HTTPException``
        when the connection fails (the caller classifies them)."""
        target = self._target
        path = target.path_prefix + self._quote(full_key, safe="/~")
        given = {**self._extra, **headers} if headers else self._extra
        fields = [*given.items(), ("Host", target.host)]
        if body or method == "PUT":
            fields.append(("Content-Length", str(len(body))))
        # Credentials are read per request: a refreshable set (a role, SSO) renews itself.
        frozen = self._credentials.get_frozen_credentials()
        signed = self._signer.sign(
            method,
            path,
            fields,
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            token=frozen.token,
            content_sha256=payload_hash(body),
            timestamp=amz_date(),
        )
        answer = self._exchange(method, _request_head(method, path, signed), body)
        if answer.status >= 300:
            raise _error_of(answer, method)
        return answer

    def _exchange(self, method: str, head: bytes, body: bytes) -> Answer:
        """Send on a pooled connection. A reused connection the server closed in the
        meantime fails before any answer arrives: the request is sent again, once, on a new
        connection (idempotent requests only, as every request here is)."""
        connection, reused = self._take()
        try:
            try:
                return self._roundtrip(connection, method, head, body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    raise
            connection = self._connect()
            return self._roundtrip(connection, method, head, body)
        except BaseException:
            connection.close()
            raise

    def _roundtrip(self, connection: _Connection, method: str, head: bytes, body: bytes) -> Answer:
        sock = connection.sock
        if len(body) <= _JOIN_LIMIT:
            sock.sendall(head + body)  # one send, one segment for a small object
        else:
            sock.sendall(head)
            sock.sendall(body)
        answer, reusable = connection.read_answer(method)
        if reusable:
            self._give_back(connection)
        else:
            connection.close()
        return answer

    def _take(self) -> tuple[_Connection, bool]:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(), False
            if not _dropped(connection.sock):
                return connection, True
            connection.close()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> _Connection:
        target = self._target
        sock = socket.create_connection((target.connect_host, target.port), self._connect_timeout)
        try:
            with contextlib.suppress(OSError):  # as http.client: not every OS has it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.scheme == "https":
                assert self._ssl_context is not None
                sock = self._ssl_context.wrap_socket(sock, server_hostname=target.connect_host)
            sock.settimeout(self._read_timeout)
        except BaseException:
            sock.close()
            raise
        return _Connection(sock)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


# -- HTTP/1.1 on a socket ---------------------------------------------------------------------
# http.client parses every answer's headers with email.parser and builds each request from
# many small sends and checks: more CPU than the rest of a small upload. These requests and
# their answers are simple (no body but a PUT's bytes, no body back but an error's XML), so
# they are written and read here directly, with http.client's limits and exceptions.
_JOIN_LIMIT = 1 << 20  # bodies up to this go out in the same send as the request head
_MAX_LINE = 65536  # http.client's _MAXLINE
_MAX_HEADERS = 100  # http.client's _MAXHEADERS
_MAX_HEAD = _MAX_LINE + _MAX_HEADERS * 1024  # bytes of status line and headers
_RECV = 65536
_BAD_NAME = re.compile(r"[\x00-\x20:\x7f-\U0010ffff]").search  # in a header name


def _request_head(method: str, path: str, headers: list[tuple[str, str]]) -> bytes:
    """Request line and headers, ending in the blank line. A CR or LF anywhere (header
    injection), an empty name or one with a colon, a space or a control character is
    refused, as http.client refuses them."""
    lines = [f"{method} {path} HTTP/1.1"]
    lines.extend([f"{name}: {value}" for name, value in headers])
    lines.append("Accept-Encoding: identity")  # as http.client: no compressed answers
    text = "\r\n".join(lines)
    if (
        text.count("\n") != len(lines) - 1
        or text.count("\r") != len(lines) - 1
        or not all(names := [name for name, _ in headers])
        or _BAD_NAME("".join(names))
        or " " in path
    ):
        raise ValueError("refused to send a request with an invalid method, path or header")
    return (text + "\r\n\r\n").encode("latin-1")


class _Connection:
    """One socket and the bytes received on it that no answer has used yet."""

    __slots__ = ("_pending", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = bytearray()

    def close(self) -> None:
        self.sock.close()

    def _more(self) -> bool:
        piece = self.sock.recv(_RECV)
        self._pending += piece
        return bool(piece)

    def read_answer(self, method: str) -> tuple[Answer, bool]:
        """The answer to a request of ``method``, and whether the connection may carry
        another request (HTTP/1.1 keep-alive, the whole answer read, nothing left over)."""
        while True:
            version, status, headers = self._read_head()
            if not 100 <= status < 200:
                break  # 100 Continue and other interim answers are skipped, as http.client does
        keep = _keep_alive(version, headers.get("connection", ""))
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        else:
            length = _content_length(headers.get("content-length"))
            if length is None:
                body, keep = self._read_to_close(), False
            else:
                body = self._read_exactly(length)
        return Answer(status, headers, body), keep and not self._pending

    def _read_head(self) -> tuple[str, int, Headers]:
        """Status line and headers. Names lower-cased; a repeated header keeps its first
        value, as ``HTTPMessage.get`` (so botocore) reads it."""
        pending = self._pending
        searched = 0
        while True:
            end = pending.find(b"\n\r\n", searched)
            bare = pending.find(b"\n\n", searched)  # bare LF line ends, as http.client accepts
            if bare >= 0 and (end < 0 or bare < end):
                end, skip = bare, 2
            else:
                skip = 3
            if end >= 0:
                break
            if len(pending) > _MAX_HEAD:
                raise http.client.LineTooLong("header block")
            searched = max(0, len(pending) - 2)
            if not self._more():
                if not pending:
                    raise http.client.RemoteDisconnected("Remote end closed connection without response")
                raise http.client.IncompleteRead(bytes(pending))
        text = pending[:end].decode("iso-8859-1")
        del pending[: end + skip]
        lines = text.splitlines()
        status_line = lines[0] if lines else ""
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or len(parts[1]) != 3 or not parts[1].isdigit():
            raise http.client.BadStatusLine(status_line)
        if len(lines) > _MAX_HEADERS + 1:
            raise http.client.HTTPException(f"got more than {_MAX_HEADERS} headers")
        if len(text) > _MAX_LINE and max(map(len, lines)) > _MAX_LINE:
            raise http.client.LineTooLong("header line")
        headers: Headers = {}
        if "\n " in text or "\n\t" in text:
            _fold_headers(lines, headers)
            return parts[0], int(parts[1]), headers
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:  # else not a header line: skipped, as email.parser does
                headers.setdefault(name.lower(), value.strip())
        return parts[0], int(parts[1]), headers

    def _read_exactly(self, length: int) -> bytes:
        pending = self._pending
        while len(pending) < length:
            if not self._more():
                raise http.client.IncompleteRead(bytes(pending), length - len(pending))
        body = bytes(pending[:length])
        del pending[:length]
        return body

    def _read_line(self) -> bytes:
        pending = self._pending
        while (end := pending.find(b"\n")) < 0:
            if len(pending) > _MAX_LINE:
                raise http.client.LineTooLong("chunk size")
            if not self._more():
                raise http.client.IncompleteRead(bytes(pending))
        line = bytes(pending[: end + 1])
        del pending[: end + 1]
        return line

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_field = self._read_line().split(b";", 1)[0].strip()
            try:
                size = int(size_field, 16)
            except ValueError:
                raise http.client.IncompleteRead(b"".join(parts)) from None
            if size == 0:
                while self._read_line().strip():  # trailers, up to the blank line
                    pass
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._read_exactly(2)  # the CRLF after the chunk

    def _read_to_close(self) -> bytes:
        while self._more():
            pass
        body = bytes(self._pending)
        self._pending.clear()
        return body


def _fold_headers(lines: list[str], headers: Headers) -> None:
    """Headers with obsolete folded lines (a line that starts with a space or tab
    continues the value before it), as email.parser joins them."""
    folding = ""  # the header whose first value the next folded line continues
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if folding:
                headers[folding] = f"{headers[folding]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.lower()
        folding = name if colon and name not in headers else ""
        if colon:
            headers.setdefault(name, value.strip())


def _keep_alive(version: str, connection: str) -> bool:
    tokens = {token.strip().lower() for token in connection.split(",")}
    if version == "HTTP/1.1":
        return "close" not in tokens
    return "keep-alive" in tokens  # HTTP/1.0 closes unless asked not to


def _content_length(value: str | None) -> int | None:
    """None (read to the end) when absent or not a length, as http.client treats it."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _dropped(sock: socket.socket) -> bool:
    """An idle connection the server has closed (or that holds stray bytes) is readable."""
    try:
        if hasattr(select, "poll"):  # no FD_SETSIZE limit, unlike select()
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _error_of(answer: Answer, method: str) -> Exception:
    code = _error_code(answer.body) or str(answer.status)
    if (
        answer.status in _REDIRECT_STATUS
        or code in _REDIRECT_CODES
        or (answer.status == 400 and answer.headers.get("x-amz-bucket-region"))
    ):
        return LeanUnavailable(f"{method}: {code} (HTTP {answer.status})")
    return S3ResponseError(code, answer.status)


def _error_code(body: bytes) -> str | None:
    """``<Error><Code>...</Code></Error>``; None for bodiless answers (HEAD) or non-XML."""
    if not body:
        return None
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    code = root.findtext("Code")
    return code.strip() if code else None


def head_fields(headers: Headers) -> dict[str, Any]:
    """A HEAD/PUT answer's headers as botocore's HeadObject fields (what the mover reads)."""
    fields: dict[str, Any] = {
        "ETag": headers.get("etag", ""),
        "ContentLength": int(headers.get("content-length") or 0),
        "Metadata": {
            name[len(META_PREFIX) :]: value for name, value in headers.items() if name.startswith(META_PREFIX)
        },
    }
    modified = last_modified(headers)
    if modified is not None:
        fields["LastModified"] = modified
    for header, name in (
        ("x-amz-storage-class", "StorageClass"),
        ("x-amz-restore", "Restore"),
        ("content-type", "ContentType"),
    ):
        value = headers.get(header)
        if value is not None:
            fields[name] = value
    return fields


def last_modified(headers: Headers) -> datetime | None:
    value = headers.get("last-modified")
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


# -- setup ---------------------------------------------------------------------------------
def open_requests(bucket: str, options: StoreOptions) -> S3Requests | None:
    """The lean path for ``bucket`` with the tier's ``options``, or None where it cannot
    reproduce the s3fs path's setup. Builds one botocore client (no request is sent) to
    learn the URL, signing scope and credentials botocore would use."""
    if bucket.endswith("--x-s3"):
        return None  # S3 Express directory buckets sign with session credentials
    import botocore.session
    from botocore.config import Config
    from botocore.credentials import Credentials
    from botocore.exceptions import BotoCoreError
    from botocore.utils import get_environ_proxies

    try:
        session = botocore.session.Session(profile=options.profile)
        key, secret = options.reveal("key"), options.reveal("secret")
        if key or secret:
            if not (key and secret):
                return None  # a half-given pair: the s3fs path reports it
            credentials: Any = Credentials(key, secret, options.reveal("session_token"))
        else:
            credentials = session.get_credentials()  # profile, environment, role... chain
        if credentials is None:
            return None
        client = session.create_client(
            "s3",
            region_name=options.region,
            endpoint_url=options.endpoint_url,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=options.reveal("session_token"),
            config=Config(signature_version="s3v4"),
        )
        probe = client.generate_presigned_url(
            "head_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
        )
        ca_bundle = session.get_config_variable("ca_bundle")
    except (BotoCoreError, ValueError, AttributeError):
        return None  # the s3fs path reports the setup problem in its own words
    target = _target_of(probe)
    if target is None or get_environ_proxies(probe):
        return None
    context = None
    if target.scheme == "https":
        from botocore.httpsession import get_cert_path

        context = ssl.create_default_context(cafile=ca_bundle or get_cert_path(True))
    extra = {"x-amz-request-payer": "requester"} if options.requester_pays else {}
    return S3Requests(
        target,
        credentials,
        max_idle=max(10, options.max_connections),
        connect_timeout=options.connect_timeout or DEFAULT_TIMEOUT,
        read_timeout=options.read_timeout or DEFAULT_TIMEOUT,
        ssl_context=context,
        extra_headers=extra,
    )


def _target_of(presigned: str) -> _Target | None:
    """Host, bucket path and signing scope from a presigned HEAD of the key ``k``."""
    parts = urlsplit(presigned)
    credential = parse_qs(parts.query).get("X-Amz-Credential", [""])[0].split("/")
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.path.endswith("/k"):
        return None
    if len(credential) != 5:
        return None
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    hostname = parts.hostname
    try:
        shown = f"[{hostname}]" if ipaddress.ip_address(hostname).version == 6 else hostname
    except ValueError:
        shown = hostname
    return _Target(
        scheme=parts.scheme,
        host=shown if port == default_port else f"{shown}:{port}",
        connect_host=hostname,
        port=port,
        path_prefix=parts.path[:-1],
        region=credential[2],
        service=credential[3],
    )
