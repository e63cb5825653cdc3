"""The walk under a local tier's listing: the regular files under a key prefix, in key
order, as ``(key, size, mtime, atime)`` tuples in batches of one folder's files.

It is the scan's hot loop (100k files: one ``lstat`` each, ~3 µs of which is the kernel's),
so it keeps Python work per file to a tuple: folders are read through their descriptors
(a stat looks up one name, not a whole path), all names of a folder are checked with one
regular expression, files are stat-ed with a C-level ``map``, and nothing else is built
per file (an ``Entry`` costs ~1.5 µs, as much as the rest of the walk).
"""

from __future__ import annotations

import errno
import itertools
import operator
import os
import queue
import re
import stat
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from tierctl.errors import MoverError, TierctlError, UnsafeKey
from tierctl.movers.base import check_key

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

# A file as the walk lists it: (key, size, mtime, atime), times in seconds.
FileStat = tuple[str, int, float, float]
FileStats = list[FileStat]
DirEntries = list[os.DirEntry[str]]
STAT_BATCH = 1024  # files per batch at most (a folder's files come in several)
_FILE_TYPE = 0o170000  # the S_IFMT bits of st_mode
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_FOLDER_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_name = operator.attrgetter("name")
_is_folder = operator.methodcaller("is_dir", follow_symlinks=False)
_lstat = operator.methodcaller("stat", follow_symlinks=False)


class FolderWalk:
    """One walk of the tree under ``root``.

    ``is_temp(entry, folder_fd)`` says whether an entry whose name starts with
    ``temp_prefix`` is a temp file to leave out (the mover's rule; it may remove the file,
    relative to ``folder_fd``). Symlinks,
    sockets, fifos, devices and keys that fail ``check_key`` are left out and collect in
    ``skipped``. A file that vanishes between reading its folder and its stat, and a
    subfolder removed before it is opened, are left out; other ``OSError``s propagate,
    named by the folder's full path.
    """

    def __init__(self, root: str, temp_prefix: str, is_temp: Callable[[os.DirEntry[str], int], bool]) -> None:
        self.root = root
        self.temp_prefix = temp_prefix
        self.is_temp = is_temp
        self.skipped: list[str] = []

    def batches(self, prefix: str = "") -> Iterator[FileStats]:
        """The regular files whose keys start with ``prefix``, in key order (code points,
        what S3 and GCS list in), in batches of up to :data:`STAT_BATCH` files of one folder."""
        base, _, name_prefix = prefix.rpartition("/")
        start = os.path.join(self.root, *base.split("/")) if base else self.root
        if not os.path.isdir(start):
            return
        rel_base = f"{base}/" if base else ""
        yield from self._walk(start, None, rel_base, name_prefix, not base or _is_safe(base))

    def _walk(
        self, path: str, parent_fd: int | None, rel_base: str, name_prefix: str, folder_safe: bool
    ) -> Iterator[FileStats]:
        """The files under folder ``path`` (opened relative to ``parent_fd`` without
        following a symlink, when given) whose keys start with ``rel_base`` +
        ``name_prefix``; ``folder_safe``: ``rel_base`` passed check_key."""
        flags = _FOLDER_FLAGS if parent_fd is None else _FOLDER_FLAGS | os.O_NOFOLLOW
        try:
            fd = os.open(path if parent_fd is None else os.path.basename(path), flags, dir_fd=parent_fd)
        except OSError as exc:
            if parent_fd is not None and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                self.skipped.append(rel_base.rstrip("/"))  # no longer a folder: a symlink now?
                return
            if parent_fd is not None and exc.errno == errno.ENOENT:
                return  # removed since its parent was read: its files are gone, as a vanished file's
            raise OSError(exc.errno, exc.strerror, path) from exc
        try:
            entries, names = self._sorted_entries(path, fd, name_prefix)
            # One regex over all names instead of check_key per file: under a folder key that
            # passed check_key, a name of printable ASCII makes a safe key (a name holds no
            # '/' and is never '.' or '..'; tests/test_scan_fast.py holds this against
            # check_key). Other names get the full check.
            plain = folder_safe and _NOT_PRINTABLE_ASCII.search(names) is None
            for is_folder, run in itertools.groupby(entries, _is_folder):
                if is_folder:
                    for entry in run:
                        key = rel_base + entry.name
                        sub = os.path.join(path, entry.name)
                        yield from self._walk(sub, fd, key + "/", "", plain or _is_safe(key))
                    continue
                files = list(run)
                for start in range(0, len(files), STAT_BATCH):
                    batch = self._stat_files(files[start : start + STAT_BATCH], rel_base, plain)
                    if batch:
                        yield batch
        finally:
            os.close(fd)

    def _stat_files(self, files: DirEntries, rel_base: str, plain: bool) -> FileStats:
        """The regular files among ``files`` with safe keys, as FileStats."""
        try:
            stats = list(map(_lstat, files))
        except FileNotFoundError:
            files, stats = _stat_each(files)
        batch = [
            (rel_base + entry.name, st.st_size, st.st_mtime_ns / 1e9, st.st_atime_ns / 1e9)
            for entry, st in zip(files, stats, strict=True)
            if st.st_mode & _FILE_TYPE == stat.S_IFREG
        ]
        if len(batch) == len(files) and plain:
            return batch
        listable = {key for key, *_ in batch if plain or _is_safe(key)}
        self.skipped.extend(key for key in (rel_base + entry.name for entry in files) if key not in listable)
        return [file for file in batch if file[0] in listable]

    def _sorted_entries(self, path: str, fd: int, name_prefix: str) -> tuple[DirEntries, str]:
        """The entries of folder ``path`` (open as ``fd``) whose names start with
        ``name_prefix``, temp files left out, in key order; and their names joined with '/'.

        A folder sorts as its name + "/", which puts "a/..." after "a.txt", so the walk
        yields keys in global code-point order."""
        try:
            with os.scandir(fd) as it:
                entries = [e for e in it if e.name.startswith(name_prefix)] if name_prefix else list(it)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from exc
        names = "/".join([e.name for e in entries])
        if self.temp_prefix in names:  # one test for the folder; then name by name
            temp = self.temp_prefix
            entries = [e for e in entries if not (e.name.startswith(temp) and self.is_temp(e, fd))]
            names = "/".join([e.name for e in entries])
        if any(map(_is_folder, entries)):
            entries.sort(key=_folder_sort_name)
        else:
            entries.sort(key=_name)
        return entries, names


