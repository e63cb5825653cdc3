"""Google Cloud Storage (``gs://bucket/prefix``) through gcsfs's authenticated JSON API calls.

Requests go through ``GCSFileSystem._call`` (credentials, endpoint, requester-pays,
retries); object names are passed as quoted path arguments, never through fsspec path
parsing. gcsfs's listing cache is not used: every list and stat asks the store.

Content mtime: user metadata ``mtime`` in rclone's RFC 3339 form (plus gsutil's
``goog-reserved-file-mtime``), see :mod:`.objmeta`. GCS listings include user metadata,
so ``list`` reports the same mtime as ``stat`` with no request per object.

User metadata: the object's custom ``metadata`` but the content-mtime keys, reported when
``want_metadata`` asks (listings carry it: no request per object). GCS has no object
tags: an empty mapping.

Verification: GCS reports ``md5Hash`` (not for composite objects) and ``crc32c`` in
base64; entries carry them as ``crc32c:<hex>`` (preferred: cheap to compute) or
``md5:<hex>``. Uploads also send the crc32c the mover computed on the stream, so the store
itself refuses a corrupted upload where it checks.

Storage classes: STANDARD, NEARLINE, COLDLINE, ARCHIVE are all readable (no restore), so
``restore`` is not offered; a class change is a rewrite onto the same name.

gcsfs must be imported with ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` in the
environment unless zonal buckets are wanted; this module sets it if unset.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote

from tierctl.errors import MoverError, ObjectChanged, ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers.attributes import only_attributes
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported, check_key
from tierctl.movers.classes import check_storage_class
from tierctl.movers.objmeta import (
    GSUTIL_MTIME_KEY,
    MTIME_KEY,
    format_rfc3339_mtime,
    mtime_from_metadata,
    parse_mtime,
    split_bucket_url,
)
from tierctl.movers.options import StoreOptions

MIB = 1 << 20
SIMPLE_UPLOAD_LIMIT = 8 * MIB  # one multipart/related request up to this size
RESUMABLE_CHUNK = 8 * MIB  # a multiple of 256 KiB, as resumable uploads require
RANGE_SIZE = 8 * MIB
STORAGE_CLASSES = frozenset({"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE", "MULTI_REGIONAL", "REGIONAL"})
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}


def hex_of_base64(value: str) -> str:
    return base64.b64decode(value).hex()


def _crc32c_base64(data: bytes | bytearray) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.Checksum(bytes(data)).digest()).decode()


class GCSMover(Mover):
    """One bucket/prefix on Google Cloud Storage (or an emulator at ``endpoint_url``)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        self.bucket, self.prefix = split_bucket_url(url, ("gs", "gcs"))
        self.options = StoreOptions.parse(options, url=self.url)
        self.capabilities = Capabilities(
            server_side_copy=True,
            set_storage_class=True,
            restore=False,
            max_connections=self.options.max_connections,
            native_digests=("crc32c",),
            atomic_write=True,
            user_metadata=True,
            ranged_reads=True,
            read_metadata=("tags", "metadata"),
        )
        self._skipped: list[str] = []
        self._fs = self._make_filesystem()

    def _make_filesystem(self) -> Any:
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        import gcsfs

        opts = self.options
        try:
            return gcsfs.GCSFileSystem(
                project=opts.project,
                token=opts.reveal("token"),
                endpoint_url=opts.endpoint_url,
                requester_pays=opts.requester_pays,
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        except Exception as exc:
            # gcsfs's own messages may quote the token (it validates raw access tokens by URL).
            raise MoverError(
                f"{self.url}: cannot set up GCS credentials ({type(exc).__name__})",
                hint="check the tier's token option: 'anon', 'google_default', 'cloud' or a "
                "service-account JSON file path",
            ) from None

    def __repr__(self) -> str:
        return f"GCSMover({self.url!r}, {self.options!r})"

    # -- plumbing -------------------------------------------------------------------------
    def _call(self, what: str, method: str, path: str, *args: str, **kwargs: Any) -> Any:
        try:
            return self._fs.call(method, path, *args, **kwargs)
        except Exception as exc:
            raise _mover_error(exc, what) from None

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _entry(self, key: str, resource: dict[str, Any]) -> Entry:
        mtime = mtime_from_metadata(resource.get("metadata"))
        if mtime is None:
            mtime = parse_mtime(resource.get("updated")) or 0.0
        checksum = None
        if resource.get("crc32c"):
            checksum = f"crc32c:{hex_of_base64(resource['crc32c'])}"
        elif resource.get("md5Hash"):
            checksum = f"md5:{hex_of_base64(resource['md5Hash'])}"
        want = self.want_metadata
        return Entry(
            key=key,
            size=int(resource["size"]),
            mtime=mtime,
            checksum=checksum,
            storage_class=resource.get("storageClass") or "STANDARD",
            etag=str(resource.get("generation")),
            tags={} if "tags" in want else None,
            metadata=_user_metadata(resource.get("metadata")) if "metadata" in want else None,
        )

    def _resource(self, key: str) -> dict[str, Any]:
        return self._call(self._what(key), "GET", "b/{}/o/{}", self.bucket, self._full(key), json_out=True)

    # -- required core --------------------------------------------------------------------
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        self._skipped = []
        token: str | None = None
        previous = ""
        while True:
            params: dict[str, Any] = {"prefix": self.prefix + prefix, "maxResults": 1000}
            if token:
                params["pageToken"] = token
            page = self._call(f"listing {self.url}", "GET", "b/{}/o", self.bucket, json_out=True, **params)
            items = page.get("items") or []
            for item in sorted(items, key=lambda i: i["name"]):  # the emulator does not sort
                name = item["name"]
                if name.endswith("/"):
                    continue  # folder placeholder
                key = name[len(self.prefix) :]
                try:
                    check_key(key)
                except UnsafeKey:
                    self._skipped.append(key)
                    continue
                if key <= previous and previous:
                    raise MoverError(f"listing {self.url}: the store returned keys out of order")
                previous = key
                yield self._entry(key, item)
            token = page.get("nextPageToken")
            if not token:
                return

    def stat(self, key: str) -> Entry:
        return self._entry(key, self._resource(key))

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        # Ranged reads pinned to one generation: memory stays bounded, and an object
        # overwritten mid-read fails (404 on the old generation) instead of mixing versions.
        resource = self._resource(key)
        size, generation = int(resource["size"]), resource["generation"]
        what = self._what(key)
        span = max(chunk_size, RANGE_SIZE)
        for start in range(0, size, span):
            end = min(size, start + span) - 1
            try:
                data = self._get_range(key, start, end, generation=generation)
            except FileNotFoundError:
                raise ObjectChanged(f"{what} changed or vanished while being read") from None
            except Exception as exc:
                raise _mover_error(exc, what) from None
            if len(data) != end - start + 1:
                raise MoverError(f"{what}: short read at byte {start}", retryable=True)
            view = memoryview(data)
            for offset in range(0, len(view), chunk_size):
                yield bytes(view[offset : offset + chunk_size])

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        what = self._what(key)
        try:
            data = self._get_range(key, start, end - 1)
        except Exception as exc:
            raise _mover_error(exc, what) from None
        return bytes(data)

    def _get_range(self, key: str, first: int, last: int, **params: Any) -> bytes:
        """Bytes ``first``..``last`` (inclusive) of ``key``; ``params`` e.g. a pinned generation."""
        _headers, data = self._fs.call(
            "GET",
            "b/{}/o/{}",
            self.bucket,
            self._full(key),
            alt="media",
            headers={"Range": f"bytes={first}-{last}"},
            **params,
        )
        return data

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
        resource: dict[str, Any] = {
            "name": full,
            "metadata": {
                **{k: str(v) for k, v in (metadata or {}).items()},
                MTIME_KEY: format_rfc3339_mtime(mtime),
                GSUTIL_MTIME_KEY: str(int(mtime)),
            },
        }
        if storage_class:
            resource["storageClass"] = check_class(storage_class)
        stream = iter(chunks)
        buffer = bytearray()
        for chunk in stream:
            buffer += chunk
            if len(buffer) > SIMPLE_UPLOAD_LIMIT:
                stored = self._resumable_upload(what, resource, buffer, stream, size)
                break
        else:
            stored = self._simple_upload(what, resource, buffer)
        return self._entry(key, stored)

    def _simple_upload(self, what: str, resource: dict[str, Any], data: bytearray) -> dict[str, Any]:
        resource = {**resource, "crc32c": _crc32c_base64(data)}
        boundary = "tierctl-boundary-7c1f"
        body = (
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(resource)}\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + bytes(data)
            + f"\r\n--{boundary}--".encode()
        )
        return self._call(
            what,
            "POST",
            f"{self._fs._location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o",
            uploadType="multipart",
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            data=body,
            json_out=True,
        )

    def _resumable_upload(
        self, what: str, resource: dict[str, Any], buffer: bytearray, rest: Iterator[bytes], size: int
    ) -> dict[str, Any]:
        from fsspec.asyn import sync
        from gcsfs.core import upload_chunk

        headers, _ = self._call(
            what,
            "POST",
            f"{self._fs._location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o",
            uploadType="resumable",
            json=resource,
            headers={"X-Upload-Content-Type": "application/octet-stream"},
        )
        location = headers["Location"]
        offset = 0
        result: dict[str, Any] | None = None

        def send(data: bytes) -> Any:
            try:
                return sync(
                    self._fs.loop,
                    upload_chunk,
                    self._fs,
                    location,
                    data,
                    offset,
                    size,
                    "application/octet-stream",
                )
            except Exception as exc:
                raise _mover_error(exc, what) from None

        for chunk in rest:
            buffer += chunk
            while len(buffer) > RESUMABLE_CHUNK:
                send(bytes(buffer[:RESUMABLE_CHUNK]))
                offset += RESUMABLE_CHUNK
                del buffer[:RESUMABLE_CHUNK]
        if offset + len(buffer) != size:
            raise ObjectChanged(f"{what}: the source gave {offset + len(buffer)} bytes, {size} were declared")
        result = send(bytes(buffer))
        if not isinstance(result, dict):
            raise MoverError(f"{what}: upload did not complete", retryable=True)
        return result

    def delete(self, key: str) -> None:
        self._call(self._what(key), "DELETE", "b/{}/o/{}", self.bucket, self._full(key))

    # -- optional abilities -----------------------------------------------------------------
    def _same_store(self, other: Mover) -> bool:
        return isinstance(other, GCSMover) and (other.options.endpoint_url, other.options.token) == (
            self.options.endpoint_url,
            self.options.token,
        )

    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        if not self._same_store(dst):
            raise Unsupported(f"{self.url} -> {dst.url}: not the same GCS store; stream the copy instead")
        assert isinstance(dst, GCSMover)
        return self._rewrite(src_key, dst, dst_key, storage_class)

    def _rewrite(self, src_key: str, dst: GCSMover, dst_key: str, storage_class: str | None) -> Entry:
        """objects.rewrite (looping on rewriteToken), pinned to the source generation."""
        source = self._resource(src_key)
        body: dict[str, Any] = {}
        metadata = dict(source.get("metadata") or {})
        if mtime_from_metadata(metadata) is None:
            fallback = parse_mtime(source.get("updated")) or 0.0
            metadata[MTIME_KEY] = format_rfc3339_mtime(fallback)
        body["metadata"] = metadata
        if storage_class:
            body["storageClass"] = check_class(storage_class)
        what = dst._what(dst_key)
        params: dict[str, Any] = {"sourceGeneration": source["generation"]}
        while True:
            out = self._call(
                what,
                "POST",
                "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                self.bucket,
                self._full(src_key),
                dst.bucket,
                dst._full(dst_key),
                json=body,
                json_out=True,
                **params,
            )
            if out.get("done"):
                break
            params["rewriteToken"] = out["rewriteToken"]
        stored = out.get("resource") or dst._resource(dst_key)
        if storage_class and (stored.get("storageClass") or "STANDARD") != storage_class:
            raise Unsupported(
                f"{what}: the store ignored the storage class change to {storage_class} "
                f"(it reports {stored.get('storageClass')})"
            )
        if mtime_from_metadata(stored.get("metadata")) is None:
            raise Unsupported(f"{what}: the store dropped the object's metadata in a rewrite")
        return dst._entry(dst_key, stored)

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        current = self.stat(key)
        if current.storage_class == check_class(storage_class):
            return current
        return self._rewrite(key, self, key, storage_class)

    def attributes(self, key: str) -> dict[str, str]:
        """The attributes recorded in the object's custom metadata (``mode``, ``owner``, ...)."""
        return only_attributes(self._resource(key).get("metadata"))

    def skipped_keys(self) -> list[str]:
        return list(self._skipped)


