"""HDFS over its REST API (``webhdfs://host:port/path``, ``swebhdfs://`` for TLS).

Speaks WebHDFS to a NameNode (data operations answered with ``307`` to a DataNode) or to
an HttpFS gateway (data inline, or redirected to itself with ``data=true``), with
``requests`` directly rather than through fsspec's WebHDFS class: fsspec's reader does not
check the status of the redirected data request (a failed read comes back as the JSON
error text, treated as file content) and its append mode is broken. Here every response's
status is checked and a ``RemoteException`` becomes a classified :class:`MoverError`.

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
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from tierctl.errors import (
    ConfigError,
    MissingDependency,
    MoverError,
    ObjectChanged,
    ObjectNotFound,
    UnsafeKey,
)
from tierctl.model import Entry
from tierctl.movers import attributes as posix
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported, check_key
from tierctl.movers.options import (
    BOOLEAN_WORDS,
    Secret,
    boolean_option,
    expand_references,
    positive_int_option,
    positive_number_option,
    reject_unknown,
)

TEMP_PREFIX = ".tierctl-tmp-"
ABANDONED_TEMP_AGE = 24 * 3600.0  # temp files older than this are a killed writer's: removed
DEFAULT_PORTS = {"webhdfs": 9870, "swebhdfs": 9871}
_RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_RETRYABLE_EXCEPTIONS = {"StandbyException", "RetriableException", "SafeModeException"}

KNOWN_OPTIONS = {
    "user": "the HDFS user (user.name; security off)",
    "proxy_user": "act as this user (doas; the caller must be allowed to proxy)",
    "token": "a delegation token (secured clusters, without Kerberos on this host)",
    "kerberos": "authenticate with SPNEGO/Kerberos (needs requests-kerberos and a kinit ticket)",
    "verify": "swebhdfs: verify the server's TLS certificate (true, false, or a CA bundle path)",
    "max_connections": "concurrent connections",
    "timeout": "seconds to wait for the server to answer (connect and each read)",
}


@dataclass(frozen=True, repr=False)
class WebHDFSOptions:
    """Validated options of one WebHDFS tier."""

    user: str | None = None
    proxy_user: str | None = None
    token: Secret | None = None
    kerberos: bool = False
    verify: bool | str = True
    max_connections: int = 16
    timeout: float = 60.0

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, url: str) -> WebHDFSOptions:
        reject_unknown(options, KNOWN_OPTIONS, url=url)
        values: dict[str, Any] = {}
        for name, raw in options.items():
            value = expand_references(raw, option=name) if isinstance(raw, str) else raw
            if value is None or value == "":
                continue
            if name == "token":
                values[name] = Secret(str(value))
            elif name == "kerberos":
                values[name] = boolean_option(value, name, url)
            elif name == "verify":  # true/false, or the path of a CA bundle
                values[name] = (
                    boolean_option(value, name, url)
                    if isinstance(value, bool) or str(value).lower() in BOOLEAN_WORDS
                    else str(value)
                )
            elif name == "max_connections":
                values[name] = positive_int_option(value, name, url)
            elif name == "timeout":
                values[name] = positive_number_option(value, name, url)
            else:
                values[name] = str(value)
        parsed = cls(**values)
        if parsed.token is not None and (parsed.user or parsed.kerberos):
            raise ConfigError(
                f"{url}: a delegation token already names its user",
                hint="give either token, or user / kerberos, not both",
            )
        return parsed

    def __repr__(self) -> str:
        shown = [
            f"{name}={'***' if name == 'token' else value!r}"
            for name, value in (
                ("user", self.user),
                ("proxy_user", self.proxy_user),
                ("token", self.token),
                ("kerberos", self.kerberos or None),
            )
            if value is not None
        ]
        return f"WebHDFSOptions({', '.join(shown)})"


class _SizedBody:
    """A one-shot chunk stream with a known length, so the upload carries Content-Length
    (DataNodes expect it); a source yielding more or fewer bytes aborts the upload."""

    def __init__(self, chunks: Iterable[bytes], size: int, what: str) -> None:
        self._chunks = chunks
        self._size = size
        self._what = what

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._chunks:
            sent += len(chunk)
            if sent > self._size:
                raise ObjectChanged(f"{self._what}: source longer than the planned {self._size} bytes")
            if chunk:
                yield bytes(chunk)
        if sent != self._size:
            raise ObjectChanged(f"{self._what}: source gave {sent} bytes, planned {self._size}")


class WebHDFSMover(Mover):
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
        self._auth_params: dict[str, str] = {}
        if self.options.user:
            self._auth_params["user.name"] = self.options.user
        if self.options.proxy_user:
            self._auth_params["doas"] = self.options.proxy_user
        if self.options.token is not None:
            self._auth_params["delegation"] = self.options.token.reveal()
        self._batch_listing = True
        self._skipped: list[str] = []
        self.removed_temp_files = 0
        self._session = self._make_session()

    def _make_session(self) -> Any:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        pool = max(10, self.options.max_connections)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.verify = self.options.verify
        if self.options.kerberos:
            try:
                from requests_kerberos import OPTIONAL, HTTPKerberosAuth  # type: ignore[import-not-found]
            except ImportError:
                raise MissingDependency(
                    f"{self.url}: kerberos: true needs the requests-kerberos package",
                    hint="pip install requests-kerberos (and kinit), or use a delegation token",
                ) from None
            session.auth = HTTPKerberosAuth(mutual_authentication=OPTIONAL)
        return session

    def __repr__(self) -> str:
        return f"WebHDFSMover({self.url!r}, {self.options!r})"

    # -- plumbing -----------------------------------------------------------------------
    def _path(self, key: str) -> str:
        key = check_key(key)
        if ":" in key:
            raise UnsafeKey(f"unsafe key {key!r}: HDFS refuses ':' in names")
        return self._join(key)

    def _join(self, relative: str) -> str:
        if not relative:
            return self.root
        return f"{self.root.rstrip('/')}/{relative}"

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _request(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        **kwargs: Any,
    ) -> Any:
        import requests

        kwargs.setdefault("allow_redirects", False)
        kwargs.setdefault("timeout", self.options.timeout)
        try:
            response = self._session.request(method, url, params=params, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise MoverError(
                f"{what}: TLS error ({type(exc).__name__})",
                hint="check the certificate, or the tier's verify option (a CA bundle path)",
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise MoverError(
                f"{what}: cannot reach the server ({type(exc).__name__})", retryable=True
            ) from None
        except requests.exceptions.RequestException as exc:
            raise MoverError(f"{what}: {type(exc).__name__}", retryable=True) from None
        if response.status_code not in expect:
            try:
                raise _remote_error(response, what)
            finally:
                response.close()
        return response

    def _call(
        self, method: str, path: str, op: str, what: str, *, expect: tuple[int, ...] = (200,), **params: str
    ) -> Any:
        """A namenode request: ``op`` on the HDFS path ``path``."""
        url = self._base + quote(path, safe="/")
        return self._request(
            method, url, what, params={"op": op, **self._auth_params, **params}, expect=expect
        )

    def _json(self, response: Any, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise MoverError(f"{what}: the server did not answer with JSON", retryable=True) from None

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
            listing = self._json(response, what).get("DirectoryListing") or {}
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
        statuses = (self._json(response, what).get("FileStatuses") or {}).get("FileStatus") or []
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
        status = self._json(self._call("GET", self._path(key), "GETFILESTATUS", what), what)["FileStatus"]
        if status.get("type") != "FILE":
            raise ObjectNotFound(f"{what}: not a regular file")
        return self._entry(key, status)

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        import requests

        what = self._what(key)
        url = self._base + quote(self._path(key), safe="/")
        params = {"op": "OPEN", **self._auth_params}
        # The namenode answers 307 to a datanode (HttpFS: the data itself); the status of
        # the final response is checked, so an error body is never taken for content.
        response = self._request("GET", url, what, params=params, allow_redirects=True, stream=True)
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
        url = self._base + quote(self._path(key), safe="/")
        params = {"op": "OPEN", "offset": str(start), "length": str(end - start), **self._auth_params}
        response = self._request("GET", url, what, params=params, allow_redirects=True, stream=True)
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
            self._create(temp, chunks, size, what)
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

    def _create(self, path: str, chunks: Iterable[bytes], size: int, what: str) -> None:
        # Step 1: the namenode names the datanode (no body is sent with this request).
        first = self._call("PUT", path, "CREATE", what, expect=(307,), overwrite="false")
        location = first.headers.get("Location")
        first.close()
        if not location:
            raise MoverError(f"{what}: CREATE answered 307 without a Location", retryable=True)
        body: Any = _SizedBody(chunks, size, what)
        if size == 0:
            body = b"".join(body)  # an empty iterable would be sent chunked
        # Step 2: the bytes go to the datanode (HttpFS: back to itself with data=true).
        response = self._request(
            "PUT",
            location,
            what,
            data=body,
            headers={"Content-Type": "application/octet-stream"},
            expect=(200, 201),
        )
        response.close()

    def _rename_over(self, temp: str, final: str, what: str) -> None:
        response = self._call("PUT", temp, "RENAME", what, destination=final, renameoptions="OVERWRITE")
        if _renamed(response):
            return
        # A server that ignores renameoptions answers with the boolean rename, which
        # refuses an existing destination: remove it, then rename again.
        with contextlib.suppress(ObjectNotFound):
            self._call("DELETE", final, "DELETE", what, recursive="false")
        response = self._call("PUT", temp, "RENAME", what, destination=final)
        if not _renamed(response):
            raise MoverError(
                f"{what}: the server refused to rename the written file into place", retryable=True
            )

    def delete(self, key: str) -> None:
        path = self._path(key)
        what = self._what(key)
        self.stat(key)  # a directory is not an object; an absent key is reported
        response = self._call("DELETE", path, "DELETE", what, recursive="false")
        if not _boolean_answer(response):
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
            if not _boolean_answer(response):
                return
            folder = folder.rsplit("/", 1)[0] or "/"

    def skipped_keys(self) -> list[str]:
        return list(self._skipped)

    # -- attributes: FileStatus permission / owner / group -----------------------------------
    def attributes(self, key: str) -> dict[str, str]:
        what = self._what(key)
        status = self._json(self._call("GET", self._path(key), "GETFILESTATUS", what), what)["FileStatus"]
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
            except _AccessDenied:
                if "owner" not in names:
                    return

    def close(self) -> None:
        self._session.close()


class _AccessDenied(MoverError):
    """The NameNode refused the operation (AccessControlException)."""


def _attributes_of(status: Mapping[str, Any]) -> dict[str, str]:
    found = {posix.MODE: str(status.get("permission") or "")}
    for name in (posix.OWNER, posix.GROUP):
        if status.get(name):
            found[name] = str(status[name])
    return {k: v for k, v in found.items() if v}


def _join_path(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def _boolean_answer(response: Any) -> bool:
    try:
        return bool(response.json().get("boolean"))
    except ValueError:
        return False
    finally:
        response.close()


def _renamed(response: Any) -> bool:
    """RENAME with options answers an empty 200; the boolean form ``{"boolean": ...}``."""
    try:
        text = response.text.strip()
    finally:
        response.close()
    if not text:
        return True
    try:
        return bool(json.loads(text).get("boolean"))
    except (ValueError, AttributeError):
        return False


def _remote_error(response: Any, what: str) -> MoverError:
    """Classify a failed WebHDFS response from its RemoteException (or its status)."""
    status = response.status_code
    exception, message = "", ""
    try:
        remote = response.json().get("RemoteException") or {}
        exception, message = str(remote.get("exception", "")), str(remote.get("message", ""))
    except (ValueError, AttributeError):
        pass
    detail = f"{exception}: {message}" if exception else f"HTTP {status}"
    if exception == "FileNotFoundException" or (status == 404 and not exception):
        return ObjectNotFound(f"{what}: not found")
    if exception in _RETRYABLE_EXCEPTIONS:
        return MoverError(f"{what}: {detail}", retryable=True)
    if status == 401 or exception == "SecurityException":
        return MoverError(
            f"{what}: authentication failed ({detail})",
            hint="check the tier's user / token options, or kinit for kerberos: true",
        )
    if exception == "AccessControlException":
        return _AccessDenied(f"{what}: permission denied ({message})", hint="check the HDFS owner and mode")
    error = MoverError(f"{what}: {detail}", retryable=status in _RETRYABLE_STATUS)
    if exception == "UnsupportedOperationException" or "No enum constant" in message:
        error.unsupported_op = True  # type: ignore[attr-defined]
    return error
