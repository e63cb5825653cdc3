"""S3 and S3-compatible stores (``s3://bucket/prefix``).

Two request paths, one set of options (credentials, endpoint, region, requester-pays):
single-object HEAD, single-part PUT and DELETE go through the lean path
(:mod:`.s3_requests`: SigV4-signed HTTP/1.1 over pooled connections, several times less
CPU per request), everything else (listings, multipart uploads, copies, tags, reads,
restores) through ``S3FileSystem._call_s3`` (s3fs/aiobotocore), which is imported only when
first needed. Where the lean path cannot reproduce the s3fs setup, s3fs does it all. Keys
are passed as ``Key=`` parameters or percent-encoded by botocore, never through fsspec path
parsing, so ``#``, ``%``, ``+`` and spaces are plain characters.

Content mtime, tags and user metadata
    Kept as user metadata ``mtime`` in rclone's format (see :mod:`.objmeta`); listings take
    them from the caller's ``known`` entries where the listing proves an object unchanged
    (:mod:`.s3_listing`).

Verification
    Objects up to ``part_size`` go up in one PUT (ETag = MD5; the lean path also sends
    Content-MD5, so the store refuses a body damaged on the way); larger ones in exactly
    ``part_size`` parts, so the ETag is computable on the stream: the internal digest
    ``s3etag-<part_size>`` (:mod:`.digest`) is the mover's native digest, and a copy is
    verified from the ETag the store returns without reading it back. (Objects so large
    that 10,000 parts of ``part_size`` do not hold them use a larger part and fall back to
    a read-back.) Listings report ``md5:<etag>`` for single-part ETags only. The written
    entry comes from the store's answer to the upload, as a HEAD would give it: where the
    answer carries Last-Modified (moto) no HEAD follows; else (AWS) one does, as rclone's.

Conditional creates
    ``write(if_absent=True)`` (``capabilities.conditional_create``) never replaces an
    object: one PUT with ``If-None-Match: *`` where the store is found to enforce it, else a
    HEAD first (:mod:`.s3_conditional`).

Archive classes
    GLACIER and DEEP_ARCHIVE objects are not readable until restored: reads raise
    :class:`ObjectArchived`; ``stat`` reports ``restore_state`` from the ``Restore`` header.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tierctl.errors import MoverError, ObjectChanged, ObjectExists, ObjectNotFound
from tierctl.model import Entry
from tierctl.movers.attributes import only_attributes
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported, check_key
from tierctl.movers.objmeta import MTIME_KEY, format_float_mtime, mtime_from_metadata, split_bucket_url
from tierctl.movers.options import StoreOptions
from tierctl.movers.s3_common import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    RESTORE_TIERS,
    check_class,
    part_size_for,
    restore_state,
    version_token,
)
from tierctl.movers.s3_common import (
    UPLOAD_STARTED as UPLOAD_STARTED,
)
from tierctl.movers.s3_conditional import ConditionalCreates
from tierctl.movers.s3_copy import COPY_LIMIT, copy_in_store
from tierctl.movers.s3_errors import mover_error
from tierctl.movers.s3_listing import page_entries
from tierctl.movers.s3_multipart import upload_stream

if TYPE_CHECKING:
    from tierctl.movers.s3_requests import S3Requests

_LEAN_OFF = object()  # S3Mover._lean when the lean path is not used


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
            conditional_create=True,
        )
        self.conditional = ConditionalCreates()
        self._skipped: list[str] = []
        self._setup = threading.Lock()
        self._filesystem: Any = None
        self._lean: Any = None  # S3Requests, _LEAN_OFF, or None until first needed

    @property
    def _fs(self) -> Any:
        """The s3fs filesystem, made on first use (importing s3fs costs ~0.35 s)."""
        if self._filesystem is None:
            with self._setup:
                if self._filesystem is None:
                    self._filesystem = self._make_filesystem()
        return self._filesystem

    def _requests(self) -> S3Requests | None:
        """The lean request path, made on first use; None where s3fs must do it all."""
        lean = self._lean
        if lean is None:
            from tierctl.movers.s3_requests import open_requests

            with self._setup:
                if self._lean is None:
                    try:
                        self._lean = open_requests(self.bucket, self.options) or _LEAN_OFF
                    except Exception:
                        self._lean = _LEAN_OFF  # s3fs sets up (or reports) the same options
                lean = self._lean
        return None if lean is _LEAN_OFF else lean

    def _lean_call(self, what: str, call: Callable[[S3Requests], Any], *, creating: bool = False) -> Any:
        """``call`` on the lean path; ``_LEAN_OFF`` if that path is (or just became)
        unusable for this store, so the caller sends the request through s3fs instead.
        ``creating``: a refused conditional create raises :class:`ObjectExists`."""
        from tierctl.movers.s3_requests import LeanUnavailable

        lean = self._requests()
        if lean is None:
            return _LEAN_OFF
        try:
            return call(lean)
        except LeanUnavailable:
            self._lean = _LEAN_OFF  # a region redirect: aiobotocore follows those
            lean.close()
            return _LEAN_OFF
        except Exception as exc:
            raise mover_error(exc, what, creating=creating) from None

    def close(self) -> None:
        lean = self._lean
        if lean is not None and lean is not _LEAN_OFF:
            lean.close()

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

    async def _call(self, method: str, what: str, *, creating: bool = False, **kwargs: Any) -> Any:
        try:
            return await self._fs._call_s3(method, Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise mover_error(exc, what, creating=creating) from None

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

    def _head_now(self, key: str) -> dict[str, Any]:
        """HEAD from the calling thread: the lean path, else s3fs."""
        full, what = self._full(key), self._what(key)
        head = self._lean_call(what, lambda lean: lean.head(full))
        if head is _LEAN_OFF:
            head = self._run(self._head(key))
        return head  # type: ignore[no-any-return]

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
            yield from self._run(page_entries(self, page.get("Contents", []), known))
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def stat(self, key: str) -> Entry:
        if "tags" in self.want_metadata:
            result: Entry = self._run(self._stat(key))
            return result
        return self._entry(key, self._head_now(key))

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
                    raise mover_error(exc, what) from None
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
                raise mover_error(exc, what) from None
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
        if_absent: bool = False,
    ) -> Entry:
        user = {k.lower(): str(v) for k, v in (metadata or {}).items()}
        extra: dict[str, Any] = {"Metadata": {**user, MTIME_KEY: format_float_mtime(mtime)}}
        if storage_class:
            extra["StorageClass"] = check_class(storage_class)
        part_size = part_size_for(size, self.part_size)
        # Where the store enforces If-None-Match the PUT itself refuses (a multipart upload
        # HEADs first, in upload_stream); elsewhere a HEAD now, as callers did before.
        conditional = if_absent and self.conditional.enforced(self)
        if if_absent and not conditional:
            self.refuse_existing(key)
        body, etag = upload_stream(self, key, chunks, extra, part_size, if_absent=conditional)
        if body is not None:
            return self._put(key, body, extra, part_size, if_absent=conditional)
        assert etag is not None
        return self._written(key, etag, part_size, None)

    def refuse_existing(self, key: str) -> None:
        """:class:`ObjectExists` if ``key`` holds an object (a HEAD: not atomic)."""
        try:
            self._head_now(key)
        except ObjectNotFound:
            return
        raise ObjectExists(f"{self._what(key)} already exists; not replaced")

    def _put(
        self, key: str, body: bytes, extra: dict[str, Any], part_size: int, *, if_absent: bool = False
    ) -> Entry:
        """One PUT: the lean path where its headers can carry ``extra``, else s3fs.
        ``if_absent``: with ``If-None-Match: *``; :class:`ObjectExists` if refused."""
        full, what = self._full(key), self._what(key)
        headers = _put_headers(body, extra)
        answer: Any = _LEAN_OFF
        if headers is not None:
            if if_absent:
                headers["If-None-Match"] = "*"
            answer = self._lean_call(what, lambda lean: lean.put(full, body, headers), creating=if_absent)
        if answer is _LEAN_OFF:
            condition = {"IfNoneMatch": "*"} if if_absent else {}
            response = self._run(
                self._call("put_object", what, creating=if_absent, Key=full, Body=body, **extra, **condition)
            )
            return self._written(key, response["ETag"].strip('"'), part_size, None)
        from tierctl.movers.s3_requests import last_modified

        etag = (answer.get("etag") or "").strip('"')
        modified = last_modified(answer)
        if not etag:
            # No ETag in the answer: the stored object's, which the copy then verifies.
            etag = str(self._head_now(key)["ETag"]).strip('"')
        if modified is None:
            return self._written(key, etag, part_size, None)
        # The answer says all a HEAD would: what was sent, and when the store took it.
        head = {
            "ETag": etag,
            "ContentLength": len(body),
            "LastModified": modified,
            "StorageClass": extra.get("StorageClass") or "STANDARD",
            "Metadata": extra["Metadata"],
        }
        return self._written(key, etag, part_size, head)

    def _written(self, key: str, etag: str, part_size: int, head: dict[str, Any] | None) -> Entry:
        """The entry of the object just uploaded with ETag ``etag``, from ``head`` or a HEAD.
        Its checksum is that ETag in the algorithm the bytes were uploaded with: a copy is
        verified from it (``transfer.copy_verified``), without reading it back."""
        entry = self._entry(key, head if head is not None else self._head_now(key))
        if not entry.etag or not entry.etag.startswith(etag + "@"):
            raise ObjectChanged(f"{self._what(key)} was overwritten by another writer while being written")
        if "tags" in self.want_metadata:
            entry = replace(entry, tags={})  # a PUT replaces the object's tags with none
        return replace(entry, checksum=f"s3etag-{part_size}:{etag}")

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
        self._head_now(key)
        self._delete_now(key)

    def _delete_now(self, key: str) -> None:
        """DeleteObject, which succeeds whether or not ``key`` holds an object."""
        full, what = self._full(key), self._what(key)
        if self._lean_call(what, lambda lean: lean.delete(full)) is _LEAN_OFF:
            self._run(self._call("delete_object", what, Key=full))

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
        result: Entry = self._run(copy_in_store(self, src_key, dst, dst_key, storage_class))
        return result

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        """CopyObject onto itself with the new class; content, mtime and metadata stay."""
        current = self.stat(key)
        if current.storage_class == check_class(storage_class):
            return current
        result: Entry = self._run(copy_in_store(self, key, self, key, storage_class))
        return result

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
        return only_attributes(self._head_now(key).get("Metadata"))

    def skipped_keys(self) -> builtins.list[str]:
        return list(self._skipped)


def _user_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    """``x-amz-meta-*`` without the key that holds the content mtime (that is ``age``)."""
    return {k: v for k, v in (metadata or {}).items() if k.lower() != MTIME_KEY}


def _put_headers(body: bytes, extra: dict[str, Any]) -> dict[str, str] | None:
    """The lean PUT's headers for ``put_object(**extra)``; None when a value cannot travel
    as a plain ASCII header (botocore refuses non-ASCII metadata: so does the s3fs path)."""
    headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode("ascii")}
    for name, value in extra["Metadata"].items():
        headers[f"x-amz-meta-{name}"] = value
    if extra.get("StorageClass"):
        headers["x-amz-storage-class"] = extra["StorageClass"]
    for name, value in headers.items():
        plain = name.isascii() and name.isprintable() and value.isascii() and value.isprintable()
        if not plain or " " in name or ":" in name:
            return None
    return headers
