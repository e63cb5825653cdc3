"""How S3 failures become tierctl errors, for both request paths of the S3 mover (s3fs and
:mod:`.s3_requests`): one classification, so a failure reads and retries the same whichever
path sent the request.

Messages name the object and the S3 error code only: never request parameters, headers or
credentials.
"""

from __future__ import annotations

import http.client
import ssl

from tierctl.errors import MoverError, ObjectArchived, ObjectChanged, ObjectExists, ObjectNotFound

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# botocore/aiohttp/http.client failures of the connection itself (dropped mid-request or
# mid-answer): retryable like a reset, though not all of them are OSErrors.
TRANSPORT_ERRORS = frozenset(
    {
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ProtocolError",
    }
)


def client_error(exc: BaseException) -> tuple[str, int] | None:
    """(error code, HTTP status) of an S3 error answer: a botocore ClientError (also through
    s3fs's translation) or an :class:`.s3_requests.S3ResponseError`."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code, status
    return None


def mover_error(exc: BaseException, what: str, *, creating: bool = False) -> MoverError:
    """Classify an S3 failure of the request about ``what`` (the object's URL). ``creating``:
    the request was a conditional create (``If-None-Match: *``), whose refusal (412, or 409
    ConditionalRequestConflict when a concurrent write won) means the key holds an object."""
    if isinstance(exc, MoverError):
        return exc
    found = client_error(exc)
    if found is not None:
        code, status = found
        if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(f"{what}: not found")
        if code == "NoSuchBucket":
            return MoverError(f"{what}: the bucket does not exist", hint="create it or fix the tier URL")
        if code == "InvalidObjectState":
            return ObjectArchived(f"{what}: archived, not readable until restored")
        if creating and (code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412):
            return ObjectExists(f"{what} already exists; not replaced")
        if code in ("PreconditionFailed", "412") or status == 412:
            return ObjectChanged(f"{what} changed while being read or copied")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
            return MoverError(
                f"{what}: access denied ({code})",
                hint="check the tier's credentials (options key/secret, profile or the environment)",
            )
        return MoverError(f"{what}: S3 error {code} (HTTP {status})", retryable=status in RETRYABLE_STATUS)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if isinstance(exc, PermissionError):
        return MoverError(f"{what}: access denied", hint="check the tier's credentials")
    if isinstance(exc, ssl.SSLCertVerificationError):
        # Not retryable: the same certificate comes back every time.
        return MoverError(
            f"{what}: the store's TLS certificate is not trusted",
            hint="check endpoint_url, or point AWS_CA_BUNDLE at the CA that signed it",
        )
    name = type(exc).__name__
    if (
        isinstance(exc, (ConnectionError, TimeoutError, OSError, http.client.HTTPException))
        or "Connect" in name
        or "Timeout" in name
        or name in TRANSPORT_ERRORS
    ):
        return MoverError(f"{what}: cannot reach the store ({name})", retryable=True)
    return MoverError(f"{what}: {name}", retryable=False)
