"""Local folders (``file://``): os.scandir listings, temp-name + rename writes.

User metadata of a local file is its ``user.*`` extended attributes (``setfattr -n
user.team -v ml FILE`` is ``meta.team == "ml"``), read only when ``want_metadata`` asks:
they travel with the file (``cp -a``, ``rsync -X``, ``tar --xattrs``), need no second file
a rename could leave behind, and cost one ``listxattr`` per file. A file system without
user xattrs reports no metadata. Local files have no tags: an empty mapping.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import itertools
import os
import secrets
import stat as stat_module
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from tierctl.errors import MoverError, ObjectExists, ObjectNotFound, UnsafeKey
from tierctl.model import Entry
from tierctl.movers import attributes as posix
from tierctl.movers.base import CHUNK_SIZE, Capabilities, KnownEntries, Mover, check_key
from tierctl.movers.local_create import rename_no_replace
from tierctl.movers.local_walk import FileStats, FolderWalk, ForkedWalk
from tierctl.movers.options import boolean_option, reject_unknown

TEMP_PREFIX = ".tierctl-tmp-"
KNOWN_OPTIONS = {
    "read_back": "verify each copy by reading the written file back (default: only off local disks)",
}
XATTR_PREFIX = "user."
_HAS_XATTRS = hasattr(os, "listxattr")


class _TempNames:
    """Temp names carry the writer's pid, so a listing can tell a live write's temp file
    from one a killed process left behind, then a random token drawn once per process and
    a counter (no system call per name). A forked child draws its own."""

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}-"
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.prefix}{next(self.counter)}"


_temp_names = _TempNames()
# Times a write makes its folder again after concurrent deletes pruned it (each loss needs
# a delete to empty the folder in the few microseconds before the temp file is in it).
_FOLDER_ATTEMPTS = 10

# File systems whose completed writes need no read-back (Capabilities.verified_writes):
# local disks and memory. Anything else (nfs, cifs, fuse.*, 9p, ceph, ...) is read back.
_DISK_FILE_SYSTEMS = frozenset(
    {
        *("ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "jfs", "reiserfs", "nilfs2"),
        *("tmpfs", "ramfs", "overlay", "vfat", "exfat"),
    }
)


def file_system_type(path: str) -> str | None:
    """The type of the file system ``path`` is on (``/proc/self/mountinfo``), or None where
    that cannot be read."""
    real = os.path.realpath(path)
    best, found = -1, None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if " - " not in line or len(fields) < 5:
                    continue
                mount_point = fields[4].replace("\\040", " ")
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) > best:
                    best, found = len(mount_point), line.split(" - ", 1)[1].split()[0]
    except OSError:
        return None
    return found


def _abandoned(name: str) -> bool:
    pid_text = name[len(TEMP_PREFIX) :].partition("-")[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, owned by someone else
    return _zombie(int(pid_text))


def _zombie(pid: int) -> bool:
    """A writer that has exited but is not reaped yet (a killed apply's worker process,
    until init collects it) still answers ``kill(pid, 0)``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state == [b"Z"]


def _os_error(exc: OSError, what: str) -> MoverError:
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MoverError(f"{what}: permission denied", hint="check the tier folder's owner and mode")
    if exc.errno == errno.ENOSPC:
        return MoverError(f"{what}: no space left on device", hint="free space on the tier")
    if exc.errno == errno.EROFS:
        return MoverError(f"{what}: read-only file system")
    return MoverError(f"{what}: {exc.strerror or exc}", retryable=exc.errno in (errno.EIO, errno.EAGAIN))


def path_from_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("", "file") or parts.netloc not in ("", "localhost"):
        raise ValueError(f"not a local file URL: {url}")
    return unquote(parts.path)


def parse_options(options: Mapping[str, Any], *, url: str) -> bool | None:
    """A local tier's options, checked: ``read_back`` (None: the file system decides). The
    policy loader calls this offline (the registry's ``parse_options``), the mover when built."""
    reject_unknown(options, KNOWN_OPTIONS, url=url)
    read_back = options.get("read_back")
    return None if read_back is None else boolean_option(read_back, "read_back", url)


