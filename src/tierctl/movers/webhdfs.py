"""HDFS over its REST API (``webhdfs://host:port/path``, ``swebhdfs://`` for TLS).

Speaks WebHDFS to a NameNode (data operations answered with ``307`` to a DataNode) or to
an HttpFS gateway (data inline, or redirected to itself with ``data=true``), with
``requests`` directly rather than through fsspec's WebHDFS class: fsspec's reader does not
check the status of the redirected data request (a failed read comes back as the JSON
error text, treated as file content) and its append mode is broken. Here every response's
status is checked and a ``RemoteException`` becomes a classified :class:`MoverError`: that
request layer, with the tier's options and authentication, is :mod:`.webhdfs_client`; this
module maps tier keys to HDFS paths and implements the :class:`Mover` on top of it.

Listing
    A depth-first walk with one ``LISTSTATUS_BATCH`` page iterator per open directory
    (``dfs.ls.limit`` entries a page, default 1000), so memory grows with the depth of the
    tree and the page size, never with its size. HDFS lists a directory in name order; a
    sub-directory ``a`` must come after ``a.txt`` and ``a-b`` (its keys start ``a/``), so
    directories wait in a small heap keyed ``name + "/"`` until the page stream passes
    that key: the walk yields keys in global code-point order, as S3 lists. Servers
    without ``LISTSTATUS_BATCH`` (before Hadoop 2.8) fall back to ``LISTSTATUS``, whose
    memory grows with the largest directory.

Writes
    Two-step ``CREATE`` of a temporary name beside the key (``.tierctl-tmp-...``, never
    listed), with ``Content-Length`` set and the byte count enforced, then ``SETTIMES``
    (the content mtime, in HDFS's milliseconds), ``SETPERMISSION`` / ``SETOWNER`` when
    attributes are asked for (:mod:`.attributes`), and ``RENAME`` onto the key with
    ``renameoptions=OVERWRITE`` (atomic on a NameNode; a server that answers with the
    old boolean rename gets delete + rename, so a reader may briefly see the key absent,
    never half-written). A finished ``CREATE`` has closed the file: its blocks are
    complete on the DataNode pipeline, which is what ``durable`` asks for.

Checksums
    HDFS's own ``GETFILECHECKSUM`` (MD5 of per-block MD5s of CRC32Cs of 512-byte chunks)
    depends on the block size and checksum settings and matches no S3 or GCS digest, so
    the mover reports no native digest: a copy is verified by tierctl's stream digest.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from tierctl.errors import ConfigError, MoverError, ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers import attributes as posix
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported
from tierctl.movers.hdfs_paths import TEMP_PREFIX, HdfsPaths
from tierctl.movers.webhdfs_client import KNOWN_OPTIONS as KNOWN_OPTIONS  # re-exported, as every mover's
from tierctl.movers.webhdfs_client import (
    AccessDenied,
    WebHDFSClient,
    WebHDFSOptions,
    boolean_answer,
    json_body,
    renamed,
)

ABANDONED_TEMP_AGE = 24 * 3600.0  # temp files older than this are a killed writer's: removed
DEFAULT_PORTS = {"webhdfs": 9870, "swebhdfs": 9871}


class WebHDFSMover(HdfsPaths, Mover):
    """One HDFS directory through WebHDFS or HttpFS."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ConfigError(
                f"not a WebHDFS URL: {url}", hint="use webhdfs://namenode:9870/path (swebhdfs:// for TLS)"
            )
        self.options = WebHDFSOptions.parse(options, url=self.url)
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        http = "https" if parts.scheme == "swebhdfs" else "http"
        self._base = f"{http}://{parts.hostname}:{port}/webhdfs/v1"
        self.root = "/" + unquote(parts.path).strip("/")
        if self.root != "/" and any(seg in ("", ".", "..") for seg in self.root[1:].split("/")):
            raise ConfigError(f"{url}: the path must be absolute and normalised")
        self.capabilities = Capabilities(
            max_connections=self.options.max_connections,
            atomic_write=True,
            attributes=(posix.MODE, posix.OWNER, posix.GROUP),
            ranged_reads=True,
        )
        self._batch_listing = True
        self._skipped: list[str] = []
        self.removed_temp_files = 0
        self._client = WebHDFSClient(self._base, self.options, url=self.url)

    def __repr__(self) -> str:
        return f"WebHDFSMover({self.url!r}, {self.options!r})"

    # -- plumbing -----------------------------------------------------------------------
    def _call(
        self, method: str, path: str, op: str, what: str, *, expect: tuple[int, ...] = (200,), **params: str
    ) -> Any:
        """A namenode request: ``op`` on the HDFS path ``path``."""
        return self._client.call(method, path, op, what, expect=expect, **params)

    def _entry(self, key: str, status: dict[str, Any]) -> Entry:
        modified = int(status["modificationTime"])
        accessed = int(status.get("accessTime") or 0)
        return Entry(
            key=key,
            size=int(status["length"]),
            mtime=modified / 1000.0,
            etag=f"{status.get('fileId', '')}@{modified}",
            atime=accessed / 1000.0 if accessed else None,
        )

    # -- listing ---------------------------------------------------------------------------
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        for rel, status in self._walk(prefix):
            yield self._entry(rel, status)

    def _walk(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, FileStatus)`` of every file under ``prefix``, in key order."""
        self._skipped = []
        base, _, name_prefix = prefix.rpartition("/")
        rel_base = f"{base}/" if base else ""
        stack = [self._children(self._join(base), rel_base, name_prefix, top=True)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            rel, status = item
            if status["type"] == "DIRECTORY":
                stack.append(self._children(self._join(rel), rel + "/", "", top=False))
                continue
            if status["type"] != "FILE":
                self._skipped.append(rel)  # symlinks
                continue
            try:
                self._path(rel)
            except UnsafeKey:
                self._skipped.append(rel)
                continue
            yield rel, status

    def _children(
        self, path: str, rel_base: str, name_prefix: str, *, top: bool
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """A directory's entries in tierctl's order (a folder sorts as ``name + "/"``).

        Files stream straight from the pages; a directory waits in ``pending`` until the
        next name from the pages sorts after ``name + "/"``."""
        pending: list[tuple[str, dict[str, Any]]] = []
        for status in self._pages(path, top=top):
            name = status["pathSuffix"]
            if not name:
                return  # the path is a file, not a directory: nothing under it
            if not name.startswith(name_prefix):
                if name > name_prefix:
                    break  # the pages are in name order: no later name can match
                continue
            if name.startswith(TEMP_PREFIX):
                self._reap_temp(_join_path(path, name), status)
                continue
            while pending and pending[0][0] < name:
                folder, folder_status = heapq.heappop(pending)
                yield rel_base + folder[:-1], folder_status
            if status.get("type") == "DIRECTORY":
                heapq.heappush(pending, (name + "/", status))
            else:
                yield rel_base + name, status
        while pending:
            folder, folder_status = heapq.heappop(pending)
            yield rel_base + folder[:-1], folder_status

    def _pages(self, path: str, *, top: bool) -> Iterator[dict[str, Any]]:
        """FileStatus objects of a directory in HDFS (name) order, a page at a time."""
        what = f"listing {self._base_url_of(path)}"
        start_after = ""
        while self._batch_listing:
            params = {"startafter": start_after} if start_after else {}
            try:
                response = self._call("GET", path, "LISTSTATUS_BATCH", what, **params)
            except ObjectNotFound:
                return  # absent (or removed while walking): nothing to list
            except MoverError as exc:
                if getattr(exc, "unsupported_op", False) and not start_after:
                    self._batch_listing = False
                    break
                raise
            listing = json_body(response, what).get("DirectoryListing") or {}
            statuses = ((listing.get("partialListing") or {}).get("FileStatuses") or {}).get(
                "FileStatus"
            ) or []
            yield from statuses
            if not statuses or not int(listing.get("remainingEntries") or 0):
                return
            start_after = statuses[-1]["pathSuffix"]
        try:
            response = self._call("GET", path, "LISTSTATUS", what)
        except ObjectNotFound:
            return
        statuses = (json_body(response, what).get("FileStatuses") or {}).get("FileStatus") or []
        yield from sorted(statuses, key=lambda s: s["pathSuffix"])

    def _base_url_of(self, path: str) -> str:
        relative = path[len(self.root) :].lstrip("/") if path.startswith(self.root) else path
        return f"{self.url}/{relative}" if relative else self.url

    def _reap_temp(self, path: str, status: dict[str, Any]) -> None:
        """A temp file is never listed; one untouched for a day is a killed writer's."""
        if time.time() - int(status.get("modificationTime") or 0) / 1000.0 < ABANDONED_TEMP_AGE:
            return
        with contextlib.suppress(MoverError):
            self._call("DELETE", path, "DELETE", f"removing {path}", recursive="false")
            self.removed_temp_files += 1

    # -- required core ---------------------------------------------------------------------
    def stat(self, key: str) -> Entry:
        what = self._what(key)
        status = json_body(self._call("GET", self._path(key), "GETFILESTATUS", what), what)["FileStatus"]
        if status.get("type") != "FILE":
            raise ObjectNotFound(f"{what}: not a regular file")
        return self._entry(key, status)

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        import requests

        what = self._what(key)
        response = self._client.open(self._path(key), what)
        try:
            yield from response.iter_content(chunk_size)
        except requests.exceptions.RequestException as exc:
            raise MoverError(f"{what}: read interrupted ({type(exc).__name__})", retryable=True) from None
        finally:
            response.close()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        import requests

        if end <= start:
            return b""
        what = self._what(key)
        response = self._client.open(self._path(key), what, offset=str(start), length=str(end - start))
        try:
            return bytes(response.content)
        except requests.exceptions.RequestException as exc:
            raise MoverError(f"{what}: read interrupted ({type(exc).__name__})", retryable=True) from None
        finally:
            response.close()

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
        if storage_class:
            raise Unsupported(f"{self.url}: HDFS tiers have no storage classes")
        final = self._path(key)
        what = self._what(key)
        parent = final.rsplit("/", 1)[0] or "/"
        temp = _join_path(parent, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")
        try:
            self._client.create(temp, chunks, size, what)
            self._call(
                "PUT", temp, "SETTIMES", what, modificationtime=str(round(mtime * 1000)), accesstime="-1"
            )
            # Before the rename: the key never shows the writer's defaults.
            self._apply_attributes(temp, posix.only_attributes(metadata), what)
            self._rename_over(temp, final, what)
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("DELETE", temp, "DELETE", what, recursive="false")
            raise
        return self.stat(key)

    def _rename_over(self, temp: str, final: str, what: str) -> None:
        response = self._call("PUT", temp, "RENAME", what, destination=final, renameoptions="OVERWRITE")
        if renamed(response):
            return
        # A server that ignores renameoptions answers with the boolean rename, which
        # refuses an existing destination: remove it, then rename again.
        with contextlib.suppress(ObjectNotFound):
            self._call("DELETE", final, "DELETE", what, recursive="false")
        response = self._call("PUT", temp, "RENAME", what, destination=final)
        if not renamed(response):
            raise MoverError(
                f"{what}: the server refused to rename the written file into place", retryable=True
            )

    def delete(self, key: str) -> None:
        path = self._path(key)
        what = self._what(key)
        self.stat(key)  # a directory is not an object; an absent key is reported
        response = self._call("DELETE", path, "DELETE", what, recursive="false")
        if not boolean_answer(response):
            raise ObjectNotFound(f"{what}: not found")
        self._prune_empty_parents(path)

    def _prune_empty_parents(self, path: str) -> None:
        """Remove folders the delete left empty, up to the tier root (a non-recursive DELETE
        of a folder that is not empty fails, which ends the walk)."""
        folder = path.rsplit("/", 1)[0] or "/"
        while folder != self.root and folder.startswith(self.root.rstrip("/") + "/"):
            try:
                response = self._call("DELETE", folder, "DELETE", f"pruning {folder}", recursive="false")
            except MoverError:
                return
            if not boolean_answer(response):
                return
            folder = folder.rsplit("/", 1)[0] or "/"

    def skipped_keys(self) -> list[str]:
        return list(self._skipped)

    # -- attributes: FileStatus permission / owner / group -----------------------------------
    def attributes(self, key: str) -> dict[str, str]:
        what = self._what(key)
        status = json_body(self._call("GET", self._path(key), "GETFILESTATUS", what), what)["FileStatus"]
        if status.get("type") != "FILE":
            raise ObjectNotFound(f"{what}: not a regular file")
        return _attributes_of(status)

    def list_attributes(self, prefix: str = "") -> Iterator[tuple[str, dict[str, str]]]:
        for rel, status in self._walk(prefix):
            yield rel, _attributes_of(status)

    def set_attributes(self, key: str, attributes: Mapping[str, str]) -> None:
        path = self._path(key)
        self.stat(key)  # a directory is not an object; an absent key is reported
        self._apply_attributes(path, posix.only_attributes(attributes), self._what(key))

    def _apply_attributes(self, path: str, wanted: Mapping[str, str], what: str) -> None:
        """SETPERMISSION, then SETOWNER (after a chown the writer may no longer own the file).
        An owner the NameNode refuses (only the superuser may give files away) still lets
        the group through where the writer may set it; a refused group is left as is."""
        bits = posix.permission_bits(wanted.get(posix.MODE))
        if bits is not None:
            self._call("PUT", path, "SETPERMISSION", what, permission=f"{bits:o}")
        owner, group = wanted.get(posix.OWNER), wanted.get(posix.GROUP)
        for attempt in ({"owner": owner, "group": group}, {"group": group}):
            names: dict[str, Any] = {k: v for k, v in attempt.items() if v}
            if not names:
                return
            try:
                self._call("PUT", path, "SETOWNER", what, **names)
                return
            except AccessDenied:
                if "owner" not in names:
                    return

    def close(self) -> None:
        self._client.close()


def _attributes_of(status: Mapping[str, Any]) -> dict[str, str]:
    found = {posix.MODE: str(status.get("permission") or "")}
    for name in (posix.OWNER, posix.GROUP):
        if status.get(name):
            found[name] = str(status[name])
    return {k: v for k, v in found.items() if v}


def _join_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"
