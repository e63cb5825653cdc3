"""S3 and S3-compatible stores (``s3://bucket/prefix``) through s3fs/aiobotocore.

Every request goes through ``S3FileSystem._call_s3`` (credentials, endpoint, region,
requester-pays and s3fs's retries in one place); keys are passed as ``Key=`` parameters,
never through fsspec path parsing, so ``#``, ``%``, ``+`` and spaces are plain characters.

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

Verification
    Objects up to ``part_size`` go up in one PUT (ETag = MD5); larger ones in exactly
    ``part_size`` parts, so the ETag is computable on the stream: the internal digest
    ``s3etag-<part_size>`` (:mod:`.digest`) is the mover's native digest, and a copy is
    verified from the ETag the store returns without reading it back. (Objects so large
    that 10,000 parts of ``part_size`` do not hold them use a larger part and fall back to
    a read-back.) Listings report ``md5:<etag>`` for single-part ETags only.

Archive classes
    GLACIER and DEEP_ARCHIVE objects are not readable until restored: reads raise
    :class:`ObjectArchived`; ``stat`` reports ``restore_state`` from the ``Restore`` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from tierctl.errors import MoverError, ObjectArchived, ObjectChanged, ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers.attributes import only_attributes
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported, check_key
from tierctl.movers.objmeta import MTIME_KEY, format_float_mtime, mtime_from_metadata, split_bucket_url
from tierctl.movers.options import StoreOptions

MIB = 1 << 20
DEFAULT_PART_SIZE = 64 * MIB
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10_000
COPY_LIMIT = 5 * 1024 * MIB  # CopyObject's largest source; above it, multipart copy
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    }
)
RESTORE_TIERS = ("Expedited", "Standard", "Bulk")
# Called on the writing thread with (key, upload id) as soon as ``write`` has started a
# multipart upload, before any part is sent: the executor journals the id, so a run killed
# mid-upload can have exactly its own upload aborted later (``abort_upload``).
UPLOAD_STARTED: contextvars.ContextVar[Callable[[str, str], None] | None] = contextvars.ContextVar(
    "tierctl_s3_upload_started", default=None
)
_RETRYABLE_STATUS = {429, 500, 502, 503, 504}
# botocore/aiohttp failures of the connection itself (dropped mid-request or mid-answer):
# retryable like a reset, though not all of them are OSErrors.
_TRANSPORT_ERRORS = frozenset(
    {
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ProtocolError",
    }
)


def restore_state(storage_class: str | None, restore_header: str | None) -> str | None:
    """``Restore`` header (HEAD) of an archived object -> archived | restoring | restored."""
    if storage_class not in ARCHIVE_CLASSES:
        return None
    if not restore_header:
        return "archived"
    return "restoring" if 'ongoing-request="true"' in restore_header else "restored"


def version_token(etag: str, last_modified: datetime) -> str:
    # Listings give LastModified in ms, HEAD in whole seconds: compare whole seconds.
    return f"{etag}@{int(last_modified.timestamp())}"


def part_size_for(size: int, preferred: int) -> int:
    """``preferred`` unless 10,000 parts of it cannot hold ``size``; then the next MiB up."""
    if size <= preferred * MAX_PARTS:
        return preferred
    return math.ceil(size / MAX_PARTS / MIB) * MIB


class S3Mover(Mover):
    """One bucket/prefix on S3 or an S3-compatible store."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_bucket_url(url, ("s3", "s3a"))
        self.options = StoreOptions.parse(options, url=self.url)
        self.part_size = self.options.part_size or DEFAULT_PART_SIZE
        if self.part_size < MIN_PART_SIZE:
            from tierctl.errors import ConfigError

            raise ConfigError(f"{self.url}: part_size must be at least 5 MiB (S3's minimum part)")
        self.copy_limit = COPY_LIMIT
        self.capabilities = Capabilities(
            server_side_copy=True,
            set_storage_class=True,
            restore=True,
            max_connections=self.options.max_connections,
            native_digests=(f"s3etag-{self.part_size}",),
            atomic_write=True,
            user_metadata=True,
            ranged_reads=True,
            read_metadata=("tags", "metadata"),
        )
        self._skipped: list[str] = []
        self._fs = self._make_filesystem()

    def _make_filesystem(self) -> Any:
        import s3fs

        opts = self.options
        client_kwargs: dict[str, Any] = {}
        if opts.region:
            client_kwargs["region_name"] = opts.region
        # One layer of retries: tierctl's (``retries:`` in the policy file; the RetryingMover
        # and the executor's whole-copy retry). s3fs's and botocore's own retries would
        # multiply it (4 x 5 x 5 requests per call), so a store that stays down would hold
        # a run for minutes instead of ending it with a report.
        config_kwargs: dict[str, Any] = {
            "max_pool_connections": max(10, opts.max_connections),
            "retries": {"total_max_attempts": 1},
        }
        if opts.connect_timeout is not None:
            config_kwargs["connect_timeout"] = opts.connect_timeout
        if opts.read_timeout is not None:
            config_kwargs["read_timeout"] = opts.read_timeout
        try:
            fs = s3fs.S3FileSystem(
                key=opts.reveal("key"),
                secret=opts.reveal("secret"),
                token=opts.reveal("session_token"),
                profile=opts.profile,
                endpoint_url=opts.endpoint_url,
                client_kwargs=client_kwargs,
                requester_pays=opts.requester_pays,
                config_kwargs=config_kwargs,
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        except Exception as exc:
            raise MoverError(
                f"{self.url}: cannot set up the S3 client ({type(exc).__name__})",
                hint="check the tier's options (endpoint_url, region, profile, key/secret)",
            ) from None
        fs.retries = 1  # s3fs's own retry loop: one try (see above)
        return fs

    def __repr__(self) -> str:
        return f"S3Mover({self.url!r}, {self.options!r})"

    # -- plumbing -------------------------------------------------------------------------
    def _run(self, coro: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self._fs.loop, lambda: coro)

    async def _call(self, method: str, what: str, **kwargs: Any) -> Any:
        try:
            return await self._fs._call_s3(method, Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise _mover_error(exc, what) from None

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _entry(self, key: str, head: dict[str, Any]) -> Entry:
        etag = head["ETag"].strip('"')
        storage_class = head.get("StorageClass") or "STANDARD"
        last_modified: datetime = head["LastModified"]
        mtime = mtime_from_metadata(head.get("Metadata"))
        return Entry(
            key=key,
            size=int(head["ContentLength"]),
            mtime=last_modified.timestamp() if mtime is None else mtime,
            checksum=None if "-" in etag else f"md5:{etag}",
            storage_class=storage_class,
            etag=version_token(etag, last_modified),
            restore_state=restore_state(storage_class, head.get("Restore")),
            metadata=_user_metadata(head.get("Metadata")) if "metadata" in self.want_metadata else None,
        )

    async def _head(self, key: str) -> dict[str, Any]:
        return await self._call("head_object", self._what(key), Key=self._full(key))

    async def _tags(self, key: str) -> dict[str, str]:
        answer = await self._call("get_object_tagging", self._what(key), Key=self._full(key))
        return {tag["Key"]: tag["Value"] for tag in answer.get("TagSet") or ()}

    async def _stat(self, key: str) -> Entry:
        """HEAD, and GetObjectTagging at the same time when tags are wanted."""
        if "tags" not in self.want_metadata:
            return self._entry(key, await self._head(key))
        head, tags = await asyncio.gather(self._head(key), self._tags(key))
        return replace(self._entry(key, head), tags=tags)

    # -- required core --------------------------------------------------------------------
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        self._skipped = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": self.prefix + prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._run(self._call("list_objects_v2", f"listing {self.url}", **kwargs))
            yield from self._run(self._page_entries(page.get("Contents", []), known))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    async def _page_entries(self, contents: list[dict[str, Any]], known: KnownEntries | None) -> list[Entry]:
        listed: list[tuple[str, dict[str, Any]]] = []
        for item in contents:
            key = item["Key"][len(self.prefix) :]
            if item["Key"].endswith("/"):
                continue  # folder marker
            try:
                check_key(key)
            except UnsafeKey:
                self._skipped.append(key)
                continue
            listed.append((key, item))
        slots = asyncio.Semaphore(self.capabilities.max_connections)
        want_tags, want_meta = "tags" in self.want_metadata, "metadata" in self.want_metadata

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
                        head, tags = await asyncio.gather(self._head(key), self._tags(key))
                        return replace(self._entry(key, head), tags=tags)
                    if need_head:
                        entry = self._entry(key, await self._head(key))
                        return replace(entry, tags=previous.tags) if want_tags and previous else entry
                    return replace(entry, tags=await self._tags(key))
                except ObjectNotFound:
                    return None  # deleted since the listing

        entries = await asyncio.gather(*(resolve(key, item) for key, item in listed))
        return [e for e in entries if e is not None]

    def stat(self, key: str) -> Entry:
        result: Entry = self._run(self._stat(key))
        return result

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        what = self._what(key)
        response = self._run(self._call("get_object", what, Key=self._full(key)))
        body = response["Body"]
        try:
            while True:
                try:
                    chunk = self._run(body.read(chunk_size))
                except MoverError:
                    raise
                except Exception as exc:
                    raise _mover_error(exc, what) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        what = self._what(key)

        async def get() -> bytes:
            response = await self._call(
                "get_object", what, Key=self._full(key), Range=f"bytes={start}-{end - 1}"
            )
            try:
                data: bytes = await response["Body"].read()
            except Exception as exc:
                raise _mover_error(exc, what) from None
            finally:
                response["Body"].close()
            return data

        result: bytes = self._run(get())
        return result

    def write(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size: int,
        mtime: float,
        durable: bool = False,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> Entry:
        full = self._full(key)
        what = self._what(key)
        user = {k.lower(): str(v) for k, v in (metadata or {}).items()}
        extra: dict[str, Any] = {"Metadata": {**user, MTIME_KEY: format_float_mtime(mtime)}}
        if storage_class:
            extra["StorageClass"] = _check_class(storage_class)
        part_size = part_size_for(size, self.part_size)
        buffer = bytearray()
        stream = iter(chunks)
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in stream:
                buffer += chunk
                while len(buffer) > part_size:
                    if upload_id is None:
                        self._abort_abandoned_uploads(full)
                        created = self._run(self._call("create_multipart_upload", what, Key=full, **extra))
                        upload_id = created["UploadId"]
                        listener = UPLOAD_STARTED.get()
                        if listener is not None:
                            listener(key, upload_id)
                    parts.append(self._upload_part(full, what, upload_id, len(parts) + 1, buffer[:part_size]))
                    del buffer[:part_size]
            if upload_id is None:
                response = self._run(self._call("put_object", what, Key=full, Body=bytes(buffer), **extra))
                etag = response["ETag"].strip('"')
            else:
                parts.append(self._upload_part(full, what, upload_id, len(parts) + 1, buffer))
                response = self._run(
                    self._call(
                        "complete_multipart_upload",
                        what,
                        Key=full,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
                )
                etag = response["ETag"].strip('"')
                upload_id = None
        except BaseException:
            if upload_id is not None:
                self._abort(full, upload_id)
            raise
        entry = self.stat(key)
        if not entry.etag or not entry.etag.startswith(etag + "@"):
            raise ObjectChanged(f"{what} was overwritten by another writer while being written")
        # The ETag in the algorithm the bytes were uploaded with: a copy is verified from it.
        return _with_checksum(entry, f"s3etag-{part_size}:{etag}")

    def _upload_part(
        self, full: str, what: str, upload_id: str, number: int, data: bytes | bytearray
    ) -> dict:
        response = self._run(
            self._call("upload_part", what, Key=full, UploadId=upload_id, PartNumber=number, Body=bytes(data))
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _abort_abandoned_uploads(self, full: str) -> None:
        """Abort incomplete multipart uploads of exactly ``full`` before starting one: a
        writer killed mid-upload (SIGKILL, power loss) leaves its parts behind, stored and
        billed but invisible. This writer is about to replace the object anyway; uploads of
        keys never written again are left to a lifecycle rule (AbortIncompleteMultipartUpload)."""
        with contextlib.suppress(MoverError):
            listed = self._run(self._call("list_multipart_uploads", full, Prefix=full))
            for upload in listed.get("Uploads", []):
                if upload.get("Key") == full:
                    self._abort(full, upload["UploadId"])

    def _abort(self, full: str, upload_id: str) -> None:
        # On failure, a lifecycle rule for incomplete uploads cleans up what this could not.
        with contextlib.suppress(MoverError):
            self._run(self._call("abort_multipart_upload", full, Key=full, UploadId=upload_id))

    def abort_upload(self, key: str, upload_id: str) -> bool:
        """Abort one incomplete multipart upload of ``key`` (one this mover's ``write``
        started, per ``UPLOAD_STARTED``); False if the store no longer has it."""
        full = self._full(key)
        try:
            self._run(self._call("abort_multipart_upload", self._what(key), Key=full, UploadId=upload_id))
        except ObjectNotFound:
            return False  # NoSuchUpload: completed or aborted already
        return True

    def delete(self, key: str) -> None:
        # DeleteObject succeeds on absent keys; the contract reports them.
        self.stat(key)
        self._run(self._call("delete_object", self._what(key), Key=self._full(key)))

    # -- optional abilities -----------------------------------------------------------------
    def _same_store(self, other: Mover) -> bool:
        return isinstance(other, S3Mover) and (
            other.options.endpoint_url,
            other.options.region,
            other.options.profile,
            other.options.key,
        ) == (self.options.endpoint_url, self.options.region, self.options.profile, self.options.key)

    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        if not self._same_store(dst):
            raise Unsupported(f"{self.url} -> {dst.url}: not the same S3 store; stream the copy instead")
        assert isinstance(dst, S3Mover)
        return self._run(self._copy(src_key, dst, dst_key, storage_class))

    async def _copy(self, src_key: str, dst: S3Mover, dst_key: str, storage_class: str | None) -> Entry:
        """CopyObject (multipart UploadPartCopy above ``copy_limit``) keeping the content mtime."""
        head = await self._head(src_key)
        source_class = head.get("StorageClass") or "STANDARD"
        if restore_state(source_class, head.get("Restore")) in ("archived", "restoring"):
            raise ObjectArchived(f"{self._what(src_key)} is in {source_class} and not restored")
        size = int(head["ContentLength"])
        source = {"Bucket": self.bucket, "Key": self._full(src_key), "IfMatch": head["ETag"]}
        extra: dict[str, Any] = {"StorageClass": _check_class(storage_class or source_class)}
        metadata = dict(head.get("Metadata") or {})
        if mtime_from_metadata(metadata) is None:
            # Pin the current (fallback) mtime, or the copy would look as young as its write.
            metadata[MTIME_KEY] = format_float_mtime(head["LastModified"].timestamp())
        extra["Metadata"] = metadata
        if head.get("ContentType"):
            extra["ContentType"] = head["ContentType"]
        what = dst._what(dst_key)
        full_dst = dst._full(dst_key)
        if size <= self.copy_limit:
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
            await self._multipart_copy(source, size, dst, full_dst, what, extra)
        return _entry_from_head(dst, dst_key, await dst._head(dst_key))

    async def _multipart_copy(
        self, source: dict[str, str], size: int, dst: S3Mover, full_dst: str, what: str, extra: dict[str, Any]
    ) -> None:
        part_size = max(part_size_for(size, dst.part_size), math.ceil(size / MAX_PARTS))
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

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        """CopyObject onto itself with the new class; content, mtime and metadata stay."""
        current = self.stat(key)
        if current.storage_class == _check_class(storage_class):
            return current
        return self._run(self._copy(key, self, key, storage_class))

    def restore(self, key: str, *, days: int, tier: str) -> None:
        """RestoreObject: a readable copy for ``days`` days, retrieved at ``tier`` speed.
        A restore already in progress is not an error."""
        if tier not in RESTORE_TIERS:
            from tierctl.errors import ConfigError

            raise ConfigError(f"restore tier {tier!r} is not one of {', '.join(RESTORE_TIERS)}")
        if days < 1:
            from tierctl.errors import ConfigError

            raise ConfigError("restore days must be at least 1")
        try:
            self._run(
                self._call(
                    "restore_object",
                    self._what(key),
                    Key=self._full(key),
                    RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
                )
            )
        except MoverError as exc:
            if "RestoreAlreadyInProgress" in str(exc):
                return
            raise

    def attributes(self, key: str) -> dict[str, str]:
        """The attributes recorded as ``x-amz-meta-mode`` / ``-uid`` / ``-gid`` / ``-owner`` / ``-group``."""
        return only_attributes(self._run(self._head(key)).get("Metadata"))

    def skipped_keys(self) -> list[str]:
        return list(self._skipped)


def _entry_from_head(mover: S3Mover, key: str, head: dict[str, Any]) -> Entry:
    return mover._entry(key, head)


def _with_checksum(entry: Entry, checksum: str) -> Entry:
    return replace(entry, checksum=checksum)


def _user_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """``x-amz-meta-*`` without the key that holds the content mtime (that is ``age``)."""
    return {k: v for k, v in (metadata or {}).items() if k.lower() != MTIME_KEY}


def _check_class(storage_class: str) -> str:
    if storage_class not in STORAGE_CLASSES:
        raise Unsupported(
            f"S3 has no storage class {storage_class!r}",
            hint=f"use one of: {', '.join(sorted(STORAGE_CLASSES))}",
        )
    return storage_class


def _client_error(exc: BaseException) -> tuple[str, int] | None:
    """(error code, HTTP status) of a botocore ClientError, through s3fs's translation."""
    for candidate in (exc, exc.__cause__, exc.__context__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            return code, status
    return None


def _mover_error(exc: BaseException, what: str) -> MoverError:
    """Classify an S3 failure. Messages name the object and the S3 error code only: no
    request parameters, headers or credentials."""
    if isinstance(exc, MoverError):
        return exc
    found = _client_error(exc)
    if found is not None:
        code, status = found
        if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return ObjectNotFound(f"{what}: not found")
        if code == "NoSuchBucket":
            return MoverError(f"{what}: the bucket does not exist", hint="create it or fix the tier URL")
        if code == "InvalidObjectState":
            return ObjectArchived(f"{what}: archived, not readable until restored")
        if code in ("PreconditionFailed", "412") or status == 412:
            return ObjectChanged(f"{what} changed while being read or copied")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
            return MoverError(
                f"{what}: access denied ({code})",
                hint="check the tier's credentials (options key/secret, profile or the environment)",
            )
        return MoverError(f"{what}: S3 error {code} (HTTP {status})", retryable=status in _RETRYABLE_STATUS)
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if isinstance(exc, PermissionError):
        return MoverError(f"{what}: access denied", hint="check the tier's credentials")
    name = type(exc).__name__
    if (
        isinstance(exc, (ConnectionError, TimeoutError, OSError))
        or "Connect" in name
        or "Timeout" in name
        or name in _TRANSPORT_ERRORS
    ):
        return MoverError(f"{what}: cannot reach the store ({name})", retryable=True)
    return MoverError(f"{what}: {name}", retryable=False)
