"""The S3 mover's own SigV4 signer (movers/s3_sign.py) against botocore's S3SigV4Auth, byte
for byte, on many generated requests; and its signatures checked by a store that verifies
them (``rclone serve s3 --auth-key``): every key shape, metadata values with runs of
spaces, a wrong secret refused."""

from __future__ import annotations

import calendar
import random
import time
from collections.abc import Iterator

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from botocore.utils import percent_encode

from tierctl.errors import MoverError, ObjectNotFound
from tierctl.movers.s3 import S3Mover
from tierctl.movers.s3_sign import SigV4Signer, amz_date, payload_hash

from .reliability import serving_rclone_s3

ACCESS_KEY = "tierctl-sign-key"
SECRET_KEY = "tierctl-sign-secret/+="

KEY_CHARS = "abcXYZ019-_.~/ +#%?&=;:,@!$'()*[]{}<>|^`\"\\\tÄé日本🙂"
VALUE_CHARS = "abcXYZ019-_.~/+=:,;  \"'()"


def _random_request(rng: random.Random) -> tuple[str, str, list[tuple[str, str]], bytes]:
    method = rng.choice(["PUT", "HEAD", "DELETE", "GET", "put"])
    key = "".join(rng.choice(KEY_CHARS) for _ in range(rng.randint(1, 40)))
    prefix = rng.choice(["/bucket-1/", "/", "/b.with.dots/"])
    path = prefix + percent_encode(key, safe="/~")
    host = rng.choice(["127.0.0.1:9000", "s3.eu-west-3.amazonaws.com", "bkt.s3.amazonaws.com", "[::1]:8080"])
    headers: list[tuple[str, str]] = [("Host", host)]
    body = b""
    if method in ("PUT", "put"):
        body = rng.randbytes(rng.choice([0, 1, 4096, 70_000]))
        headers.append(("Content-MD5", "1B2M2Y8AsgTpgAmY7PhCfg=="))
        headers.append(("Content-Length", str(len(body))))
    for i in range(rng.randint(0, 5)):
        value = "".join(rng.choice(VALUE_CHARS) for _ in range(rng.randint(0, 20)))
        name = rng.choice(["x-amz-meta-", "X-Amz-Meta-", "x-amz-meta-Mixed-"]) + f"n{i}"
        headers.append((name, value))
    optional = [
        ("x-amz-storage-class", "STANDARD_IA"),
        ("If-None-Match", "*"),
        ("x-amz-request-payer", "requester"),
        ("User-Agent", "tierctl/test"),  # never signed
        ("Expect", "100-continue"),  # never signed
        ("X-Amz-Date", "19990101T000000Z"),  # replaced by the signer
        ("Authorization", "stale"),  # replaced by the signer
    ]
    headers += rng.sample(optional, rng.randint(0, len(optional)))
    if rng.random() < 0.2:  # one name given twice, in two cases: both values signed, joined
        headers.append(("x-amz-meta-twice", "first"))
        headers.append(("X-AMZ-META-TWICE", "second  value"))
    rng.shuffle(headers)
    return method, path, headers, body


def _botocore(
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    region: str,
    service: str,
    timestamp: str | None,
) -> list[tuple[str, str]]:
    """botocore's headers for the request; ``timestamp`` None: its own clock (add_auth),
    else the steps of add_auth with that timestamp."""
    request = AWSRequest(method=method, url=f"http://{dict(headers)['Host']}{path}", data=body)
    for name, value in headers:
        request.headers[name] = value  # HTTPHeaders: a name given twice keeps both
    auth = S3SigV4Auth(credentials, service, region)
    if timestamp is None:
        auth.add_auth(request)
    else:
        request.context["timestamp"] = timestamp
        auth._modify_request_before_signing(request)
        canonical = auth.canonical_request(request)
        signature = auth.signature(auth.string_to_sign(request, canonical), request)
        auth._inject_signature_to_request(request, signature)
    return list(request.headers.items())


def _ours(
    signer: SigV4Signer,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes,
    credentials: ReadOnlyCredentials,
    timestamp: str,
) -> list[tuple[str, str]]:
    return signer.sign(
        method,
        path,
        headers,
        access_key=credentials.access_key,
        secret_key=credentials.secret_key,
        token=credentials.token,
        content_sha256=payload_hash(body),
        timestamp=timestamp,
    )


