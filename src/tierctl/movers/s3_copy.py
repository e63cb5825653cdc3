"""Copies inside one S3 store (CopyObject, and UploadPartCopy for sources above CopyObject's
5 GiB), for :meth:`.s3.S3Mover.server_side_copy` and storage-class changes in place.

The copy keeps the content mtime: the source's ``mtime`` metadata travels with
``MetadataDirective=REPLACE``, and a source without one has its LastModified pinned into the
copy's metadata, or the copy would look as young as its write. Every request names the
source's ETag (``CopySourceIfMatch``), so a source that changes during the copy fails it
(:class:`ObjectChanged`) instead of mixing two versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, Any

from tierctl.errors import MoverError, ObjectArchived
from tierctl.model import Entry
from tierctl.movers.objmeta import MTIME_KEY, format_float_mtime, mtime_from_metadata
from tierctl.movers.s3_common import MAX_PARTS, check_class, part_size_for, restore_state

if TYPE_CHECKING:
    from tierctl.movers.s3 import S3Mover

COPY_LIMIT = 5 * 1024 * (1 << 20)  # CopyObject's largest source; above it, multipart copy


async def copy_in_store(
    src: S3Mover, src_key: str, dst: S3Mover, dst_key: str, storage_class: str | None
) -> Entry:
    """Copy ``src_key`` of ``src`` to ``dst_key`` of ``dst`` (same store) in class
    ``storage_class`` (default: the source's); the copy's entry, from a HEAD."""
    head = await src._head(src_key)
    source_class = head.get("StorageClass") or "STANDARD"
    if restore_state(source_class, head.get("Restore")) in ("archived", "restoring"):
        raise ObjectArchived(f"{src._what(src_key)} is in {source_class} and not restored")
    size = int(head["ContentLength"])
    source = {"Bucket": src.bucket, "Key": src._full(src_key), "IfMatch": head["ETag"]}
    extra: dict[str, Any] = {"StorageClass": check_class(storage_class or source_class)}
    metadata = dict(head.get("Metadata") or {})
    if mtime_from_metadata(metadata) is None:
        metadata[MTIME_KEY] = format_float_mtime(head["LastModified"].timestamp())
    extra["Metadata"] = metadata
    if head.get("ContentType"):
        extra["ContentType"] = head["ContentType"]
    what = dst._what(dst_key)
    full_dst = dst._full(dst_key)
    if size <= src.copy_limit:
        await dst._call(
            "copy_object",
            what,
            Key=full_dst,
            CopySource={"Bucket": source["Bucket"], "Key": source["Key"]},
            CopySourceIfMatch=source["IfMatch"],
            MetadataDirective="REPLACE",
            **extra,
        )
    else:
        part_size = max(part_size_for(size, dst.part_size), math.ceil(size / MAX_PARTS))
        await _multipart_copy(source, size, part_size, dst, full_dst, what, extra)
    return dst._entry(dst_key, await dst._head(dst_key))


async def _multipart_copy(
    source: dict[str, str],
    size: int,
    part_size: int,
    dst: S3Mover,
    full_dst: str,
    what: str,
    extra: dict[str, Any],
) -> None:
    created = await dst._call("create_multipart_upload", what, Key=full_dst, **extra)
    upload_id = created["UploadId"]
    slots = asyncio.Semaphore(dst.capabilities.max_connections)

    async def copy_part(number: int) -> dict[str, Any]:
        start = (number - 1) * part_size
        end = min(size, start + part_size) - 1
        async with slots:
            response = await dst._call(
                "upload_part_copy",
                what,
                Key=full_dst,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": source["Bucket"], "Key": source["Key"]},
                CopySourceIfMatch=source["IfMatch"],
                CopySourceRange=f"bytes={start}-{end}",
            )
        return {"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]}

    try:
        parts = await asyncio.gather(*(copy_part(n) for n in range(1, math.ceil(size / part_size) + 1)))
        await dst._call(
            "complete_multipart_upload",
            what,
            Key=full_dst,
            UploadId=upload_id,
            MultipartUpload={"Parts": list(parts)},
        )
    except BaseException:
        with contextlib.suppress(MoverError):
            await dst._call("abort_multipart_upload", what, Key=full_dst, UploadId=upload_id)
        raise
