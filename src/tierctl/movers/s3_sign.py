"""AWS Signature Version 4 for the S3 mover's lean requests (:mod:`.s3_requests`).

The same signature botocore's :class:`botocore.auth.S3SigV4Auth` computes for a request
without a query string, byte for byte (tests/test_s3_sign.py compares the two on many
requests), at a fraction of its CPU: botocore builds an ``AWSRequest`` and an
``email.message``-based header map per request, parses the URL twice and derives the
signing key with four HMACs per request. Here the canonical request is one string built
from the headers as given, and the signing key is derived once per day, region, service
and secret.

What botocore's signer does, and so this one:

- the payload is always SHA-256 signed (``X-Amz-Content-SHA256``): botocore signs the body
  of every request without a streaming input, over HTTP and HTTPS alike;
- every header is signed but ``Expect``, ``Transfer-Encoding``, ``User-Agent`` and
  ``X-Amzn-Trace-Id``; names are lower-cased and sorted, values trimmed with inner runs
  of whitespace collapsed to one space, and a name given twice signs its values joined
  by ``,`` in the order given;
- the path is signed as sent (S3 paths are not normalized), already percent-encoded;
- ``X-Amz-Date`` is set, and ``X-Amz-Security-Token`` when the credentials have a token.

The algorithm: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Never signed (botocore.auth.SIGNED_HEADERS_BLACKLIST): proxies and clients may change them.
UNSIGNED_HEADERS = frozenset({"expect", "transfer-encoding", "user-agent", "x-amzn-trace-id"})

# Headers the signer sets (a value given for one is dropped, as botocore replaces it).
_SET_BY_SIGNER = frozenset({"authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"})

Header = tuple[str, str]


def amz_date(now: float | None = None) -> str:
    """``X-Amz-Date`` for ``now`` (seconds since the epoch; default: the clock), in UTC."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256


class SigV4Signer:
    """Signs requests for one region and service (``s3``). Thread-safe: the only state is a
    cache of the last signing key, replaced whole."""

    def __init__(self, region: str, service: str) -> None:
        self.region = region
        self.service = service
        self._scope_tail = f"/{region}/{service}/aws4_request"
        # (secret, date) -> signing key, for the last pair seen.
        self._key: tuple[str, str, bytes] = ("", "", b"")

    def signing_key(self, secret: str, date: str) -> bytes:
        """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
        cached = self._key
        if cached[0] == secret and cached[1] == date and cached[2]:
            return cached[2]
        key = _hmac(f"AWS4{secret}".encode(), date)
        for part in (self.region, self.service, "aws4_request"):
            key = _hmac(key, part)
        self._key = (secret, date, key)
        return key

    def sign(
        self,
        method: str,
        path: str,
        headers: Iterable[Header],
        *,
        access_key: str,
        secret_key: str,
        token: str | None,
        content_sha256: str,
        timestamp: str,
    ) -> list[Header]:
        """The headers to send: ``headers`` (which must include ``Host``), then
        ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a token), ``X-Amz-Content-SHA256``
        and ``Authorization``. ``path``: the percent-encoded request path, no query;
        ``timestamp``: :func:`amz_date`; ``content_sha256``: :func:`payload_hash` of the body."""
        sent = [header for header in headers if header[0].lower() not in _SET_BY_SIGNER]
        sent.append(("X-Amz-Date", timestamp))
        if token:
            sent.append(("X-Amz-Security-Token", token))
        sent.append(("X-Amz-Content-SHA256", content_sha256))
        signed: dict[str, list[str]] = {}
        for name, value in sent:
            lower = name.lower()
            if lower not in UNSIGNED_HEADERS:
                signed.setdefault(lower, []).append(" ".join(value.split()))
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(
            (
                method.upper(),
                path,
                "",  # no query string
                "".join(f"{name}:{','.join(signed[name])}\n" for name in names),
                signed_names,
                content_sha256,
            )
        )
        date = timestamp[:8]
        scope = date + self._scope_tail
        to_sign = f"{ALGORITHM}\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self.signing_key(secret_key, date), to_sign.encode(), hashlib.sha256).hexdigest()
        authorization = f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed_names}"
        sent.append(("Authorization", f"{authorization}, Signature={signature}"))
        return sent


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()
