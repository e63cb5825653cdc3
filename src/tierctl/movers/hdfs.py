"""``hdfs://namenode:8020/path``: HDFS's native RPC protocol through pyarrow's HadoopFileSystem.

pyarrow reaches HDFS through libhdfs (JNI), so a host needs a Java runtime, Hadoop's
``libhdfs.so`` and the Hadoop client jars on the ``CLASSPATH``; :meth:`HdfsMover.connect`
says which of these is missing. ``webhdfs://`` reaches the same cluster over HTTP with none of them.

A source tier: list, stat, read, delete; no writes
    pyarrow's FileSystem API cannot set a file's modification time (it has no ``utime``;
    libhdfs's ``hdfsUtime`` is not exposed), so a copy written here would carry the time it
    was written, not its content's age, and an old object would look new and be planned
    back to the hot tier. tierctl therefore never writes to an ``hdfs://`` tier:
    ``capabilities.writable`` is False, :meth:`HdfsMover.write` raises :class:`Unsupported`,
    and the policy loader refuses, with the file position, a rule that would copy onto an
    ``hdfs://`` tier other than its dataset's home. Deleting works, so a move off HDFS (a
    migration with ``--delete-source``, ``place: [s3]`` on an HDFS home) deletes each source
    file once its copy is verified. Write to the cluster through ``webhdfs://``.

Listing
    Folder by folder, depth first, with a non-recursive ``FileSelector`` per folder, each
    folder sorted with a sub-folder ``a`` keyed ``a/`` so it follows ``a.txt`` and ``a-b``:
    keys come out in global code-point order, as S3 lists. Memory grows with the depth of
    the tree and its largest folder (libhdfs returns a folder whole), never with its size.
    Names beginning ``.tierctl-tmp-`` (a ``webhdfs://`` writer's temp files) are not listed.

mtime
    libhdfs reports a file's modification time in whole seconds (HDFS keeps milliseconds;
    ``webhdfs://`` reports them). Keys listed through ``hdfs://`` therefore carry whole-second
    mtimes, and so do the copies made from them; a copy made earlier through ``webhdfs://``
    differs by the lost milliseconds and is seen as another version.

Deletes leave empty folders
    pyarrow deletes folders only recursively. Pruning a folder a delete left empty would be
    a check followed by a recursive delete, which would destroy a file another HDFS client
    wrote in between; empty folders stay (``hdfs dfs -rmdir`` removes them safely).

Checksums
    HDFS's own file checksum (MD5 of per-block MD5s of CRC32Cs) depends on block and chunk
    sizes and matches no S3 or GCS digest: no native digest is declared, and a copy is
    verified against the digest tierctl computes on the stream it reads from here.

What is tested against what
    The mover sees only the ``pyarrow.fs.FileSystem`` interface, which HadoopFileSystem
    implements; the tests run it over ``pyarrow.fs.SubTreeFileSystem(folder,
    LocalFileSystem())`` (tests/movers/hdfs_local.py overrides :meth:`HdfsMover.connect`,
    nothing else). Untested here, for want of a cluster: the body of ``connect`` against a
    NameNode, libhdfs's own behaviour (whole-second mtimes, the errno of each Java
    exception, reads past the end), Kerberos, HA nameservices, and the error branches only
    a cluster produces (permission denied, which the tests' root user never meets; a lost
    connection). The refusal where libhdfs cannot load is tested for real: this machine
    has no libhdfs.
"""

from __future__ import annotations

import builtins
import errno
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tierctl.errors import ConfigError, MissingDependency, MoverError, ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, Unsupported
from tierctl.movers.hdfs_paths import TEMP_PREFIX, HdfsPaths
from tierctl.movers.options import expand_references, positive_int_option, reject_unknown

if TYPE_CHECKING:
    from pyarrow.fs import FileInfo, FileSystem

DEFAULT_MAX_CONNECTIONS = 8
# libhdfs turns a Java exception it has no errno for into EINTERNAL (255): mostly I/O
# trouble (a DataNode gone, a standby NameNode), worth the retry wrapper's bounded attempts.
_EINTERNAL = 255
_RETRYABLE_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    _EINTERNAL,
}

KNOWN_OPTIONS = {
    "user": "connect as this HDFS user (clusters without Kerberos; default: the login user)",
    "kerberos_ticket_cache": "path of the Kerberos ticket cache kinit wrote (KRB5CCNAME)",
    "buffer_size": "bytes libhdfs reads ahead per open file (default: no buffering)",
    "hadoop_conf": "a mapping of Hadoop settings that override the host's hdfs-site.xml",
    "max_connections": "files read at once",
}