def test_every_header_matches_botocores_on_many_requests() -> None:
    """botocore's own add_auth (its clock): our signer given the timestamp botocore used
    sends the same headers in the same order, Authorization included."""
    rng = random.Random(8)
    signers: dict[tuple[str, str], SigV4Signer] = {}
    for _ in range(600):
        method, path, headers, body = _random_request(rng)
        region = rng.choice(["us-east-1", "eu-west-3", "auto"])
        service = rng.choice(["s3", "s3"])
        token = rng.choice([None, "session-token/with+chars=="])
        credentials = ReadOnlyCredentials(rng.choice([ACCESS_KEY, "AKIDEXAMPLE"]), SECRET_KEY, token)
        theirs = _botocore(method, path, headers, body, credentials, region, service, None)
        timestamp = dict(theirs)["X-Amz-Date"]
        signer = signers.setdefault((region, service), SigV4Signer(region, service))
        assert _ours(signer, method, path, headers, body, credentials, timestamp) == theirs


def test_signatures_match_across_days_secrets_and_regions_on_one_signer() -> None:
    """One signer caches its signing key: a new day, a new secret (rotated credentials)
    or another signer's region never reuses a stale key."""
    rng = random.Random(9)
    signer = SigV4Signer("eu-west-3", "s3")
    start = calendar.timegm((2024, 2, 28, 23, 59, 58, 0, 0, 0))
    for step in range(300):
        now = start + step * rng.choice([1, 3600, 86_399])
        timestamp = amz_date(now)
        assert timestamp == time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        secret = rng.choice([SECRET_KEY, "rotated-secret", "rotated-secret-2"])
        credentials = ReadOnlyCredentials(ACCESS_KEY, secret, None)
        method, path, headers, body = _random_request(rng)
        theirs = _botocore(method, path, headers, body, credentials, "eu-west-3", "s3", timestamp)
        assert _ours(signer, method, path, headers, body, credentials, timestamp) == theirs


def test_the_signing_key_is_the_documented_derivation() -> None:
    """AWS's published example (IAM user guide, "derive a signing key")."""
    signer = SigV4Signer("us-east-1", "iam")
    key = signer.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# -- against a store that verifies signatures --------------------------------------------------------
@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rclone serve s3`` accepting this module's key and secret (it checks signatures),
    with the bucket "signed"; yields its endpoint."""
    import boto3

    with serving_rclone_s3(tmp_path_factory, ACCESS_KEY, SECRET_KEY) as endpoint:
        boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
        ).create_bucket(Bucket="signed")
        yield endpoint


def _mover(endpoint: str, secret: str = SECRET_KEY) -> S3Mover:
    return S3Mover(
        "s3://signed/data", endpoint_url=endpoint, region="us-east-1", key=ACCESS_KEY, secret=secret
    )


@pytest.mark.parametrize(
    "key",
    ["plain.txt", "a b/c d", "sp%ec+ial#&=?;,@!$'()*", "tilde~/dots../x", "ünï/日本語/🙂"],
)
def test_the_store_accepts_signed_put_head_delete(signed: str, key: str) -> None:
    mover = _mover(signed)
    assert mover._requests() is not None  # the lean path (our signer) sends these
    metadata = {"note": "two  spaces and  more", "empty": ""}
    written = mover.write(key, [b"payload"], size=7, mtime=1_700_000_000.5, metadata=metadata, if_absent=True)
    assert written.size == 7
    stat = mover.stat(key)
    assert stat.etag == written.etag and stat.mtime == 1_700_000_000.5
    mover.delete(key)
    with pytest.raises(ObjectNotFound):
        mover.stat(key)
    mover.close()


def test_a_wrong_secret_is_refused(signed: str) -> None:
    """The store does verify what we sign (else the test above proves nothing)."""
    mover = _mover(signed, secret="not-the-secret")
    with pytest.raises(MoverError) as refused:
        mover.write("refused", [b"x"], size=1, mtime=1.0)
    assert "access denied" in str(refused.value)
    mover.close()
