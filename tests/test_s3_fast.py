"""The S3 mover's lean request path (movers/s3_requests.py) on moto over real HTTP: what it
sends (requests counted by the fault proxy), what it keeps (mtime metadata, storage class,
user metadata, ETag verification, TLS verification), and what it does when the store
fails, lies about the ETag, or redirects. Speed is measured in bench/, not here."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tierctl import api
from tierctl.errors import MoverError, ObjectNotFound, VerificationFailed
from tierctl.movers.local import LocalMover
from tierctl.movers.objmeta import format_float_mtime
from tierctl.movers.s3 import S3Mover
from tierctl.movers.s3_conditional import PROBE_PREFIX
from tierctl.movers.transfer import copy_verified

from .reliability import (
    local_files,
    new_bucket,
    present_placements,
    s3_objects,
    s3_tier,
    tierctl,
    write_config,
)
from .servers.faultproxy import Fault, FaultProxy, op
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

MTIME = 1_700_000_000.123_456
DAY = 86400.0


def _mover(endpoint: str, bucket: str, **extra: object) -> S3Mover:
    return S3Mover(
        f"s3://{bucket}/data",
        endpoint_url=endpoint,
        region=REGION,
        key=ACCESS_KEY,
        secret=SECRET_KEY,
        **extra,
    )


# -- a proxy that changes moto's answers ------------------------------------------------------
Rewrite = Callable[[str, dict[str, str]], "tuple[int, dict[str, str], bytes] | None"]


class RewritingProxy:
    """Forwards to ``upstream``; ``rewrite(method, request headers)`` may answer instead
    (status, headers, body), and ``answer_headers(method, headers)`` edits forwarded answers."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rewrite: Rewrite = lambda method, headers: None
        self.answer_headers: Callable[[str, dict[str, str]], dict[str, str]] = lambda m, h: h
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                own = proxy.rewrite(self.command, {k.lower(): v for k, v in headers.items()})
                if own is None:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                    try:
                        conn.request(self.command, self.path, body=body or None, headers=headers)
                        response = conn.getresponse()
                        data = response.read()
                        out = {
                            k.lower(): v
                            for k, v in response.getheaders()
                            if k.lower() not in ("connection", "content-length", "transfer-encoding")
                        }
                        own = (response.status, proxy.answer_headers(self.command, out), data)
                    finally:
                        conn.close()
                status, out, data = own
                self.send_response(status)
                for name, value in out.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RewritingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def rewriting(moto: MotoS3) -> Iterator[RewritingProxy]:
    with RewritingProxy(moto.endpoint_url) as p:
        yield p


def _lean(headers: dict[str, str]) -> bool:
    """A request of the lean path (botocore's clients name themselves in User-Agent)."""
    return "botocore" not in headers.get("user-agent", "").lower()


# -- what a small upload sends and keeps ------------------------------------------------------
def test_small_upload_is_one_put_keeping_mtime_class_and_metadata(moto: MotoS3, proxy: FaultProxy) -> None:
    bucket = new_bucket(moto)
    mover = _mover(proxy.endpoint_url, bucket)
    mover.want_metadata = frozenset({"metadata"})
    data = b"small object" * 10
    written = mover.write(
        "a/b c+d.txt", [data[:50], data[50:]], size=len(data), mtime=MTIME,
        storage_class="STANDARD_IA", metadata={"Mode": "640", "owner": "ana"},
    )  # fmt: skip
    # moto answers the PUT with Last-Modified: the answer is the entry, no HEAD follows.
    assert [e.request.operation for e in proxy.log] == ["PutObject"]
    assert mover._filesystem is None  # s3fs was never needed
    head = moto.client().head_object(Bucket=bucket, Key="data/a/b c+d.txt")
    assert head["Metadata"] == {"mtime": format_float_mtime(MTIME), "mode": "640", "owner": "ana"}
    assert head["StorageClass"] == "STANDARD_IA"
    # The entry from the answer is the one a HEAD gives (checksum: the upload's algorithm).
    stat = mover.stat("a/b c+d.txt")
    assert written.checksum == f"s3etag-{mover.part_size}:{head['ETag'].strip(chr(34))}"
    assert stat.checksum == f"md5:{head['ETag'].strip(chr(34))}"
    assert replace(written, checksum=stat.checksum) == stat
    assert stat.metadata == {"mode": "640", "owner": "ana"} and stat.mtime == pytest.approx(MTIME)
    mover.delete("a/b c+d.txt")
    with pytest.raises(ObjectNotFound):
        mover.stat("a/b c+d.txt")
    with pytest.raises(ObjectNotFound):
        mover.delete("a/b c+d.txt")
    assert mover._filesystem is None
    mover.close()