@dataclass(frozen=True, repr=False)
class HdfsOptions:
    """Validated options of one ``hdfs://`` tier. ``${NAME}`` references are expanded from
    the environment; ``hadoop_conf`` values may hold secrets and are never shown."""

    user: str | None = None
    kerberos_ticket_cache: str | None = None
    buffer_size: int = 0
    hadoop_conf: dict[str, str] = field(default_factory=dict)
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, url: str) -> HdfsOptions:
        reject_unknown(options, KNOWN_OPTIONS, url=url)
        values: dict[str, Any] = {}
        for name, raw in options.items():
            if raw is None or raw == "":
                continue
            if name == "hadoop_conf":
                if not isinstance(raw, Mapping):
                    raise ConfigError(
                        f"{url}: option 'hadoop_conf' must be a mapping of Hadoop settings",
                        hint="e.g. hadoop_conf: {dfs.client.use.datanode.hostname: 'true'} (policy file)",
                    )
                values[name] = {
                    str(key): expand_references(str(value), option=f"hadoop_conf.{key}")
                    for key, value in raw.items()
                }
                continue
            value = expand_references(raw, option=name) if isinstance(raw, str) else raw
            if name in ("buffer_size", "max_connections"):
                values[name] = positive_int_option(value, name, url)
            else:
                values[name] = str(value)
        return cls(**values)

    def __repr__(self) -> str:
        shown = [
            f"{name}={getattr(self, name)!r}"
            for name in ("user", "kerberos_ticket_cache")
            if getattr(self, name)
        ]
        if self.hadoop_conf:
            shown.append(f"hadoop_conf=<{', '.join(sorted(self.hadoop_conf))}>")
        return f"HdfsOptions({', '.join(shown)})"


