"""Multipart uploads of the S3 mover: objects larger than one part go up in exactly
``part_size`` parts, so their ETag is computable on the stream (``s3etag-<part_size>``).

The upload id is reported through ``UPLOAD_STARTED`` before the first part is sent, so a run
killed mid-upload leaves a journal from which exactly its own upload is aborted later. A
failed upload is aborted at once; incomplete uploads of the same key left by a killed
writer are aborted before a new one starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tierctl.errors import MoverError
from tierctl.movers.s3_common import UPLOAD_STARTED

if TYPE_CHECKING:
    from tierctl.movers.s3 import S3Mover


def upload_stream(
    mover: S3Mover,
    key: str,
    chunks: Iterable[bytes],
    extra: dict[str, Any],
    part_size: int,
    *,
    if_absent: bool = False,
) -> tuple[bytes, None] | tuple[None, str]:
    """Read ``chunks``. When they fit in one part: ``(body, None)``, for the caller's single
    PUT. Else upload them in ``part_size`` parts (``extra``: ``create_multipart_upload``'s
    metadata and storage class) and return ``(None, etag)`` of the completed object.
    ``if_absent``: :class:`ObjectExists` if ``key`` holds an object when the upload would
    start (a HEAD: see :mod:`.s3_conditional`)."""
    full, what = mover._full(key), mover._what(key)
    buffer = bytearray()
    upload_id: str | None = None
    parts: list[dict[str, Any]] = []
    try:
        for chunk in chunks:
            buffer += chunk
            while len(buffer) > part_size:
                if upload_id is None:
                    if if_absent:
                        mover.refuse_existing(key)
                    abort_abandoned_uploads(mover, full)
                    created = mover._run(mover._call("create_multipart_upload", what, Key=full, **extra))
                    upload_id = created["UploadId"]
                    listener = UPLOAD_STARTED.get()
                    if listener is not None:
                        listener(key, upload_id)
                parts.append(_upload_part(mover, full, what, upload_id, len(parts) + 1, buffer[:part_size]))
                del buffer[:part_size]
        if upload_id is None:
            return bytes(buffer), None
        parts.append(_upload_part(mover, full, what, upload_id, len(parts) + 1, buffer))
        response = mover._run(
            mover._call(
                "complete_multipart_upload",
                what,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        )
        upload_id = None
        return None, str(response["ETag"]).strip('"')
    except BaseException:
        if upload_id is not None:
            abort(mover, full, upload_id)
        raise


def _upload_part(
    mover: S3Mover, full: str, what: str, upload_id: str, number: int, data: bytes | bytearray
) -> dict[str, Any]:
    response = mover._run(
        mover._call("upload_part", what, Key=full, UploadId=upload_id, PartNumber=number, Body=bytes(data))
    )
    return {"PartNumber": number, "ETag": response["ETag"]}


def abort_abandoned_uploads(mover: S3Mover, full: str) -> None:
    """Abort incomplete multipart uploads of exactly ``full`` before starting one: a writer
    killed mid-upload (SIGKILL, power loss) leaves its parts behind, stored and billed but
    invisible. This writer is about to replace the object anyway; uploads of keys never
    written again are left to a lifecycle rule (AbortIncompleteMultipartUpload)."""
    with contextlib.suppress(MoverError):
        listed = mover._run(mover._call("list_multipart_uploads", full, Prefix=full))
        for upload in listed.get("Uploads", []):
            if upload.get("Key") == full:
                abort(mover, full, upload["UploadId"])


def abort(mover: S3Mover, full: str, upload_id: str) -> None:
    # On failure, a lifecycle rule for incomplete uploads cleans up what this could not.
    with contextlib.suppress(MoverError):
        mover._run(mover._call("abort_multipart_upload", full, Key=full, UploadId=upload_id))
