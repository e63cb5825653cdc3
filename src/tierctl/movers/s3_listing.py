"""Listing an S3 prefix without a request per object, for :meth:`.s3.S3Mover.list`.

Content mtime
    Kept as user metadata ``mtime`` in rclone's format (see :mod:`.objmeta`).
    ListObjectsV2 returns no user metadata, and a HEAD per object is what makes naive
    syncs slow, so :meth:`S3Mover.list` takes the mtime from the caller's ``known``
    entries (the index) when the listing proves the object unchanged: same size and same
    version token ``<ETag>@<LastModified>``. Any write, metadata change or storage-class
    change moves LastModified, so a stale mtime is never reused. Objects not known that
    way are HEADed, concurrently, and the listing stays in key order. So ``list`` and
    ``stat`` always agree: the first scan of a foreign bucket costs one HEAD per object
    (as rclone), every later scan costs HEADs only for new or changed objects.

Tags and user metadata
    Read only when ``want_metadata`` asks (a policy tests ``tag.KEY`` / ``meta.KEY``):
    user metadata (``x-amz-meta-*`` but ``mtime``; names are lower case) from the HEAD
    that new or changed objects get anyway, tags with one GetObjectTagging each. Unchanged
    objects reuse what ``known`` holds, like their mtime, so a no-op re-scan sends neither.
    S3 keeps LastModified and the ETag when only tags change (PutObjectTagging), so such a
    change is seen once the object changes, or by a scan that does not offer ``known``
    tags (``api.scan(refresh_metadata=True)``).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tierctl.errors import ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers.base import KnownEntries, check_key
from tierctl.movers.s3_common import ARCHIVE_CLASSES, version_token

if TYPE_CHECKING:
    from tierctl.movers.s3 import S3Mover


async def page_entries(
    mover: S3Mover, contents: list[dict[str, Any]], known: KnownEntries | None
) -> list[Entry]:
    """One ListObjectsV2 page as entries, in key order; unsafe keys go to ``mover._skipped``."""
    listed: list[tuple[str, dict[str, Any]]] = []
    for item in contents:
        key = item["Key"][len(mover.prefix) :]
        if item["Key"].endswith("/"):
            continue  # folder marker
        try:
            check_key(key)
        except UnsafeKey:
            mover._skipped.append(key)
            continue
        listed.append((key, item))
    slots = asyncio.Semaphore(mover.capabilities.max_connections)
    want_tags, want_meta = "tags" in mover.want_metadata, "metadata" in mover.want_metadata

    async def resolve(key: str, item: dict[str, Any]) -> Entry | None:
        etag = item["ETag"].strip('"')
        token = version_token(etag, item["LastModified"])
        previous = known(key) if known is not None else None
        storage_class = item.get("StorageClass") or "STANDARD"
        unchanged = previous is not None and previous.etag == token and previous.size == int(item["Size"])
        # What the index knows of an unchanged object stands; only the rest is asked for.
        need_head = not unchanged or (want_meta and previous is not None and previous.metadata is None)
        need_tags = want_tags and (not unchanged or previous is None or previous.tags is None)
        if not need_head:
            assert previous is not None
            status = item.get("RestoreStatus")
            state = None
            if storage_class in ARCHIVE_CLASSES and status is not None:
                state = "restoring" if status.get("IsRestoreInProgress") else "restored"
            entry = Entry(
                key=key,
                size=int(item["Size"]),
                mtime=previous.mtime,
                checksum=None if "-" in etag else f"md5:{etag}",
                storage_class=storage_class,
                etag=token,
                restore_state=state,
                tags=previous.tags if want_tags else None,
                metadata=previous.metadata if want_meta else None,
            )
            if not need_tags:
                return entry
        async with slots:
            try:
                if need_head and need_tags:
                    head, tags = await asyncio.gather(mover._head(key), mover._tags(key))
                    return replace(mover._entry(key, head), tags=tags)
                if need_head:
                    entry = mover._entry(key, await mover._head(key))
                    return replace(entry, tags=previous.tags) if want_tags and previous else entry
                return replace(entry, tags=await mover._tags(key))
            except ObjectNotFound:
                return None  # deleted since the listing

    entries = await asyncio.gather(*(resolve(key, item) for key, item in listed))
    return [e for e in entries if e is not None]