class HdfsMover(HdfsPaths, Mover):
    """One HDFS folder through pyarrow's FileSystem interface (see the module docs).

    Built by the registry as ``HdfsMover(url, **options)``, which connects with
    :meth:`connect`. That method is the one place a real cluster is needed: a subclass that
    returns another ``pyarrow.fs.FileSystem`` from it runs everything else unchanged (the
    tests use a local folder; the URL's path is then a path inside that file system).
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(url)
        if parts.scheme != "hdfs":
            raise ConfigError(f"not an hdfs:// URL: {url}", hint="use hdfs://namenode:8020/path")
        # No host (hdfs:///path): the cluster of fs.defaultFS in the host's core-site.xml.
        self.host = parts.hostname or "default"
        # No port: 0 lets the Hadoop client apply its defaults (8020, or an HA nameservice).
        self.port = parts.port or 0
        self.root = "/" + unquote(parts.path).strip("/")
        if self.root != "/" and any(seg in ("", ".", "..") for seg in self.root[1:].split("/")):
            raise ConfigError(f"{url}: the path must be absolute and normalised")
        self.options = HdfsOptions.parse(options, url=self.url)
        self.capabilities = Capabilities(
            max_connections=self.options.max_connections, ranged_reads=True, writable=False
        )
        self._skipped: list[str] = []
        self.fs: FileSystem = self.connect()

    def connect(self) -> FileSystem:
        """Open the cluster through libhdfs. Where it cannot load (no Java runtime, no
        ``libhdfs.so``, no Hadoop jars) the error names what to set, and ``webhdfs://``."""
        from pyarrow import fs as pafs

        try:
            return pafs.HadoopFileSystem(
                self.host,
                self.port,
                user=self.options.user,
                buffer_size=self.options.buffer_size,
                kerb_ticket=self.options.kerberos_ticket_cache,
                extra_conf=self.options.hadoop_conf or None,
            )
        except OSError as exc:
            raise connection_error(self.url, exc) from None

    def __repr__(self) -> str:
        return f"HdfsMover({self.url!r}, {self.options!r})"

    # -- plumbing -----------------------------------------------------------------------
    def _info(self, key: str) -> FileInfo:
        """The FileInfo of a key that is a regular file; ObjectNotFound otherwise."""
        from pyarrow import fs as pafs

        path = self._path(key)
        try:
            info = self.fs.get_file_info(path)
        except OSError as exc:
            raise os_error(exc, self._what(key)) from exc
        if info.type == pafs.FileType.NotFound:
            raise ObjectNotFound(f"{self._what(key)}: not found")
        if info.type != pafs.FileType.File:
            raise ObjectNotFound(f"{self._what(key)}: not a regular file")
        return info

    # -- listing ---------------------------------------------------------------------------
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        from pyarrow import fs as pafs

        self._skipped = []
        base, _, name_prefix = prefix.rpartition("/")
        rel_base = f"{base}/" if base else ""
        top = self._join(base)
        try:
            if self.fs.get_file_info(top).type != pafs.FileType.Directory:
                return  # absent, or a file (HDFS would list a file as its own child)
        except OSError as exc:
            raise os_error(exc, f"listing {self.url}/{rel_base}") from exc
        stack = [iter(self._folder(top, rel_base, name_prefix))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            rel, info = item
            if info.type == pafs.FileType.Directory:
                stack.append(iter(self._folder(self._join(rel), rel + "/", "")))
                continue
            if info.type != pafs.FileType.File:
                self._skipped.append(rel)  # neither file nor folder (FileType.Unknown)
                continue
            try:
                self._path(rel)
            except UnsafeKey:
                self._skipped.append(rel)
                continue
            yield _entry(rel, info)

    def _folder(self, path: str, rel_base: str, name_prefix: str) -> builtins.list[tuple[str, FileInfo]]:
        """One folder's children whose names start with ``name_prefix``, in tierctl's order
        (a sub-folder sorts as ``name + "/"``); a folder removed since it was listed has none."""
        from pyarrow import fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise os_error(exc, f"listing {self.url}/{rel_base}") from exc
        keyed = []
        for info in infos:
            name = info.base_name
            if not name.startswith(name_prefix) or name.startswith(TEMP_PREFIX):
                continue
            keyed.append((name + "/" if info.type == pafs.FileType.Directory else name, info))
        keyed.sort(key=lambda pair: pair[0])
        return [(rel_base + info.base_name, info) for _, info in keyed]

    # -- required core ---------------------------------------------------------------------
    def stat(self, key: str) -> Entry:
        return _entry(key, self._info(key))

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        what = self._what(key)
        path = self._path(key)
        try:
            stream = self.fs.open_input_stream(path)
        except OSError as exc:
            raise os_error(exc, what, path=path, fs=self.fs) from exc
        try:
            while chunk := stream.read(chunk_size):
                yield chunk
        except OSError as exc:
            raise os_error(exc, what) from exc
        finally:
            stream.close()

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        what = self._what(key)
        path = self._path(key)
        try:
            with self.fs.open_input_file(path) as f:
                return bytes(f.read_at(end - start, start)) if start < f.size() else b""
        except OSError as exc:
            raise os_error(exc, what, path=path, fs=self.fs) from exc

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
        raise Unsupported(
            f"{self._what(key)}: hdfs:// tiers are read-only: libhdfs through pyarrow cannot set"
            " a file's mtime, so the copy would lose its content's age",
            hint=f"write to this cluster over WebHDFS: {webhdfs_equivalent(self.url)}",
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            self.fs.delete_file(path)  # refuses a folder: a folder is not an object
        except OSError as exc:
            raise os_error(exc, self._what(key), path=path, fs=self.fs) from exc

    def skipped_keys(self) -> builtins.list[str]:
        return list(self._skipped)


def _entry(key: str, info: FileInfo) -> Entry:
    return Entry(key=key, size=int(info.size), mtime=int(info.mtime_ns) / 1e9)


def webhdfs_equivalent(url: str) -> str:
    """The WebHDFS URL of the same folder (NameNode HTTP port 9870, Hadoop 3's default)."""
    parts = urlsplit(url)
    return f"webhdfs://{parts.hostname or 'NAMENODE'}:9870{parts.path or '/'}"


def connection_error(url: str, exc: OSError) -> MissingDependency | MoverError:
    """A one-line error for a failed HadoopFileSystem(...): what to install or set, or why
    the NameNode could not be reached."""
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    setup = (
        "set JAVA_HOME to a Java runtime, ARROW_LIBHDFS_DIR to the folder holding libhdfs.so and"
        " CLASSPATH=$(hadoop classpath --glob); or use the same cluster over WebHDFS, which needs"
        f" none of these: {webhdfs_equivalent(url)}"
    )
    if "libjvm" in detail or "libhdfs" in detail:
        return MissingDependency(
            f"{url}: hdfs:// needs libhdfs and a Java runtime, which cannot load here ({detail})",
            hint=setup,
        )
    return MoverError(
        f"{url}: cannot connect to the NameNode ({detail})",
        hint="check the host and port and the tier's user / kerberos_ticket_cache options (kinit);"
        f" if the Hadoop jars are missing, {setup}",
    )


def os_error(exc: OSError, what: str, *, path: str | None = None, fs: FileSystem | None = None) -> MoverError:
    """Classify a pyarrow / libhdfs failure. With ``path`` and ``fs``, a failure to open or
    delete is checked against the path's type: pyarrow may report a folder without an errno."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        return ObjectNotFound(f"{what}: not found")
    if isinstance(exc, IsADirectoryError):
        return ObjectNotFound(f"{what}: not a regular file")
    if path is not None and fs is not None and exc.errno is None:
        from pyarrow import fs as pafs

        try:
            kind = fs.get_file_info(path).type
        except OSError:
            kind = None
        if kind == pafs.FileType.NotFound:
            return ObjectNotFound(f"{what}: not found")
        if kind == pafs.FileType.Directory:
            return ObjectNotFound(f"{what}: not a regular file")
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return MoverError(
            f"{what}: permission denied ({detail})",
            hint="check the HDFS owner and mode, and the tier's user / kerberos_ticket_cache options",
        )
    # No errno: pyarrow's own status (a lost connection, a failed read): try again.
    return MoverError(f"{what}: {detail}", retryable=exc.errno is None or exc.errno in _RETRYABLE_ERRNOS)
