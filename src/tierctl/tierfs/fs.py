"""``TierFileSystem``: the fsspec filesystem behind ``tier://`` (read-only).

``fsspec.open("tier://events/2026/11/01.parquet", config="policies.yaml")`` reads the object
from its best readable placement (see :func:`namespace.read_order`) through the tier's mover;
a placement that turns out gone or changed is skipped for the next one, before and during the
read. Ranged reads go to the store where it serves ranges (local, S3, GCS, WebHDFS); other
movers are streamed from the start and a backward seek restarts the stream.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem  # type: ignore[import-untyped]

from tierctl.errors import ObjectArchived, ObjectChanged, ObjectNotFound, TierctlError
from tierctl.model import Placement
from tierctl.movers.base import Mover
from tierctl.tierfs import namespace
from tierctl.tierfs.backend import Backend, backend_for
from tierctl.tierfs.errors import ArchivedOnly, NotInNamespace, ReadOnlyNamespace

log = logging.getLogger(__name__)

# A placement that fails this way is skipped for the next one; other errors end the read.
_SKIPPABLE = (ObjectNotFound, ObjectArchived, ObjectChanged)


class TierFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only fsspec filesystem over the tierctl index: ``tier://DATASET/KEY``.

    Storage options: ``config`` (the policy file; default $TIERCTL_CONFIG, else
    ./policies.yaml) and ``index`` (the index, overriding the policy file's ``index:``).
    """

    protocol = "tier"
    root_marker = ""

    def __init__(self, config: str | None = None, index: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend: Backend = backend_for(config, index)

    @property
    def config(self) -> Any:
        return self.backend.config

    # -- listing ----------------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        target = namespace.parse(self.config, self._strip_protocol(path))
        if target.is_root:
            entries = [namespace.directory(name) for name in self.config.datasets]
        else:
            with self.backend.index_read() as conn:
                placements = [] if target.path == target.dataset else self._placements(conn, target)
                if placements:
                    entries = [namespace.file_info(self.config, target.dataset, placements)]
                else:
                    prefix = target.folder_prefix(self.config)
                    entries = list(namespace.children(self.config, conn, target.dataset, prefix))
            if not entries and target.path != target.dataset:
                raise NotInNamespace(f"tier://{target.path}: no such object or folder")
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        target = namespace.parse(self.config, self._strip_protocol(path))
        if target.is_root or target.path == target.dataset:
            return namespace.directory(target.path)
        with self.backend.index_read() as conn:
            placements = self._placements(conn, target)
            if placements:
                return namespace.file_info(self.config, target.dataset, placements)
            if namespace.has_objects_below(conn, target.dataset, target.key + "/"):
                return namespace.directory(target.path)
        raise NotInNamespace(f"tier://{target.path}: no such object or folder")

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Every object below ``path``: one range query per dataset (not a walk)."""
        if maxdepth is not None or withdirs:
            return super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        target = namespace.parse(self.config, self._strip_protocol(path))
        found: dict[str, dict[str, Any]] = {}
        with self.backend.index_read() as conn:
            for dataset in [target.dataset] if not target.is_root else list(self.config.datasets):
                if target.is_root or target.path == dataset:
                    prefix = self.config.datasets[dataset].prefix
                else:
                    placements = self._placements(conn, target)
                    if placements:
                        info = namespace.file_info(self.config, dataset, placements)
                        found[info["name"]] = info
                    prefix = target.key + "/"
                for info in namespace.files_below(self.config, conn, dataset, prefix):
                    found[info["name"]] = info
        names = sorted(found)
        return {n: found[n] for n in names} if detail else names

    def modified(self, path: str) -> datetime.datetime:
        """The content mtime of the object (the same on every tier)."""
        info = self.info(path)
        if info["type"] != "file":
            raise IsADirectoryError(path)
        return datetime.datetime.fromtimestamp(info["mtime"], tz=datetime.timezone.utc)

    @staticmethod
    def _placements(conn: Any, target: namespace.TierPath) -> list[Placement]:
        return namespace.object_placements(conn, target.dataset, target.key)

    # -- reading ------------------------------------------------------------------------------
    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TierFile:
        if mode != "rb":
            raise ReadOnlyNamespace(f"tier://{path}: tier:// is read-only (asked for mode {mode!r})")
        target = namespace.parse(self.config, self._strip_protocol(path))
        reader = self._reader(target)
        return TierFile(
            self,
            target.path,
            reader,
            block_size=block_size,
            cache_type=kwargs.get("cache_type", "readahead"),
            cache_options=cache_options,
        )

    def _reader(self, target: namespace.TierPath) -> PlacementReader:
        with self.backend.index_read() as conn:
            placements = [] if target.path == target.dataset else self._placements(conn, target)
            folder = not placements and (
                target.is_root or namespace.has_objects_below(conn, target.dataset, target.key + "/")
            )
        if folder or target.path == target.dataset:
            raise IsADirectoryError(f"tier://{target.path} is a folder")
        if not placements:
            raise NotInNamespace(f"tier://{target.path}: no such object")
        readable, archived = namespace.read_order(self.config, placements)
        cache = self.backend.cache
        if (
            cache is not None
            and readable
            and readable[0].tier != cache.settings.tier
            and cache.wants(readable[0])
        ):
            filled = cache.fill(readable[0])
            if filled is not None:
                readable.insert(0, filled)
        reader = PlacementReader(self.backend, target.path, readable + self._restored_meanwhile(archived))
        if not reader.start():
            raise self._unreadable(target, placements, archived)
        return reader

    def _restored_meanwhile(self, archived: list[Placement]) -> list[Placement]:
        """Archived placements that the store now says are restored (the index may lag)."""
        out = []
        for placement in archived:
            try:
                entry = self.backend.mover(placement.tier).stat(placement.key)
            except (TierctlError, OSError):
                continue
            if entry.restore_state not in ("archived", "restoring") and placement.same_content(entry):
                out.append(placement)
        return out

    def _unreadable(
        self, target: namespace.TierPath, placements: list[Placement], archived: list[Placement]
    ) -> TierctlError:
        tiers = ", ".join(sorted({p.tier for p in placements}))
        if not archived:
            return NotInNamespace(
                f"tier://{target.path}: the index places it on {tiers}, but no tier could serve it",
                hint=f"run `tierctl scan` to bring the index up to date, then `tierctl where {target.key}`",
            )
        where = ", ".join(f"{p.tier} ({p.storage_class or 'archive'}, {p.restore_state})" for p in archived)
        if any(p.restore_state == "restoring" for p in archived):
            hint = (
                "a restore is under way (hours for GLACIER, up to 48 h for DEEP_ARCHIVE); tier:// reads it"
                f" once the store has restored it — `tierctl scan` then `tierctl where {target.key}` shows it"
            )
        else:
            cache_tier = self.config.cache.tier if self.config.cache is not None else None
            readable_tier = next(
                (n for n, t in self.config.tiers.items() if t.storage_class is None and n != cache_tier),
                "hot",
            )
            hint = (
                "restore it with `tierctl apply`: a rule that places it on a readable tier (e.g."
                f" `place: [{readable_tier}, {archived[0].tier}]`) makes the plan restore it, and copy"
                " it there once restored (`tierctl plan` shows the restore;"
                f" `tierctl where {target.key}` its state)"
            )
        return ArchivedOnly(f"tier://{target.path} is archived: its only copies are on {where}", hint=hint)

    # -- tier:// is read-only -----------------------------------------------------------------
    def _read_only(self, path: Any, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyNamespace(f"tier://{self._strip_protocol(path)}: tier:// is read-only")

    rm_file = _rm = rmdir = cp_file = mkdir = makedirs = _read_only

    # -- reads recorded -------------------------------------------------------------------------
    def flush_reads(self, busy_timeout: float = 1.0) -> bool:
        """Write the reads gathered so far to the index now (they are written every few
        seconds and at exit anyway); False if the index stayed busy."""
        return self.backend.access.flush(busy_timeout=busy_timeout)


class PlacementReader:
    """Reads one object from the first placement that serves it, moving on to the next one
    if that placement turns out gone, archived or changed — also in the middle of a read."""

    def __init__(self, backend: Backend, path: str, candidates: list[Placement]) -> None:
        self.backend = backend
        self.path = path
        self.candidates = list(candidates)
        self.size = candidates[0].size if candidates else 0
        self.placement: Placement | None = None  # the one being (or last) read
        self._source: _Source | None = None
        self._recorded = False
        self.last_error: BaseException | None = None

    def start(self) -> bool:
        """Settle on the first candidate whose store holds the expected content."""
        while self.candidates:
            candidate = self.candidates.pop(0)
            try:
                mover = self.backend.mover(candidate.tier)
                entry = mover.stat(candidate.key)
            except (TierctlError, OSError) as exc:
                self.last_error = exc
                continue
            if candidate.same_content(entry) and entry.restore_state not in ("archived", "restoring"):
                self.placement, self._source = candidate, _Source(mover, candidate.key)
                return True
            log.info(
                "tier://%s: %s holds other content than the index says; skipped", self.path, candidate.tier
            )
        return False

    def read(self, start: int, end: int) -> bytes:
        while True:
            if self._source is None:
                raise NotInNamespace(f"tier://{self.path}: no placement could serve the read")
            try:
                return self._source.read(start, end)
            except _SKIPPABLE as exc:
                self.last_error = exc
                self._source.close()
                self._source = None
                if not self.start():
                    raise NotInNamespace(
                        f"tier://{self.path}: every placement failed during the read ({exc})",
                        hint="run `tierctl scan` to bring the index up to date",
                    ) from exc

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self.placement is not None and not self._recorded:
            p = self.placement
            self.backend.access.record(p.dataset, p.key, p.tier)
            self._recorded = True


class _Source:
    """One placement's bytes: ranged reads where the store serves them, else one stream read
    forward (a backward seek starts it again)."""

    def __init__(self, mover: Mover, key: str) -> None:
        self.mover = mover
        self.key = key
        self._stream: Iterator[bytes] | None = None
        self._offset = 0  # of _chunk's first byte
        self._chunk = b""

    def read(self, start: int, end: int) -> bytes:
        if self.mover.capabilities.ranged_reads:
            return self.mover.read_range(self.key, start, end)
        if self._stream is None or start < self._offset:
            self.close()
            self._stream, self._offset, self._chunk = self.mover.read_chunks(self.key), 0, b""
        out = bytearray()
        while True:
            chunk_end = self._offset + len(self._chunk)
            lo, hi = max(start, self._offset), min(end, chunk_end)
            if lo < hi:
                out += self._chunk[lo - self._offset : hi - self._offset]
            if chunk_end >= end:
                return bytes(out)
            following = next(self._stream, b"")
            if not following:
                return bytes(out)
            self._offset, self._chunk = chunk_end, following

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
        self._stream = None


class TierFile(AbstractBufferedFile):  # type: ignore[misc]
    """A read-only buffered file whose ranges come from a :class:`PlacementReader`."""

    def __init__(self, fs: TierFileSystem, path: str, reader: PlacementReader, **kwargs: Any) -> None:
        self.reader = reader
        super().__init__(fs, path, mode="rb", size=reader.size, **kwargs)

    @property
    def tier(self) -> str | None:
        """The tier being (or last) read."""
        return self.reader.placement.tier if self.reader.placement is not None else None

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.reader.read(start, min(end, self.size))

    def close(self) -> None:
        if not self.closed:
            self.reader.close()
        super().close()