def _user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Custom metadata without the keys that hold the content mtime (that is ``age``)."""
    return {k: str(v) for k, v in (metadata or {}).items() if k not in (MTIME_KEY, GSUTIL_MTIME_KEY)}


def check_class(storage_class: str) -> str:
    return check_storage_class("GCS", storage_class, STORAGE_CLASSES)


def _mover_error(exc: BaseException, what: str) -> MoverError:
    """Classify a GCS failure; messages name the object and the HTTP status only."""
    if isinstance(exc, MoverError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if isinstance(exc, FileExistsError):
        return ObjectChanged(f"{what}: precondition failed (changed meanwhile)")
    code = getattr(exc, "code", None)
    status = code if isinstance(code, int) else 0
    name = type(exc).__name__
    if status in (401, 403) or "Forbidden" in str(exc)[:20]:
        return MoverError(f"{what}: access denied", hint="check the tier's token / project options")
    if status:
        return MoverError(f"{what}: GCS error HTTP {status}", retryable=status in _RETRYABLE_STATUS)
    if isinstance(exc, (ConnectionError, TimeoutError, OSError)) or "Connect" in name or "Timeout" in name:
        return MoverError(f"{what}: cannot reach the store ({name})", retryable=True)
    return MoverError(f"{what}: {name}")