def test_an_answer_without_last_modified_is_followed_by_one_head(
    moto: MotoS3, rewriting: RewritingProxy
) -> None:
    """AWS answers a PUT without Last-Modified: the entry then comes from a HEAD (as rclone's)."""
    bucket = new_bucket(moto)
    seen: list[str] = []

    def strip(method: str, headers: dict[str, str]) -> dict[str, str]:
        seen.append(method)
        return {k: v for k, v in headers.items() if k != "last-modified"} if method == "PUT" else headers

    rewriting.answer_headers = strip
    mover = _mover(rewriting.endpoint_url, bucket)
    written = mover.write("k", [b"abc"], size=3, mtime=MTIME)
    assert seen == ["PUT", "HEAD"]
    assert written.etag == mover.stat("k").etag and written.mtime == pytest.approx(MTIME)


def test_credentials_region_and_requester_pays_reach_every_lean_request(
    tmp_path: Path, moto: MotoS3, rewriting: RewritingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The options the s3fs path takes: explicit key/secret/session token, or a named
    profile from the shared credentials file; the region in the signing scope;
    requester-pays as a header."""
    bucket = new_bucket(moto)
    seen: list[dict[str, str]] = []

    def record(method: str, headers: dict[str, str]) -> None:
        seen.append(headers)

    rewriting.rewrite = record
    token = _mover(rewriting.endpoint_url, bucket, session_token="tok-123", requester_pays=True)
    token.write("k", [b"abc"], size=3, mtime=MTIME)
    token.stat("k")
    assert len(seen) == 2
    for headers in seen:
        assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
        assert f"/{REGION}/s3/aws4_request" in headers["authorization"]
        assert headers["x-amz-security-token"] == "tok-123"
        assert headers["x-amz-request-payer"] == "requester"
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[other]\naws_access_key_id = PROFILEKEY\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    seen.clear()
    profiled = S3Mover(
        f"s3://{bucket}/data", endpoint_url=rewriting.endpoint_url, region="eu-west-3", profile="other"
    )
    profiled.stat("k")
    assert seen and seen[0]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=PROFILEKEY/")
    assert "/eu-west-3/s3/aws4_request" in seen[0]["authorization"]
    assert "x-amz-security-token" not in seen[0] and "x-amz-request-payer" not in seen[0]


# -- failures -----------------------------------------------------------------------------------
def test_a_failed_put_is_a_retryable_error_and_stores_nothing(moto: MotoS3, proxy: FaultProxy) -> None:
    bucket = new_bucket(moto)
    proxy.add(Fault("status", op("PutObject"), times=1, status=503))
    mover = _mover(proxy.endpoint_url, bucket)
    with pytest.raises(MoverError) as failed:
        mover.write("k", [b"abc"], size=3, mtime=MTIME)
    assert failed.value.retryable and "SlowDown" in str(failed.value) and "s3://" in str(failed.value)
    assert s3_objects(moto, bucket) == {}
    # The next try goes through (the executor retries whole copies).
    assert mover.write("k", [b"abc"], size=3, mtime=MTIME).size == 3


def test_a_repeated_header_is_read_as_botocore_reads_it(moto: MotoS3, proxy: FaultProxy) -> None:
    """The proxy's drop_response answers a HEAD with moto's Content-Length and then its own
    ``Content-Length: 0``: the first value counts (as ``HTTPMessage.get``, so botocore, reads
    it); taking the last made a delete's "is the kept copy there?" check see 0 bytes."""
    bucket = new_bucket(moto)
    mover = _mover(proxy.endpoint_url, bucket)
    mover.write("k", [b"12345"], size=5, mtime=MTIME)
    proxy.add(Fault("drop_response", op("HeadObject"), times=1))
    assert mover.stat("k").size == 5
    assert proxy.count("HeadObject", fault=True) == 1


def test_a_wrong_etag_is_never_a_verified_copy(
    tmp_path: Path, moto: MotoS3, rewriting: RewritingProxy
) -> None:
    bucket = new_bucket(moto)
    rewriting.answer_headers = lambda method, headers: (
        {**headers, "etag": '"0123456789abcdef0123456789abcdef"'} if method == "PUT" else headers
    )
    source = LocalMover((tmp_path / "src").as_uri())
    entry = source.write("f.bin", [b"payload"], size=7, mtime=MTIME)
    target = _mover(rewriting.endpoint_url, bucket)
    with pytest.raises(VerificationFailed):
        copy_verified(
            source, "f.bin", target, expected=entry, algorithm="crc32c", durable=False, storage_class=None
        )
    assert s3_objects(moto, bucket) == {}  # removed again: never left as if copied


def test_apply_records_no_copy_whose_etag_is_wrong(
    tmp_path: Path, moto: MotoS3, rewriting: RewritingProxy
) -> None:
    bucket = new_bucket(moto)
    config = _sandbox(tmp_path, rewriting.endpoint_url, bucket, 3)
    assert tierctl("-c", config, "scan").returncode == 0
    rewriting.answer_headers = lambda method, headers: (
        {**headers, "etag": '"0123456789abcdef0123456789abcdef"'} if method == "PUT" else headers
    )
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    problems = json.loads(result.stdout)["problems"]
    assert {p["key"] for p in problems if p["op"] == "copy" and p["status"] == "failed"} == {
        f"logs/{i:04d}.log" for i in range(3)
    }
    assert all("store reports" in p["error"] for p in problems if p["op"] == "copy")
    assert len(local_files(tmp_path / "hot")) == 3  # every source kept
    index_path = api.load(config).index_path
    assert {tier for _, tier, _ in present_placements(index_path)} == {"hot"}
    assert s3_objects(moto, bucket) == {}


def test_a_region_redirect_hands_the_store_to_s3fs(moto: MotoS3, rewriting: RewritingProxy) -> None:
    """aiobotocore follows region redirects; the lean path gives the store to it for good."""
    bucket = new_bucket(moto)
    redirected: list[str] = []

    def redirect(method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes] | None:
        if not _lean(headers):
            return None
        redirected.append(method)
        body = b"<Error><Code>PermanentRedirect</Code><Message>elsewhere</Message></Error>"
        return 301, {"x-amz-bucket-region": REGION, "content-type": "application/xml"}, body

    rewriting.rewrite = redirect
    mover = _mover(rewriting.endpoint_url, bucket)
    written = mover.write("k", [b"abc"], size=3, mtime=MTIME, storage_class="STANDARD_IA")
    assert redirected == ["PUT"] and mover._filesystem is not None
    stat = mover.stat("k")
    assert replace(written, checksum=stat.checksum) == stat
    mover.delete("k")
    assert redirected == ["PUT"] and s3_objects(moto, bucket) == {}


# -- request counts of a run ----------------------------------------------------------------------
def _sandbox(tmp_path: Path, endpoint: str, bucket: str, files: int) -> str:
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          hot: {{url: ./hot}}
          s3:  {s3_tier(bucket, endpoint)}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: replicate
            dataset: logs
            rules:
              - when: "true"
                place: [hot, s3]
        retries: {{attempts: 2, base_delay: 0.02, max_delay: 0.1}}
        """,
    )
    old = time.time() - 40 * DAY
    for i in range(files):
        path = tmp_path / "hot" / "logs" / f"{i:04d}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(300 + i))
        os.utime(path, (old, old))
    return config


def test_apply_sends_a_put_per_object_and_the_noop_one_listing(
    tmp_path: Path, moto: MotoS3, proxy: FaultProxy
) -> None:
    files = 25
    bucket = new_bucket(moto)
    config = _sandbox(tmp_path, proxy.endpoint_url, bucket, files)
    assert tierctl("-c", config, "scan").returncode == 0
    before = len(proxy.log)
    result = tierctl("-c", config, "apply", "--yes", "--json", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["done"] == files
    # One conditional PUT per object (If-None-Match: *, which moto enforces) and no HEAD,
    # before or after; first the mover's one probe of the store: delete a killed run's
    # probe, create, refused, delete.
    probe = [e for e in proxy.log[before:] if PROBE_PREFIX in e.request.path]
    assert [(e.request.operation, e.status) for e in probe] == [
        ("DeleteObject", 204),
        ("PutObject", 200),
        ("PutObject", 412),
        ("DeleteObject", 204),
    ]
    ops = [e.request.operation for e in proxy.log[before:] if PROBE_PREFIX not in e.request.path]
    assert ops == ["PutObject"] * files, sorted(set(ops))
    # Nothing changed: the no-op re-run lists the bucket once and asks nothing per object.
    before = len(proxy.log)
    noop = tierctl("-c", config, "apply", "--refresh", "--yes", "--json", timeout=120)
    assert noop.returncode == 0, noop.stderr[-2000:]
    assert json.loads(noop.stdout)["done"] == 0
    assert [e.request.operation for e in proxy.log[before:]] == ["ListObjects"]


# -- TLS -------------------------------------------------------------------------------------------
def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tierctl-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_certificates_are_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint whose certificate no trusted CA signed is refused, without retries;
    trusted through AWS_CA_BUNDLE (as botocore reads it), the same endpoint is used."""
    cert, key = _self_signed(tmp_path)

    class NotFound(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
        with pytest.raises(MoverError) as refused:
            _mover(endpoint, "bkt").stat("k")
        assert "not trusted" in str(refused.value) and not refused.value.retryable
        monkeypatch.setenv("AWS_CA_BUNDLE", str(cert))
        with pytest.raises(ObjectNotFound):
            _mover(endpoint, "bkt").stat("k")
    finally:
        server.shutdown()
        server.server_close()


# -- connections ------------------------------------------------------------------------------------
def test_connections_are_reused_and_one_the_server_dropped_is_replaced() -> None:
    """Keep-alive connections are pooled. A server that drops a pooled connection when the
    next request arrives (an idle timeout racing the request) gets it again on a new
    connection, once: no error reaches the caller."""
    import socket

    accepted: list[int] = []
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    answer = (
        b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\nETag: "e"\r\n'
        b"Last-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nx-amz-meta-mtime: 1700000000\r\n\r\n"
    )

    def read_request(conn: socket.socket) -> bool:
        request = b""
        while b"\r\n\r\n" not in request:
            piece = conn.recv(65536)
            if not piece:
                return False
            request += piece
        return True

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            with conn:
                conn.settimeout(5)
                # Two answers, then the third request is read and the connection dropped.
                for _ in range(2):
                    if not read_request(conn):
                        break
                    conn.sendall(answer)
                else:
                    read_request(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        mover = _mover(f"http://127.0.0.1:{listener.getsockname()[1]}", "bkt")
        for _ in range(6):
            assert mover.stat("k").mtime == 1_700_000_000
        assert len(accepted) == 3  # each connection served two requests
        mover.close()
    finally:
        stop.set()
        thread.join(5)
        listener.close()
