"""A protocol-faithful WebHDFS REST server for tests (no Hadoop required).

The server speaks the Apache Hadoop WebHDFS REST API (``/webhdfs/v1/<path>?op=...``)
over real HTTP on loopback and stores file bytes in an ordinary local directory, so a
test can inspect or corrupt data directly on disk.  HDFS-only metadata (owner, group,
permission, replication, block size) lives in memory; files that appear on disk without
going through the server get HDFS defaults (owner = server user, group ``supergroup``,
``644`` / ``755``).

Usage::

    with WebHDFSServer(tmp_path) as server:
        fs = fsspec.filesystem("webhdfs", host=server.host, port=server.port, user="hdfs")
        fs.pipe("/a/b.txt", b"hello")

Like a real cluster, data operations take two steps: the "namenode" endpoint answers
``OPEN``, ``CREATE``, ``APPEND`` and ``GETFILECHECKSUM`` with ``307 Temporary Redirect`` to
a "datanode" URL served by the same process under ``/datanode/webhdfs/v1/...``.

Known, deliberate deviations from a real NameNode/DataNode pair:

* Only the operations listed in ``NAMENODE_OPS`` are implemented; other Hadoop op names
  answer ``400 UnsupportedOperationException`` (unknown names: ``400
  IllegalArgumentException``, as in Hadoop).
* ``fileId`` is the local inode number; ``accessTime`` / ``modificationTime`` are the local
  file's atime/mtime (directories report ``accessTime`` 0, as HDFS does).
* Security is off: ``user.name`` (default ``dr.who``) is trusted, ``doas`` is honoured
  without proxy-user checks, and a ``delegation`` token is accepted opaquely and acts as
  the server user.  ``GETDELEGATIONTOKEN`` returns ``{"Token": null}``.
* Permission checks follow HDFS rules in a simplified form: the server user is the only
  superuser, each user's only group is the group named after the user, and ACLs,
  sticky bits and subtree checks on recursive delete are not modelled.
* The ``201 Created`` ``Location`` follows the documentation
  (``webhdfs://host:port/path``); real DataNodes send ``hdfs://<namenode>/path``.
* ``GETFILECHECKSUM`` implements the MD5-of-MD5-of-CRC32C construction (512 bytes per CRC)
  but is not guaranteed to be bit-identical with Hadoop.
* ``redirect=False`` emulates an HttpFS gateway: ``OPEN``/``GETFILECHECKSUM`` are answered
  inline, and ``CREATE``/``APPEND`` redirect to the same endpoint with ``data=true``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import socket
import stat
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, quote, unquote, urlencode

__all__ = [
    "DATANODE_PREFIX",
    "NAMENODE_OPS",
    "NAMENODE_PREFIX",
    "HdfsError",
    "WebHDFSServer",
    "file_checksum",
]

NAMENODE_PREFIX = "/webhdfs/v1"
DATANODE_PREFIX = "/datanode/webhdfs/v1"
DEFAULT_BLOCK_SIZE = 128 * 1024 * 1024
MIN_BLOCK_SIZE = 1024 * 1024  # dfs.namenode.fs-limits.min-block-size
DEFAULT_REPLICATION = 3
BYTES_PER_CRC = 512
COPY_CHUNK = 1024 * 1024  # a multiple of BYTES_PER_CRC
ANONYMOUS_USER = "dr.who"  # hadoop.http.staticuser.user
SUPERGROUP = "supergroup"
CLIENT_MACHINE = "127.0.0.1"
READ, WRITE, EXECUTE = 4, 2, 1
_FS_ACTIONS = ("NONE", "EXECUTE", "WRITE", "WRITE_EXECUTE", "READ", "READ_EXECUTE", "READ_WRITE", "ALL")
_USER_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*[$]?$")  # dfs.webhdfs.user.provider

#: Operations implemented by the namenode endpoint, per HTTP method.
NAMENODE_OPS: dict[str, frozenset[str]] = {
    "GET": frozenset(
        {
            "OPEN",
            "GETFILESTATUS",
            "LISTSTATUS",
            "LISTSTATUS_BATCH",
            "GETCONTENTSUMMARY",
            "GETFILECHECKSUM",
            "GETHOMEDIRECTORY",
            "GETDELEGATIONTOKEN",
        }
    ),
    "PUT": frozenset(
        {"CREATE", "MKDIRS", "RENAME", "SETREPLICATION", "SETOWNER", "SETPERMISSION", "SETTIMES"}
    ),
    "POST": frozenset({"APPEND"}),
    "DELETE": frozenset({"DELETE"}),
}
# Real Hadoop op names this server does not implement (answered as "not supported").
_UNIMPLEMENTED_OPS: dict[str, frozenset[str]] = {
    "GET": frozenset(
        {
            "GETQUOTAUSAGE",
            "GETTRASHROOT",
            "GETXATTRS",
            "LISTXATTRS",
            "CHECKACCESS",
            "GETALLSTORAGEPOLICY",
            "GETSTORAGEPOLICY",
            "GETSNAPSHOTDIFF",
            "GETSNAPSHOTTABLEDIRECTORYLIST",
            "GETACLSTATUS",
            "GETFILEBLOCKLOCATIONS",
            "GET_BLOCK_LOCATIONS",
            "GETECPOLICY",
            "GETSERVERDEFAULTS",
            "GETLINKTARGET",
            "GETFILELINKSTATUS",
            "GETSTATUS",
            "GETSNAPSHOTLIST",
        }
    ),
    "PUT": frozenset(
        {
            "CREATESYMLINK",
            "RENEWDELEGATIONTOKEN",
            "CANCELDELEGATIONTOKEN",
            "ALLOWSNAPSHOT",
            "DISALLOWSNAPSHOT",
            "CREATESNAPSHOT",
            "RENAMESNAPSHOT",
            "SETXATTR",
            "REMOVEXATTR",
            "SETSTORAGEPOLICY",
            "MODIFYACLENTRIES",
            "REMOVEACLENTRIES",
            "REMOVEDEFAULTACL",
            "REMOVEACL",
            "SETACL",
            "SETQUOTA",
            "SETQUOTABYSTORAGETYPE",
            "SATISFYSTORAGEPOLICY",
            "SETECPOLICY",
        }
    ),
    "POST": frozenset({"CONCAT", "TRUNCATE", "UNSETSTORAGEPOLICY", "UNSETECPOLICY"}),
    "DELETE": frozenset({"DELETESNAPSHOT"}),
}
_OP_ENUMS = {"GET": "GetOpParam", "PUT": "PutOpParam", "POST": "PostOpParam", "DELETE": "DeleteOpParam"}
_DATANODE_OPS = {("PUT", "CREATE"), ("POST", "APPEND"), ("GET", "OPEN"), ("GET", "GETFILECHECKSUM")}
_DATA_OPS = frozenset(op for _, op in _DATANODE_OPS)


# --------------------------------------------------------------------------- errors

_EXCEPTIONS: dict[str, tuple[str, int]] = {
    "IllegalArgumentException": ("java.lang.IllegalArgumentException", 400),
    "InvalidPathException": ("org.apache.hadoop.fs.InvalidPathException", 400),
    "UnsupportedOperationException": ("java.lang.UnsupportedOperationException", 400),
    "SecurityException": ("java.lang.SecurityException", 401),
    "AccessControlException": ("org.apache.hadoop.security.AccessControlException", 403),
    "FileAlreadyExistsException": ("org.apache.hadoop.fs.FileAlreadyExistsException", 403),
    "ParentNotDirectoryException": ("org.apache.hadoop.fs.ParentNotDirectoryException", 403),
    "PathIsNotEmptyDirectoryException": ("org.apache.hadoop.fs.PathIsNotEmptyDirectoryException", 403),
    "IOException": ("java.io.IOException", 403),
    "FileNotFoundException": ("java.io.FileNotFoundException", 404),
    "RuntimeException": ("java.lang.RuntimeException", 500),
}
_EXCEPTION_FOR_STATUS = {
    400: "IllegalArgumentException",
    401: "SecurityException",
    403: "IOException",
    404: "FileNotFoundException",
}


class HdfsError(Exception):
    """A Java exception as reported by WebHDFS: ``RemoteException`` JSON plus a status.

    ``exception`` must be a key of the Hadoop exception table above; ``status`` defaults
    to the HTTP code Hadoop's ``ExceptionHandler`` maps that exception to.
    """

    def __init__(self, exception: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.exception = exception
        self.java_class, default_status = _EXCEPTIONS[exception]
        self.message = message
        self.status = status if status is not None else default_status

    def to_json(self) -> dict[str, Any]:
        """Return the ``{"RemoteException": {...}}`` body."""
        return {
            "RemoteException": {
                "exception": self.exception,
                "javaClassName": self.java_class,
                "message": self.message,
            }
        }


def _bad_param(name: str, detail: str) -> HdfsError:
    return HdfsError("IllegalArgumentException", f'Invalid value for webhdfs parameter "{name}": {detail}')


def _not_found(message: str) -> HdfsError:
    return HdfsError("FileNotFoundException", message)


# --------------------------------------------------------------------------- paths


def _parent(path: str) -> str:
    """Parent of an absolute, normalised HDFS path (``/`` is its own parent)."""
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _basename(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _join(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


def _ancestors(path: str) -> list[str]:
    """Proper ancestors of ``path`` from ``/`` downwards (empty for ``/``)."""
    if path == "/":
        return []
    parts = path.split("/")[1:-1]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _normalize(path: str) -> str:
    """Strip one trailing slash and validate like ``DFSUtil.isValidName``.

    Raises ``InvalidPathException`` (400) for relative paths, ``.``/``..`` components,
    ``:`` in a name or empty components (``//``), all of which HDFS rejects.
    """
    if path in ("", "/"):
        return "/"
    if path.endswith("/"):
        path = path[:-1]
    parts = path.split("/")
    if parts[0] != "" or any(p in ("", ".", "..") or ":" in p for p in parts[1:]):
        raise HdfsError("InvalidPathException", f"Invalid path name {path}")
    return path


def _name_key(name: str) -> bytes:
    """Sort key for directory entries: HDFS orders children by UTF-8 bytes."""
    return name.encode("utf-8", "surrogateescape")


def _perm_string(is_dir: bool, perm: int) -> str:
    """``drwxr-xr-x``-style rendering used in AccessControlException messages."""
    out = ["d" if is_dir else "-"]
    for shift in (6, 3, 0):
        bits = (perm >> shift) & 7
        out += ["r" if bits & READ else "-", "w" if bits & WRITE else "-", "x" if bits & EXECUTE else "-"]
    if perm & 0o1000:
        out[-1] = "t" if perm & EXECUTE else "T"
    return "".join(out)


# --------------------------------------------------------------------------- checksum


def _make_crc32c() -> Callable[[bytes], int]:
    """CRC32C (Castagnoli); uses google_crc32c when importable, else pure Python.

    Both implementations return identical values, so checksums are environment-stable.
    """
    try:
        import google_crc32c  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        table = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
            table.append(crc)

        def crc32c_py(data: bytes) -> int:
            crc = 0xFFFFFFFF
            for b in data:
                crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
            return crc ^ 0xFFFFFFFF

        return crc32c_py
    return lambda data: int(google_crc32c.value(data))


_crc32c = _make_crc32c()


def _block_md5(f: BinaryIO, block_size: int) -> tuple[bytes, int]:
    """MD5 over the big-endian CRC32C of each 512-byte chunk of the next block.

    Returns ``(digest, bytes_read)``; ``bytes_read`` is 0 at end of file.
    """
    md5 = hashlib.md5()
    done = 0
    while done < block_size:
        chunk = f.read(min(COPY_CHUNK, block_size - done))
        if not chunk:
            break
        done += len(chunk)
        crcs = (_crc32c(chunk[i : i + BYTES_PER_CRC]) for i in range(0, len(chunk), BYTES_PER_CRC))
        md5.update(b"".join(struct.pack(">I", c) for c in crcs))
    return md5.digest(), done


def file_checksum(local: Path, block_size: int) -> dict[str, Any]:
    """``FileChecksum`` JSON for a local file, in Hadoop's MD5MD5CRC32 layout.

    ``bytes`` is the hex of ``int bytesPerCRC | long crcPerBlock | md5[16]`` (28 bytes).
    ``crcPerBlock`` is 0 for single-block files, as in HDFS.  Empty files get HDFS's
    fixed "MD5-of-0MD5-of-0CRC32" value.  Deterministic and purely content-derived.
    """
    file_md5 = hashlib.md5()
    blocks = 0
    with local.open("rb") as f:
        while True:
            digest, size = _block_md5(f, block_size)
            if size == 0:
                break
            file_md5.update(digest)
            blocks += 1
    if blocks == 0:
        raw = struct.pack(">iq", 0, 0) + hashlib.md5(bytes(32)).digest()
        return {"algorithm": "MD5-of-0MD5-of-0CRC32", "bytes": raw.hex(), "length": len(raw)}
    crc_per_block = block_size // BYTES_PER_CRC if blocks > 1 else 0
    raw = struct.pack(">iq", BYTES_PER_CRC, crc_per_block) + file_md5.digest()
    return {
        "algorithm": f"MD5-of-{crc_per_block}MD5-of-{BYTES_PER_CRC}CRC32C",
        "bytes": raw.hex(),
        "length": len(raw),
    }


# --------------------------------------------------------------------------- namespace


@dataclass
class _Meta:
    """HDFS attributes that a local filesystem cannot hold faithfully."""

    owner: str
    group: str
    permission: int
    replication: int = DEFAULT_REPLICATION
    block_size: int = DEFAULT_BLOCK_SIZE
    storage_policy: int = 0


class _Namespace:
    """Maps HDFS paths onto ``root`` and keeps HDFS metadata and permission rules.

    Paths handed in must already be normalised by ``_normalize``.  Callers hold
    ``self.lock`` around multi-step mutations.
    """

    def __init__(self, root: Path, superuser: str, check_permissions: bool) -> None:
        self.root = root
        self.superuser = superuser
        self.check_permissions = check_permissions
        self.lock = threading.RLock()
        self._meta: dict[str, _Meta] = {}

    # -- local mapping --------------------------------------------------------------
    def local(self, path: str) -> Path:
        return self.root if path == "/" else self.root.joinpath(*path[1:].split("/"))

    def stat(self, path: str) -> os.stat_result | None:
        """``os.stat`` of the backing file, or None when the HDFS path does not exist."""
        try:
            return self.local(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_dir(self, path: str) -> bool:
        st = self.stat(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def children(self, path: str) -> list[str]:
        """Names in a directory, in HDFS order (UTF-8 byte order)."""
        return sorted(os.listdir(self.local(path)), key=_name_key)

    # -- metadata ---------------------------------------------------------------------
    def meta(self, path: str, is_dir: bool) -> _Meta:
        found = self._meta.get(path)
        if found is not None:
            return found
        if is_dir:
            return _Meta(self.superuser, SUPERGROUP, 0o755, replication=0, block_size=0)
        return _Meta(self.superuser, SUPERGROUP, 0o644)

    def set_meta(self, path: str, meta: _Meta) -> None:
        self._meta[path] = meta

    def drop_meta(self, path: str) -> None:
        """Forget metadata of ``path`` and everything below it."""
        for key in [k for k in self._meta if k == path or k.startswith(path + "/")]:
            del self._meta[key]

    def move_meta(self, src: str, dst: str) -> None:
        """Re-key metadata of ``src`` (and its subtree) to ``dst``."""
        self.drop_meta(dst)
        for key in [k for k in self._meta if k == src or k.startswith(src + "/")]:
            self._meta[dst + key[len(src) :]] = self._meta.pop(key)

    def file_status(self, path: str, st: os.stat_result, suffix: str) -> dict[str, Any]:
        """FileStatus JSON object, with exactly Hadoop's field names."""
        is_dir = stat.S_ISDIR(st.st_mode)
        meta = self.meta(path, is_dir)
        return {
            "accessTime": 0 if is_dir else st.st_atime_ns // 1_000_000,
            "blockSize": 0 if is_dir else meta.block_size,
            "childrenNum": len(os.listdir(self.local(path))) if is_dir else 0,
            "fileId": st.st_ino,
            "group": meta.group,
            "length": 0 if is_dir else st.st_size,
            "modificationTime": st.st_mtime_ns // 1_000_000,
            "owner": meta.owner,
            "pathSuffix": suffix,
            "permission": format(meta.permission, "o"),
            "replication": 0 if is_dir else meta.replication,
            "storagePolicy": meta.storage_policy,
            "type": "DIRECTORY" if is_dir else "FILE",
        }

    # -- permissions --------------------------------------------------------------------
    def check_access(self, user: str, path: str, action: int) -> None:
        """Raise AccessControlException unless ``user`` may perform ``action`` on ``path``.

        The superuser (server user) bypasses checks; otherwise POSIX owner/group/other
        bits apply, with the user's only group being the group named after the user.
        """
        if not self.check_permissions or user == self.superuser:
            return
        is_dir = self.is_dir(path)
        meta = self.meta(path, is_dir)
        if user == meta.owner:
            bits = meta.permission >> 6
        elif meta.group == user:
            bits = meta.permission >> 3
        else:
            bits = meta.permission
        if bits & action != action:
            raise HdfsError(
                "AccessControlException",
                f"Permission denied: user={user}, access={_FS_ACTIONS[action]}, "
                f'inode="{path}":{meta.owner}:{meta.group}:'
                f"{_perm_string(is_dir, meta.permission)}",
            )

    def check_traverse(self, user: str, path: str) -> None:
        """Require EXECUTE on every existing ancestor directory of ``path``."""
        for ancestor in _ancestors(path):
            if not self.is_dir(ancestor):
                return
            self.check_access(user, ancestor, EXECUTE)

    def check_owner(self, user: str, path: str) -> None:
        """Only the owner or the superuser may change permission/owner of an inode."""
        if not self.check_permissions or user == self.superuser:
            return
        if self.meta(path, self.is_dir(path)).owner != user:
            raise HdfsError(
                "AccessControlException", f"Permission denied. user={user} is not the owner of inode={path}"
            )

    def nearest_existing(self, path: str) -> str:
        """Deepest existing ancestor-or-self of ``path``."""
        while path != "/" and self.stat(path) is None:
            path = _parent(path)
        return path

    # -- mutations ----------------------------------------------------------------------
    def ensure_parent_dirs(self, path: str) -> None:
        """Raise ParentNotDirectoryException if some ancestor of ``path`` is a file."""
        for ancestor in _ancestors(path):
            st = self.stat(ancestor)
            if st is None:
                return
            if not stat.S_ISDIR(st.st_mode):
                raise HdfsError("ParentNotDirectoryException", f"Parent path is not a directory: {ancestor}")

    def make_dirs(self, user: str, path: str, permission: int, parent_permission: int) -> None:
        """Create ``path`` and missing ancestors; new inodes inherit the parent's group."""
        for current in [*_ancestors(path), path]:
            if self.stat(current) is not None:
                continue
            self.local(current).mkdir()
            group = self.meta(_parent(current), True).group
            perm = permission if current == path else parent_permission
            self.set_meta(current, _Meta(user, group, perm, replication=0, block_size=0))

    def remove(self, path: str) -> None:
        local = self.local(path)
        if local.is_dir() and not local.is_symlink():
            shutil.rmtree(local)
        else:
            local.unlink()
        self.drop_meta(path)


# --------------------------------------------------------------------------- HTTP plumbing


class _Params:
    """WebHDFS query parameters: names are case-insensitive (Hadoop's ParamFilter)."""

    def __init__(self, query: str) -> None:
        self.pairs = parse_qsl(query, keep_blank_values=True)
        self._values: dict[str, str] = {}
        for key, value in self.pairs:
            self._values.setdefault(key.lower(), value)

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() not in ("true", "false"):
            raise _bad_param(name, f'Failed to parse "{raw}" to Boolean.')
        return raw.lower() == "true"

    def integer(self, name: str, default: int | None, minimum: int | None = None) -> int | None:
        """A radix-10 long parameter; ``default`` when absent or ``null``."""
        raw = self.get(name)
        if raw is None or raw in ("", "null"):
            return default
        if not re.fullmatch(r"[+-]?[0-9]+", raw):
            raise _bad_param(name, f'Failed to parse "{raw}" as a radix-10 long integer.')
        value = int(raw, 10)
        if minimum is not None and value < minimum:
            raise _bad_param(name, f"Invalid parameter range: {name} = {value} < {minimum}")
        return value

    def permission(self) -> int | None:
        """The octal ``permission`` parameter (0 - 1777), or None when absent."""
        raw = self.get("permission")
        if raw is None or raw in ("", "null"):
            return None
        if not re.fullmatch(r"[0-7]{1,4}", raw) or int(raw, 8) > 0o1777:
            raise _bad_param(
                "permission", f'Failed to parse "{raw}" as a radix-8 short integer in the range [0, 1777].'
            )
        return int(raw, 8)


class _Body:
    """Request body reader honouring Content-Length or chunked Transfer-Encoding."""

    def __init__(self, rfile: io.BufferedIOBase, headers: Any) -> None:
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._chunk_left = 0
        length = headers.get("Content-Length")
        try:
            self._remaining = 0 if self._chunked or not length else int(length)
        except ValueError:
            raise HdfsError("IllegalArgumentException", f"Invalid Content-Length: {length}") from None
        self.done = not self._chunked and self._remaining == 0

    def read(self, size: int = COPY_CHUNK) -> bytes:
        """Up to ``size`` bytes; ``b""`` once the body is exhausted."""
        if self.done:
            return b""
        return self._read_chunked(size) if self._chunked else self._read_plain(size)

    def _read_plain(self, size: int) -> bytes:
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._remaining -= len(data)
        self.done = self._remaining == 0
        return data

    def _read_chunked(self, size: int) -> bytes:
        if self._chunk_left == 0:
            line = self._rfile.readline(65537)
            try:
                self._chunk_left = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ConnectionError(f"bad chunk size line {line!r}") from None
            if self._chunk_left == 0:
                while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self.done = True
                return b""
        data = self._rfile.read(min(size, self._chunk_left))
        if not data:
            raise ConnectionError("client closed the connection mid-chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            self._rfile.readline(65537)  # CRLF after the chunk
        return data

    def copy_to(self, out: BinaryIO, limit: int | None = None) -> int:
        """Stream the body (or its first ``limit`` bytes) into ``out``; returns bytes copied."""
        copied = 0
        while limit is None or copied < limit:
            want = COPY_CHUNK if limit is None else min(COPY_CHUNK, limit - copied)
            data = self.read(want)
            if not data:
                break
            out.write(data)
            copied += len(data)
        return copied

    def drain(self) -> None:
        """Discard whatever is left of the body so the connection stays in sync."""
        while self.read():
            pass


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 handler; per-request state lives in the attributes set by ``_serve``."""

    protocol_version = "HTTP/1.1"
    server_version = "WebHDFSTestServer/1.0"
    # Headers and body go out in separate writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a request on keep-alive connections). Jetty and Netty
    # set TCP_NODELAY too.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def _serve(self, method: str) -> None:
        self.started = False
        self.close_after = False
        self.body: _Body | None = None
        try:
            self.body = _Body(self.rfile, self.headers)
            self.server.app.handle(self, method)
        except HdfsError as err:
            self.send_error_json(err)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:  # a server bug: report it like Hadoop's 500
            self.send_error_json(HdfsError("RuntimeException", f"{type(exc).__name__}: {exc}"))

    # -- response helpers -----------------------------------------------------------
    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.started = True
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_after:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode("utf-8")
        self._start(status, {"Content-Type": "application/json", "Content-Length": str(len(data))})
        self.wfile.write(data)

    def send_empty(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._start(status, {"Content-Length": "0", **(headers or {})})

    def send_redirect(self, location: str) -> None:
        self.send_empty(307, {"Location": location, "Content-Type": "application/octet-stream"})

    def send_file_range(self, local: Path, offset: int, count: int, cut: int | None) -> None:
        """200 with ``count`` bytes of ``local`` from ``offset``; stop after ``cut`` bytes.

        A ``cut`` shorter than ``count`` simulates a datanode dying mid-stream: the
        advertised Content-Length is not honoured and the connection is dropped.
        """
        self._start(200, {"Content-Type": "application/octet-stream", "Content-Length": str(count)})
        to_send = count if cut is None else min(cut, count)
        with local.open("rb") as f:
            if to_send:
                self.connection.sendfile(f, offset, to_send)
        if to_send < count:
            self.close_connection = True

    def send_error_json(self, err: HdfsError) -> None:
        if self.started:  # too late for a status line: drop the connection
            self.close_connection = True
            return
        if self.body is not None and not self.body.done:
            try:
                self.body.drain()
            except (ConnectionError, TimeoutError, OSError):
                self.close_connection = True
                return
        self.send_json(err.to_json(), err.status)


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can forcibly close keep-alive connections on stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: _WebHdfsApp) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# --------------------------------------------------------------------------- application


@dataclass(frozen=True)
class _Fault:
    status: int
    after_bytes: int | None


class _WebHdfsApp:
    """WebHDFS semantics: routing, parameter validation and every operation."""

    def __init__(self, ns: _Namespace, batch_size: int, redirect: bool) -> None:
        self.ns = ns
        self.batch_size = batch_size
        self.redirect = redirect
        self.host = "127.0.0.1"
        self.port = 0
        self.lock = threading.Lock()
        self.faults: dict[str, deque[_Fault]] = {}
        self.log: list[tuple[str, str, str]] = []
        self.datanode_log: list[tuple[str, str, str]] = []

    # -- faults -----------------------------------------------------------------------
    def add_faults(self, op: str, count: int, fault: _Fault) -> None:
        with self.lock:
            self.faults.setdefault(op.upper(), deque()).extend([fault] * count)

    def take_fault(self, op: str) -> _Fault | None:
        with self.lock:
            queue = self.faults.get(op)
            return queue.popleft() if queue else None

    @staticmethod
    def injected(op: str, fault: _Fault) -> HdfsError:
        exception = _EXCEPTION_FOR_STATUS.get(fault.status, "RuntimeException")
        return HdfsError(exception, f"Injected fault: {op} failed (test hook)", fault.status)

    # -- routing ----------------------------------------------------------------------
    def handle(self, h: _Handler, method: str) -> None:
        """Route one request to the namenode or datanode endpoint."""
        raw_path, _, query = h.path.partition("?")
        route = self._route(raw_path)
        if route is None:
            h.send_json({"message": f"No WebHDFS resource at {raw_path}"}, 404)
            return
        node, rest = route
        params = _Params(query.split("#", 1)[0])
        op = (params.get("op") or "").upper()
        decoded = unquote(rest)
        with self.lock:
            (self.log if node == "namenode" else self.datanode_log).append((method, op, decoded or "/"))
        path = _normalize(decoded)
        user = self._user(params)
        if node == "namenode":
            self._namenode(h, method, op, params, path, user)
        else:
            h.close_after = True  # DataNodes close the connection after each exchange
            self._datanode(h, method, op, params, path, user)

    @staticmethod
    def _route(raw_path: str) -> tuple[str, str] | None:
        """``(node, percent-encoded path suffix)`` for a request path, None if foreign."""
        for prefix, node in ((NAMENODE_PREFIX, "namenode"), (DATANODE_PREFIX, "datanode")):
            if raw_path == prefix or raw_path.startswith(prefix + "/"):
                return node, raw_path[len(prefix) :]
        return None

    @staticmethod
    def _user(params: _Params) -> str:
        """Effective user: ``doas`` > ``user.name`` > ``dr.who`` (security off)."""
        for name in ("doas", "user.name"):
            value = params.get(name)
            if value:
                if not _USER_PATTERN.match(value):
                    raise _bad_param(
                        name,
                        f'Invalid value: "{value}" does not belong to the domain {_USER_PATTERN.pattern}',
                    )
                return value
        return ANONYMOUS_USER

    def _namenode(self, h: _Handler, method: str, op: str, params: _Params, path: str, user: str) -> None:
        if op not in NAMENODE_OPS[method]:
            if op in _UNIMPLEMENTED_OPS[method]:
                raise HdfsError("UnsupportedOperationException", f"op={op} is not supported")
            raise _bad_param(
                "op",
                "No enum constant org.apache.hadoop.hdfs.web.resources."
                f"{_OP_ENUMS[method]}.Op.{op or 'null'}",
            )
        if op not in _DATA_OPS:
            fault = self.take_fault(op)
            if fault is not None:
                raise self.injected(op, fault)
        getattr(self, f"_nn_{op.lower()}")(h, params, path, user)

    def _datanode(self, h: _Handler, method: str, op: str, params: _Params, path: str, user: str) -> None:
        if (method, op) not in _DATANODE_OPS:
            raise HdfsError("IllegalArgumentException", f"Invalid operation {op}")
        if not params.get("namenoderpcaddress"):
            raise HdfsError("IllegalArgumentException", "Namenode RPC address is not specified.")
        self._run_data_op(h, op, params, path, user)

    def _run_data_op(self, h: _Handler, op: str, params: _Params, path: str, user: str) -> None:
        fault = self.take_fault(op)
        if fault is not None and fault.after_bytes is None:
            raise self.injected(op, fault)
        getattr(self, f"_dn_{op.lower()}")(h, params, path, user, fault)

    def _hand_off(
        self, h: _Handler, op: str, params: _Params, path: str, user: str, extra: list[tuple[str, str]]
    ) -> None:
        """Second step of a data op: 307 to the datanode, JSON if noredirect, or inline."""
        if not self.redirect:
            if op in ("CREATE", "APPEND") and not params.boolean("data", False):
                h.send_redirect(self._self_url(path, params))
            else:
                self._run_data_op(h, op, params, path, user)
            return
        location = self._datanode_url(op, path, params, extra)
        if params.boolean("noredirect", False):
            h.send_json({"Location": location})
        else:
            h.send_redirect(location)

    def _datanode_url(self, op: str, path: str, params: _Params, extra: list[tuple[str, str]]) -> str:
        auth = [(k, v) for k in ("delegation", "doas", "user.name") if (v := params.get(k))]
        query = [
            ("op", op),
            *sorted(auth),
            ("namenoderpcaddress", f"{self.host}:{self.port}"),
            *sorted(extra),
        ]
        return f"http://{self.host}:{self.port}{DATANODE_PREFIX}{quote(path)}?{urlencode(query)}"

    def _self_url(self, path: str, params: _Params) -> str:
        query = [*params.pairs, ("data", "true")]
        return f"http://{self.host}:{self.port}{NAMENODE_PREFIX}{quote(path)}?{urlencode(query)}"

    def _require(self, path: str, message: str) -> os.stat_result:
        st = self.ns.stat(path)
        if st is None:
            raise _not_found(message)
        return st

    # -- namenode: read-only operations --------------------------------------------------
    def _nn_getfilestatus(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self.ns.check_traverse(user, path)
        st = self._require(path, f"File does not exist: {path}")
        h.send_json({"FileStatus": self.ns.file_status(path, st, "")})

    def _listing(self, path: str, user: str) -> tuple[os.stat_result, list[str]]:
        """Directory stat and child names (empty for a file); checks READ_EXECUTE."""
        self.ns.check_traverse(user, path)
        st = self._require(path, f"File {path} does not exist.")
        if not stat.S_ISDIR(st.st_mode):
            return st, []
        self.ns.check_access(user, path, READ | EXECUTE)
        return st, self.ns.children(path)

    def _statuses(self, path: str, st: os.stat_result, names: list[str]) -> list[dict[str, Any]]:
        if not stat.S_ISDIR(st.st_mode):
            return [self.ns.file_status(path, st, "")]
        out = []
        for name in names:
            child = _join(path, name)
            child_st = self.ns.stat(child)
            if child_st is not None:  # tolerate concurrent deletes
                out.append(self.ns.file_status(child, child_st, name))
        return out

    def _nn_liststatus(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        st, names = self._listing(path, user)
        h.send_json({"FileStatuses": {"FileStatus": self._statuses(path, st, names)}})

    def _nn_liststatus_batch(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        st, names = self._listing(path, user)
        start_after = params.get("startafter") or ""
        if start_after:
            names = [n for n in names if _name_key(n) > _name_key(start_after)]
        page = names[: self.batch_size]
        remaining = len(names) - len(page)
        h.send_json(
            {
                "DirectoryListing": {
                    "partialListing": {"FileStatuses": {"FileStatus": self._statuses(path, st, page)}},
                    "remainingEntries": remaining if stat.S_ISDIR(st.st_mode) else 0,
                }
            }
        )

    def _nn_getcontentsummary(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self.ns.check_traverse(user, path)
        self._require(path, f"File does not exist: {path}")
        counts = {"length": 0, "fileCount": 0, "directoryCount": 0, "spaceConsumed": 0}
        for sub, sub_st in self._walk(path):
            if stat.S_ISDIR(sub_st.st_mode):
                counts["directoryCount"] += 1
            else:
                counts["fileCount"] += 1
                counts["length"] += sub_st.st_size
                counts["spaceConsumed"] += sub_st.st_size * self.ns.meta(sub, False).replication
        h.send_json(
            {
                "ContentSummary": {
                    **counts,
                    "ecPolicy": "",
                    "quota": -1,
                    "spaceQuota": -1,
                    "typeQuota": {},
                    "snapshotLength": 0,
                    "snapshotFileCount": 0,
                    "snapshotDirectoryCount": 0,
                    "snapshotSpaceConsumed": 0,
                }
            }
        )

    def _walk(self, path: str) -> Iterator[tuple[str, os.stat_result]]:
        st = self.ns.stat(path)
        if st is None:
            return
        yield path, st
        if stat.S_ISDIR(st.st_mode):
            for name in self.ns.children(path):
                yield from self._walk(_join(path, name))

    def _nn_gethomedirectory(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        h.send_json({"Path": f"/user/{user}"})

    def _nn_getdelegationtoken(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        h.send_json({"Token": None})  # security is off: no token, exactly like Hadoop

    # -- namenode: data operations (first step) ------------------------------------------
    def _nn_open(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self.ns.check_traverse(user, path)
        st = self._require(path, f"File {path} not found.")
        size = 0 if stat.S_ISDIR(st.st_mode) else st.st_size
        offset = params.integer("offset", 0, minimum=0) or 0
        length = params.integer("length", None, minimum=0)
        if offset >= size > 0:
            raise HdfsError("IOException", f"Offset={offset} out of the range [0, {size}); OPEN, path={path}")
        extra = [("offset", str(offset))]
        if length is not None:
            extra.append(("length", str(length)))
        self._hand_off(h, "OPEN", params, path, user, extra + self._passthrough(params, "buffersize"))

    @staticmethod
    def _passthrough(params: _Params, *names: str) -> list[tuple[str, str]]:
        return [(n, v) for n in names if (v := params.get(n)) not in (None, "")]

    def _nn_getfilechecksum(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self.ns.check_traverse(user, path)
        self._require(path, f"File {path} not found.")
        self._hand_off(h, "GETFILECHECKSUM", params, path, user, [])

    def _nn_append(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self.ns.check_traverse(user, path)
        self._require(path, f"File {path} not found.")
        params.integer("buffersize", None, minimum=1)
        self._hand_off(h, "APPEND", params, path, user, self._passthrough(params, "buffersize"))

    def _nn_create(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        self._create_options(params)  # validate early, as Hadoop's Jersey params do
        extra = [("overwrite", str(params.boolean("overwrite", False)).lower())]
        extra += self._passthrough(
            params, "permission", "replication", "blocksize", "buffersize", "createparent"
        )
        self._hand_off(h, "CREATE", params, path, user, extra)

    @staticmethod
    def _create_options(params: _Params) -> tuple[bool, int, int, int, bool]:
        """Validated ``(overwrite, permission, replication, blocksize, createparent)``."""
        overwrite = params.boolean("overwrite", False)
        permission = params.permission()
        replication = params.integer("replication", DEFAULT_REPLICATION, minimum=1)
        block_size = params.integer("blocksize", DEFAULT_BLOCK_SIZE, minimum=1)
        params.integer("buffersize", None, minimum=1)
        assert replication is not None and block_size is not None
        if block_size < MIN_BLOCK_SIZE:
            raise HdfsError(
                "IOException",
                f"Specified block size is less than configured "
                f"minimum value (dfs.namenode.fs-limits.min-block-"
                f"size): {block_size} < {MIN_BLOCK_SIZE}",
            )
        if block_size % BYTES_PER_CRC:
            raise HdfsError(
                "IllegalArgumentException",
                f"Invalid values: dfs.bytes-per-checksum (={BYTES_PER_CRC}) must "
                f"divide block size (={block_size}).",
            )
        perm = 0o644 if permission is None else permission
        return overwrite, perm, replication, block_size, params.boolean("createparent", True)

    # -- namenode: namespace mutations ---------------------------------------------------
    def _nn_mkdirs(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        permission = params.permission()
        perm = 0o755 if permission is None else permission
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self.ns.stat(path)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                raise HdfsError("FileAlreadyExistsException", f"Path is not a directory: {path}")
            if st is None:
                self.ns.ensure_parent_dirs(path)
                self.ns.check_access(user, self.ns.nearest_existing(path), WRITE)
                self.ns.make_dirs(user, path, perm, perm | 0o300)
        h.send_json({"boolean": True})

    def _nn_delete(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        recursive = params.boolean("recursive", False)
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self.ns.stat(path)
            if st is None:
                h.send_json({"boolean": False})
                return
            if stat.S_ISDIR(st.st_mode) and not recursive and self.ns.children(path):
                raise HdfsError(
                    "PathIsNotEmptyDirectoryException", f"`{path} is non empty': Directory is not empty"
                )
            if path == "/":  # HDFS refuses to delete the root
                h.send_json({"boolean": False})
                return
            self.ns.check_access(user, _parent(path), WRITE)
            self.ns.remove(path)
        h.send_json({"boolean": True})

    def _destination(self, params: _Params) -> str:
        raw = params.get("destination")
        if not raw or not raw.startswith("/"):
            raise _bad_param(
                "destination", f'Invalid parameter value: destination = "{raw}" is not an absolute path.'
            )
        return _normalize(re.sub("/{2,}", "/", raw))

    def _nn_rename(self, h: _Handler, params: _Params, src: str, user: str) -> None:
        dst = self._destination(params)
        with self.ns.lock:
            h.send_json({"boolean": self._rename(src, dst, user)})

    def _rename(self, src: str, dst: str, user: str) -> bool:
        """HDFS's (deprecated, boolean) rename semantics; caller holds the namespace lock."""
        self.ns.check_traverse(user, src)
        self.ns.check_traverse(user, dst)
        if src == "/" or self.ns.stat(src) is None:
            return False
        if self.ns.is_dir(dst):
            dst = _join(dst, _basename(src))
        if dst == src:
            return True
        if dst.startswith(src + "/"):
            raise HdfsError(
                "IOException", f"Rename destination {dst} is a directory or file under source {src}"
            )
        if self.ns.stat(dst) is not None or not self.ns.is_dir(_parent(dst)):
            return False
        self.ns.check_access(user, _parent(src), WRITE)
        self.ns.check_access(user, _parent(dst), WRITE)
        os.rename(self.ns.local(src), self.ns.local(dst))
        self.ns.move_meta(src, dst)
        return True

    def _nn_setpermission(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        permission = params.permission()
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self._require(path, f"File does not exist: {path}")
            self.ns.check_owner(user, path)
            meta = self.ns.meta(path, stat.S_ISDIR(st.st_mode))
            meta.permission = 0o755 if permission is None else permission
            self.ns.set_meta(path, meta)
        h.send_empty()

    def _nn_setowner(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        owner, group = params.get("owner") or None, params.get("group") or None
        if owner is None and group is None:
            raise HdfsError("IllegalArgumentException", "Both owner and group are empty.")
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self._require(path, f"File does not exist: {path}")
            self.ns.check_owner(user, path)
            self._check_chown(user, owner, group)
            meta = self.ns.meta(path, stat.S_ISDIR(st.st_mode))
            meta.owner, meta.group = owner or meta.owner, group or meta.group
            self.ns.set_meta(path, meta)
        h.send_empty()

    def _check_chown(self, user: str, owner: str | None, group: str | None) -> None:
        if not self.ns.check_permissions or user == self.ns.superuser:
            return
        if owner is not None and owner != user:
            raise HdfsError(
                "AccessControlException",
                f"User {user} is not a super user (non-super user cannot change owner).",
            )
        if group is not None and group != user:
            raise HdfsError("AccessControlException", f"User {user} does not belong to {group}")

    def _nn_settimes(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        mtime = params.integer("modificationtime", -1)
        atime = params.integer("accesstime", -1)
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self._require(path, f"File/Directory {path} does not exist.")
            self.ns.check_access(user, path, WRITE)
            if mtime != -1 or atime != -1:
                new_atime = st.st_atime_ns if atime == -1 else (atime or 0) * 1_000_000
                new_mtime = st.st_mtime_ns if mtime == -1 else (mtime or 0) * 1_000_000
                os.utime(self.ns.local(path), ns=(new_atime, new_mtime))
        h.send_empty()

    def _nn_setreplication(self, h: _Handler, params: _Params, path: str, user: str) -> None:
        replication = params.integer("replication", DEFAULT_REPLICATION, minimum=1)
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self._require(path, f"File does not exist: {path}")
            if stat.S_ISDIR(st.st_mode):
                h.send_json({"boolean": False})
                return
            self.ns.check_access(user, path, WRITE)
            meta = self.ns.meta(path, False)
            meta.replication = replication or DEFAULT_REPLICATION
            self.ns.set_meta(path, meta)
        h.send_json({"boolean": True})

    # -- datanode: data transfer ---------------------------------------------------------
    def _dn_create(self, h: _Handler, params: _Params, path: str, user: str, fault: _Fault | None) -> None:
        overwrite, perm, replication, block_size, create_parent = self._create_options(params)
        with self.ns.lock:
            self._check_creatable(path, user, overwrite, create_parent)
            parent = _parent(path)
            self.ns.make_dirs(user, parent, 0o755, 0o755)
            local = self.ns.local(path)
            if local.exists():
                self.ns.remove(path)  # overwrite = delete + create: new inode, new metadata
            out = local.open("wb")
            group = self.ns.meta(parent, True).group
            self.ns.set_meta(path, _Meta(user, group, perm, replication, block_size))
        self._receive(h, out, fault, "CREATE")
        h.send_empty(201, {"Location": f"webhdfs://{self.host}:{self.port}{quote(path)}"})

    def _check_creatable(self, path: str, user: str, overwrite: bool, create_parent: bool) -> None:
        if path == "/" or self.ns.is_dir(path):
            raise HdfsError("FileAlreadyExistsException", f"{path} already exists as a directory")
        exists = self.ns.stat(path) is not None
        if exists and not overwrite:
            raise HdfsError(
                "FileAlreadyExistsException", f"{path} for client {CLIENT_MACHINE} already exists"
            )
        self.ns.ensure_parent_dirs(path)
        if not create_parent and not self.ns.is_dir(_parent(path)):
            raise _not_found(f"Parent directory doesn't exist: {_parent(path)}")
        self.ns.check_traverse(user, path)
        self.ns.check_access(user, self.ns.nearest_existing(_parent(path)), WRITE)
        if exists:
            self.ns.check_access(user, path, WRITE)

    def _receive(self, h: _Handler, out: BinaryIO, fault: _Fault | None, op: str) -> None:
        """Stream the request body into ``out``; a fault keeps only its first bytes."""
        assert h.body is not None
        with out:
            h.body.copy_to(out, None if fault is None else fault.after_bytes)
        if fault is not None:
            raise self.injected(op, fault)

    def _dn_append(self, h: _Handler, params: _Params, path: str, user: str, fault: _Fault | None) -> None:
        with self.ns.lock:
            self.ns.check_traverse(user, path)
            st = self.ns.stat(path)
            if st is None:
                raise _not_found(f"Failed to append to non-existent file {path} for client {CLIENT_MACHINE}")
            if stat.S_ISDIR(st.st_mode):
                raise _not_found(f"Path is not a file: {path}")
            self.ns.check_access(user, path, WRITE)
            out = self.ns.local(path).open("ab")
        self._receive(h, out, fault, "APPEND")
        h.send_empty(200)

    def _readable_file(self, path: str, user: str) -> os.stat_result:
        self.ns.check_traverse(user, path)
        st = self._require(path, f"File does not exist: {path}")
        if stat.S_ISDIR(st.st_mode):
            raise _not_found(f"Path is not a file: {path}")
        self.ns.check_access(user, path, READ)
        return st

    def _dn_open(self, h: _Handler, params: _Params, path: str, user: str, fault: _Fault | None) -> None:
        st = self._readable_file(path, user)
        offset = params.integer("offset", 0, minimum=0) or 0
        length = params.integer("length", None, minimum=0)
        if offset > st.st_size:
            raise HdfsError("IOException", "Cannot seek after EOF")
        count = st.st_size - offset if length is None else min(length, st.st_size - offset)
        h.close_after = True
        h.send_file_range(self.ns.local(path), offset, count, None if fault is None else fault.after_bytes)

    def _dn_getfilechecksum(
        self, h: _Handler, params: _Params, path: str, user: str, fault: _Fault | None
    ) -> None:
        if fault is not None:
            raise self.injected("GETFILECHECKSUM", fault)
        self._readable_file(path, user)
        block_size = self.ns.meta(path, False).block_size
        h.send_json({"FileChecksum": file_checksum(self.ns.local(path), block_size)})


# --------------------------------------------------------------------------- public facade


class WebHDFSServer:
    """A WebHDFS namenode + datanode pair on ``127.0.0.1:<ephemeral port>``.

    ``root_dir`` backs the HDFS namespace ``/`` (created if missing).  ``user`` is the
    HDFS superuser (owner of ``/`` and of files placed on disk directly).
    ``batch_size`` is ``dfs.ls.limit`` for ``LISTSTATUS_BATCH``.  ``redirect=False``
    switches to HttpFS-gateway behaviour (see module docstring).
    ``check_permissions`` mirrors ``dfs.permissions.enabled``.

    Thread-safe; ``start()`` must be called (or the context manager used) before
    ``host``/``port``/``url`` are available.
    """

    def __init__(
        self,
        root_dir: str | os.PathLike[str],
        *,
        user: str = "hdfs",
        batch_size: int = 1000,
        redirect: bool = True,
        check_permissions: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.root_dir = Path(root_dir)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.user = user
        self._app = _WebHdfsApp(_Namespace(self.root_dir, user, check_permissions), batch_size, redirect)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> WebHDFSServer:
        """Bind an ephemeral loopback port and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._httpd = _HTTPServer(("127.0.0.1", 0), self._app)
        self._app.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"webhdfs-{self._app.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections; idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd, self._thread = None, None

    def __enter__(self) -> WebHDFSServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self._app.host

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._app.port

    @property
    def url(self) -> str:
        """Filesystem URI, e.g. ``webhdfs://127.0.0.1:PORT``."""
        return f"webhdfs://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        """REST base, e.g. ``http://127.0.0.1:PORT/webhdfs/v1``."""
        return f"http://{self.host}:{self.port}{NAMENODE_PREFIX}"

    def local_path(self, hdfs_path: str) -> Path:
        """Backing local file of an absolute HDFS path (for inspecting/corrupting bytes)."""
        return self._app.ns.local(_normalize(hdfs_path))

    def file_status(self, hdfs_path: str) -> dict[str, Any]:
        """The FileStatus the namenode reports for an absolute HDFS path (``owner``,
        ``group``, ``permission``, ...), read directly rather than over HTTP."""
        path = _normalize(hdfs_path)
        with self._app.ns.lock:
            st = self._app.ns.stat(path)
            if st is None:
                raise FileNotFoundError(hdfs_path)
            return self._app.ns.file_status(path, st, "")

    # -- request log ----------------------------------------------------------------
    @property
    def requests(self) -> list[tuple[str, str, str]]:
        """Snapshot of namenode requests as ``(method, OP, decoded_hdfs_path)``."""
        with self._app.lock:
            return list(self._app.log)

    @property
    def datanode_requests(self) -> list[tuple[str, str, str]]:
        """Snapshot of datanode (data transfer) requests, same shape as ``requests``."""
        with self._app.lock:
            return list(self._app.datanode_log)

    def clear_requests(self) -> None:
        with self._app.lock:
            self._app.log.clear()
            self._app.datanode_log.clear()

    # -- fault injection --------------------------------------------------------------
    def fail_next(self, op: str, n: int = 1, *, status: int = 500, after_bytes: int | None = None) -> None:
        """Make the next ``n`` executions of ``op`` fail with a RemoteException ``status``.

        Data ops (CREATE, APPEND, OPEN, GETFILECHECKSUM) fail at the datanode step, so
        the namenode 307 still succeeds.  With ``after_bytes``, CREATE/APPEND keep the
        first ``after_bytes`` bytes of the upload before failing (a truncated file is
        left behind) and OPEN sends that many bytes and then drops the connection
        despite the advertised Content-Length.  Other ops fail at the namenode.
        """
        if n < 0 or (after_bytes is not None and after_bytes < 0):
            raise ValueError("n and after_bytes must be non-negative")
        self._app.add_faults(op, n, _Fault(status, after_bytes))

    def fail_next_creates(self, n: int = 1, *, status: int = 500, after_bytes: int | None = None) -> None:
        """Make the next ``n`` CREATE data uploads (datanode PUTs) fail; see ``fail_next``."""
        self.fail_next("CREATE", n, status=status, after_bytes=after_bytes)

    def pending_faults(self, op: str) -> int:
        """How many injected failures for ``op`` have not fired yet."""
        with self._app.lock:
            return len(self._app.faults.get(op.upper(), ()))

    def clear_faults(self) -> None:
        with self._app.lock:
            self._app.faults.clear()
