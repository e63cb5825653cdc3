"""The lean request path of the S3 mover: single-object PUT, HEAD and DELETE.

Small objects are bound by the client's CPU per request (DESIGN.md, "Performance
principles"): through s3fs/aiobotocore one upload costs ~1.8 ms of CPU, most of it in
botocore's generic request pipeline (event hooks, endpoint rules, user-agent building,
response parsing) and in handing each call to s3fs's event loop thread. These three
requests are simple enough to send directly: botocore's own SigV4 signer
(:class:`botocore.auth.S3SigV4Auth`) signs each one, and a small pool of persistent
``http.client`` connections carries it, from the calling thread.

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

import http.client
import ipaddress
import select
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
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.utils import percent_encode

        self._target = target
        self._credentials = credentials
        self._signer_class = S3SigV4Auth
        self._request_class = AWSRequest
        self._quote = percent_encode
        self._max_idle = max_idle
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._extra = dict(extra_headers)
        self._idle: list[http.client.HTTPConnection] = []
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
        all_headers = {**self._extra, **(headers or {}), "Host": target.host}
        if body or method == "PUT":
            all_headers["Content-Length"] = str(len(body))
        request = self._request_class(
            method, f"{target.scheme}://{target.host}{path}", data=body, headers=all_headers
        )
        # Credentials are read per request: a refreshable set (a role, SSO) renews itself.
        frozen = self._credentials.get_frozen_credentials()
        signer = self._signer_class(frozen, target.service, target.region)
        signer.add_auth(request)
        signed = dict(request.headers.items())
        answer = self._exchange(method, path, body, signed)
        if answer.status >= 300:
            raise _error_of(answer, method)
        return answer

    def _exchange(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        """Send on a pooled connection. A reused connection the server closed in the
        meantime fails before any answer arrives: the request is sent again, once, on a new
        connection (idempotent requests only, as every request here is)."""
        connection, reused = self._take()
        try:
            try:
                return self._roundtrip(connection, method, path, body, headers)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connection.close()
                if not reused:
                    raise
            connection = self._connect()
            return self._roundtrip(connection, method, path, body, headers)
        except BaseException:
            connection.close()
            raise

    def _roundtrip(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> Answer:
        # A bytes body goes out in one send with the headers (no Nagle/delayed-ACK stall).
        connection.request(method, path, body=body if body or method == "PUT" else None, headers=headers)
        response = connection.getresponse()
        data = response.read()
        answer = Answer(response.status, _header_map(response.msg), data)
        if response.will_close:
            connection.close()
        else:
            self._give_back(connection)
        return answer

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(), False
            if not _dropped(connection):
                return connection, True
            connection.close()

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(connection)
                return
        connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        target = self._target
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            connection = http.client.HTTPSConnection(
                target.connect_host, target.port, timeout=self._connect_timeout, context=self._ssl_context
            )
        else:
            connection = http.client.HTTPConnection(
                target.connect_host, target.port, timeout=self._connect_timeout
            )
        connection.connect()
        assert connection.sock is not None
        connection.sock.settimeout(self._read_timeout)
        return connection

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _header_map(message: http.client.HTTPMessage) -> Headers:
    """One pass over the raw pairs (email.message's per-lookup policy work costs more than
    the rest of the answer's handling). A repeated header keeps its first value, as
    ``HTTPMessage.get`` (so botocore) reads it."""
    headers: Headers = {}
    for name, value in message.raw_items():
        headers.setdefault(name.lower(), value)
    return headers


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """An idle connection the server has closed (or that holds stray bytes) is readable."""
    sock = connection.sock
    if sock is None:
        return True
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