class LocalMover(Mover):
    """A tier that is a folder on a local or mounted file system.

    Symlinks are never followed: a listing skips them and a write refuses a key whose
    parent folder resolves outside the tier root.
    """

    capabilities = Capabilities(
        max_connections=32,
        atomic_write=True,
        attributes=posix.ATTRIBUTE_KEYS,
        ranged_reads=True,
        read_metadata=("tags", "metadata") if _HAS_XATTRS else ("tags",),
        conditional_create=True,  # atomic with renameat2 or hard links: see local_create
    )

    def __init__(self, url: str, **options: object) -> None:
        """Option ``read_back``: verify copies by reading the written file back (default:
        only where the tier is not on a local disk file system; see ``verified_writes``)."""
        read_back = parse_options(options, url=url)
        self.url = url
        self.root = os.path.abspath(path_from_url(url))
        self._real_root = os.path.realpath(self.root)
        if read_back is None:
            read_back = file_system_type(self.root) not in _DISK_FILE_SYSTEMS
        self.capabilities = dataclasses.replace(self.capabilities, verified_writes=not read_back)
        self._skipped: list[str] = []
        self.removed_temp_files = 0
        # Parent folders made and checked to lie inside the root; a delete that prunes a
        # folder forgets it. Saves a makedirs and a realpath per written file.
        self._ready_dirs: set[str] = set()

    # -- required core ------------------------------------------------------------------
    def _path(self, key: str) -> str:
        return self._join(check_key(key))

    def _join(self, key: str) -> str:
        """The file of a key that passed :func:`check_key` (no empty, '.' or '..' segment,
        no leading '/')."""
        return f"{self.root}/{key}" if os.sep == "/" else os.path.join(self.root, *key.split("/"))

    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        want = self.want_metadata
        for batch in self.stat_batches(prefix):
            for key, size, mtime, atime in batch:
                if not want:
                    yield Entry(key, size, mtime, atime=atime)
                    continue
                path = self._join(key)  # the walk checked it
                try:
                    metadata = user_xattrs(path) if "metadata" in want and _HAS_XATTRS else None
                except FileNotFoundError:
                    continue  # vanished since the stat
                except OSError as exc:
                    raise _os_error(exc, f"reading extended attributes of {path}") from exc
                tags: dict[str, str] | None = {} if "tags" in want else None
                yield Entry(key, size, mtime, atime=atime, tags=tags, metadata=metadata)

    def stat_batches(self, prefix: str = "") -> Iterator[FileStats]:
        """What :meth:`list` lists, without metadata and without an ``Entry`` per file: the
        regular files under ``prefix`` as ``(key, size, mtime, atime)``, in key order, in
        batches of one folder's files (:mod:`.local_walk`). The scan's fast path
        (``Index.scan_tier_stats``) compares such batches with the index in C."""
        walk = FolderWalk(self.root, TEMP_PREFIX, self._is_temp)
        self._skipped = walk.skipped
        try:
            yield from walk.batches(prefix)
        except OSError as exc:
            raise _os_error(exc, f"listing {exc.filename}") from exc

    def stat_batches_elsewhere(self, prefix: str = "") -> ForkedWalk:
        """:meth:`stat_batches`, walked by a forked child from now on (a scan's later tiers,
        while it merges an earlier one); skipped keys and removed temp files count here."""
        before = self.removed_temp_files

        def summary() -> tuple[builtins.list[str], int]:
            return self._skipped, self.removed_temp_files - before

        def done(skipped: builtins.list[str], removed: int) -> None:
            self._skipped = skipped
            self.removed_temp_files += removed

        return ForkedWalk(lambda: self.stat_batches(prefix), summary, done, self.url)

    def _is_temp(self, entry: os.DirEntry[str], folder_fd: int | None = None) -> bool:
        """Temp files are never listed; those of dead writers are removed on the way.
        ``folder_fd``: the folder's descriptor when it was listed through one (``entry.path``
        is then just the name)."""
        if not entry.name.startswith(TEMP_PREFIX):
            return False
        if _abandoned(entry.name):
            if folder_fd is None:
                _unlink_quietly(entry.path)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=folder_fd)
            self.removed_temp_files += 1
        return True

    def _reap_abandoned(self, folder: str) -> None:
        """Remove the temp files killed writers left in ``folder``, once per folder and
        mover, before this mover writes there: an interrupted run's half-written file goes
        when its key (or a neighbour) is written again, not only at the next scan."""
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name.startswith(TEMP_PREFIX):
                        self._is_temp(entry)
        except OSError:
            pass  # listing is a courtesy here; the write itself reports real trouble

    def stat(self, key: str) -> Entry:
        path = self._path(key)
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        if not stat_module.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"{self.url}/{key}: not a regular file")
        want = self.want_metadata
        if not want:
            return Entry(key=key, size=st.st_size, mtime=st.st_mtime_ns / 1e9)
        try:
            metadata = user_xattrs(path) if "metadata" in want and _HAS_XATTRS else None
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        return Entry(
            key=key,
            size=st.st_size,
            mtime=st.st_mtime_ns / 1e9,
            tags={} if "tags" in want else None,
            metadata=metadata,
        )

    def _open_file(self, key: str) -> int:
        """A read-only descriptor of the key's file (enough for reads and for fchmod/fchown),
        never through a symlink at its last component."""
        try:
            return os.open(self._path(key), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        fd = self._open_file(key)
        try:
            while chunk := os.read(fd, chunk_size):
                yield chunk
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        finally:
            os.close(fd)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        fd = self._open_file(key)
        try:
            return os.pread(fd, end - start, start)
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        finally:
            os.close(fd)

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
        path = self._path(key)
        parent = os.path.dirname(path)
        what = f"{self.url}/{key}"
        wanted = posix.only_attributes(metadata)
        try:
            fd, tmp = self._temp_file(parent)
        except OSError as exc:
            raise _os_error(exc, what) from exc
        try:
            try:
                for chunk in chunks:
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                mtime_ns = round(mtime * 1e9)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
                if wanted:
                    posix.apply_to_fd(fd, wanted)
                if durable:
                    os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if not if_absent:
                os.replace(tmp, path)
            else:
                try:
                    rename_no_replace(tmp, path)
                except FileExistsError:
                    raise ObjectExists(f"{what}: already exists; not replaced") from None
            if durable:
                _fsync_dir(parent)
        except BaseException as exc:
            _unlink_quietly(tmp)
            if isinstance(exc, OSError):
                raise _os_error(exc, what) from exc
            raise
        return Entry(key=key, size=st.st_size, mtime=st.st_mtime_ns / 1e9)

    def _temp_file(self, parent: str) -> tuple[int, str]:
        """Create a new temp file (mode 0666 less the umask) in ``parent``, making the folder.
        A delete that prunes empty folders may remove ``parent`` or one above it at any point
        until the temp file is in it (``makedirs`` then fails with "not found" or, when the
        folder went between its mkdir and its check, "exists"): the folder is made again."""
        for attempt in range(_FOLDER_ATTEMPTS):
            try:
                if parent not in self._ready_dirs:
                    os.makedirs(parent, exist_ok=True)
                    real = os.path.realpath(parent)
                    if real != self._real_root and not real.startswith(self._real_root + os.sep):
                        raise UnsafeKey(f"{parent} resolves outside the tier root {self.root}")
                    self._reap_abandoned(parent)
                    self._ready_dirs.add(parent)
                tmp = os.path.join(parent, _temp_names.next())
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666), tmp
            except (FileNotFoundError, FileExistsError):
                if attempt == _FOLDER_ATTEMPTS - 1:
                    raise
                self._ready_dirs.discard(parent)  # a concurrent delete pruned the folder
        raise AssertionError("unreachable")

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        self._prune_empty_parents(os.path.dirname(path))

    def _prune_empty_parents(self, folder: str) -> None:
        while folder != self.root and folder.startswith(self.root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:
                return  # not empty (or already gone): stop
            self._ready_dirs.discard(folder)
            folder = os.path.dirname(folder)

    def skipped_keys(self) -> builtins.list[str]:
        return list(self._skipped)

    # -- attributes (mode, uid/gid, owner/group names) ------------------------------------
    def attributes(self, key: str) -> dict[str, str]:
        try:
            st = os.stat(self._path(key), follow_symlinks=False)
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        return posix.from_stat(st)

    def list_attributes(self, prefix: str = "") -> Iterator[tuple[str, dict[str, str]]]:
        for entry in self.list(prefix):
            try:
                st = os.stat(self._path(entry.key), follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since listed
            yield entry.key, posix.from_stat(st)

    def set_attributes(self, key: str, attributes: Mapping[str, str]) -> None:
        fd = self._open_file(key)
        try:
            posix.apply_to_fd(fd, posix.only_attributes(attributes))
        except OSError as exc:
            raise _os_error(exc, f"{self.url}/{key}") from exc
        finally:
            os.close(fd)


def user_xattrs(path: str) -> dict[str, str]:
    """The ``user.*`` extended attributes of ``path`` (not followed if a symlink), named
    without the prefix, values as UTF-8 (undecodable bytes replaced); empty where the file
    system keeps none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    found: dict[str, str] = {}
    for name in names:
        if not name.startswith(XATTR_PREFIX):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                continue  # removed since listed
            raise
        found[name[len(XATTR_PREFIX) :]] = value.decode("utf-8", "replace")
    return found


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