def _is_safe(key: str) -> bool:
    try:
        check_key(key)
    except UnsafeKey:
        return False
    return True


def _stat_each(files: DirEntries) -> tuple[DirEntries, list[os.stat_result]]:
    """``files`` that still exist, and their stats."""
    found, stats = [], []
    for entry in files:
        try:
            stats.append(entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            continue  # vanished between readdir and stat
        found.append(entry)
    return found, stats


def _folder_sort_name(entry: os.DirEntry[str]) -> str:
    return entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name


# A walk in another process sends its files in messages of about this many, and is read
# at most this many messages ahead of the scan that merges them (~260k files, ~40 MB).
FORKED_MESSAGE_FILES = 4096
FORKED_READ_AHEAD = 64


class ForkedWalk:
    """``walk()`` run in a forked child (:mod:`tierctl.forked`), from the moment this is
    made: a scan walks a tier's folders on the other core while it merges an earlier tier.
    Iterating yields the same batches in the same order; at the end ``done(*summary())``
    gets what the child's walk collected (``summary`` runs in the child). A TierctlError in the child
    is raised here as itself. :meth:`close` (also at the end of iteration) stops the child.
    """

    def __init__(
        self,
        walk: Callable[[], Iterator[FileStats]],
        summary: Callable[[], tuple[list[str], int]],
        done: Callable[[list[str], int], None],
        what: str,
    ) -> None:
        self._done, self._what = done, what
        self._queue: queue.Queue[tuple[object, ...]] = queue.Queue(FORKED_READ_AHEAD)
        self._stop = threading.Event()
        self._finished = False
        from tierctl import forked

        self._reap = forked.reap
        self._pid, self._conn = forked.fork(lambda conn: _send_walk(conn, walk, summary))
        self._pump = threading.Thread(target=self._receive, name="tierctl-forked-walk", daemon=True)
        self._pump.start()

    def _receive(self) -> None:
        """Move the child's messages to the queue (the pipe alone holds ~64 KiB, and the
        scan reads this tier only after the earlier ones)."""
        while not self._stop.is_set():
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                message = ("died",)
            while not self._stop.is_set():
                try:
                    self._queue.put(message, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if message[0] != "batches":
                return

    def __iter__(self) -> Iterator[FileStats]:
        try:
            while True:
                message = self._queue.get()
                kind = message[0]
                if kind in ("batches", "end"):
                    yield from message[1]  # type: ignore[misc]
                if kind == "batches":
                    continue
                if kind == "end":
                    self._finished = True
                    self._done(message[2], message[3])  # type: ignore[arg-type]
                    return
                if kind == "fail":
                    raise message[1]  # type: ignore[misc]
                detail = f":\n{message[1]}" if kind == "error" else " (the process died)"
                raise MoverError(f"walking {self._what} in a helper process failed{detail}")
        finally:
            self.close()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._reap(self._pid, kill=not self._finished)
        self._pump.join()
        self._conn.close()


def _send_walk(
    conn: Connection, walk: Callable[[], Iterator[FileStats]], summary: Callable[[], tuple[list[str], int]]
) -> None:  # pragma: no cover - runs in the child
    """In the child: the walk's batches, FORKED_MESSAGE_FILES at a time, then the end."""
    batches: list[FileStats] = []
    files = 0
    try:
        for batch in walk():
            batches.append(batch)
            files += len(batch)
            if files >= FORKED_MESSAGE_FILES:
                conn.send(("batches", batches))
                batches, files = [], 0
    except TierctlError as exc:
        conn.send(("fail", exc))
        return
    conn.send(("end", batches, *summary()))
