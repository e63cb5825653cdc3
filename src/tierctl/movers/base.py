"""The mover contract: a small required core plus optional abilities behind capability flags.

Required: ``list``, ``stat``, ``read_chunks``, ``write``, ``delete``.
Optional (``Capabilities`` says which exist): ``server_side_copy``, ``set_storage_class``,
``restore``. Callers check the flag and fall back; an optional method that is called
without its flag raises :class:`Unsupported`.

Keys are relative to the tier root, '/'-separated, and pass :func:`check_key`.
"""

from __future__ import annotations

import abc
import builtins
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from tierctl.errors import MoverError, UnsafeKey
from tierctl.model import Entry

CHUNK_SIZE = 1 << 20

# ``known(key)``: the entry the caller last recorded for ``key`` on this tier (the index's
# placement), or None. See :meth:`Mover.list`.
KnownEntries = Callable[[str], "Entry | None"]


@dataclass(frozen=True)
class Capabilities:
    """What a mover can do beyond the required core.

    ``native_digests``: digest algorithms the store reports for a written object without
    reading it back (S3: ``md5`` for single-part uploads; GCS: ``md5``, ``crc32c``), so a
    copy can be verified without a second read.
    ``atomic_write``: a reader never sees a half-written object under its final key.
    ``attributes``: POSIX attributes the store holds natively, in rclone's metadata keys
    (:mod:`.attributes`: ``mode``, ``uid``, ``gid``, plus ``owner``/``group`` names):
    ``write(metadata=...)`` and ``set_attributes`` apply them, ``attributes`` and
    ``list_attributes`` report them. ``user_metadata``: ``write`` records the metadata
    keys the store does not hold natively as the object's user metadata (S3
    ``x-amz-meta-*``, GCS custom metadata), and ``attributes`` reads them back.
    """

    server_side_copy: bool = False
    set_storage_class: bool = False
    restore: bool = False
    max_connections: int = 16
    native_digests: tuple[str, ...] = ()
    atomic_write: bool = True
    attributes: tuple[str, ...] = ()
    user_metadata: bool = False
    # ``ranged_reads``: :meth:`Mover.read_range` asks the store for just that range; without
    # it the default reads from byte 0 and skips, so a reader that seeks should stream.
    ranged_reads: bool = False
    # ``read_metadata``: what ``list``/``stat`` report when ``Mover.want_metadata`` asks:
    # "tags" (object tags), "metadata" (user metadata). A store that has no tags reports an
    # empty mapping (its objects have none); what is not declared stays None (unknown).
    read_metadata: tuple[str, ...] = ()
    # ``verified_writes``: a write that returns has stored exactly the bytes it was given, so
    # a copy is verified by the written byte count and the digest of the stream, without
    # reading the destination back. True for local disk file systems, where a read-back
    # would only read the page cache the write just filled; never for network or FUSE
    # mounts, whose reads go back to a server.
    verified_writes: bool = False
    # ``writable``: False for a source-only tier (``hdfs://``: nothing it writes could keep
    # the content mtime); ``write`` raises :class:`Unsupported`, ``delete`` still works. The
    # registry's ``MoverSpec.read_only`` says the same before the mover is built.
    writable: bool = True
    # ``conditional_create``: ``write`` takes ``if_absent=True`` and then never replaces an
    # object: it raises :class:`ObjectExists` and leaves the one at ``key`` untouched. The
    # check and the write are one atomic step where the store enforces it (S3
    # ``If-None-Match: *``, once probed); the mover documents where it is not. Callers that
    # must not overwrite use it instead of a ``stat`` before every write. Without this flag
    # ``write`` does not take ``if_absent`` at all (a TypeError, never an overwrite).
    conditional_create: bool = False


class Unsupported(MoverError):
    """The mover does not offer this optional ability."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Anything that might be unsafe: empty key, control characters, a leading or trailing '/',
# '//', or a '.' / '..' segment. Keys that match get the exact checks (and messages) below.
_SUSPECT = re.compile(r"\A\Z|[\x00-\x1f\x7f]|\A/|/\Z|//|(?:\A|/)\.\.?(?:/|\Z)")


def check_key(key: str) -> str:
    """Return ``key`` if it is safe on every store, else raise :class:`UnsafeKey`.

    Refused: empty keys, absolute keys, ``.``/``..`` or empty segments, NUL and other
    control characters, and keys that are not in Unicode NFC (two spellings of one name
    would become two objects on some stores and one on others).
    """
    if not _SUSPECT.search(key) and (key.isascii() or unicodedata.is_normalized("NFC", key)):
        return key  # the common case: one regex scan, no per-character Python
    if not key or key.startswith("/") or key.endswith("/"):
        raise UnsafeKey(f"unsafe key {key!r}: must be a relative path to a file")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise UnsafeKey(f"unsafe key {key!r}: empty, '.' or '..' segment")
    if _CONTROL.search(key):
        raise UnsafeKey(f"unsafe key {key!r}: control character")
    if not unicodedata.is_normalized("NFC", key):
        raise UnsafeKey(
            f"unsafe key {key!r}: not in Unicode NFC",
            hint="rename the file to its NFC form; tierctl keeps one spelling per name",
        )
    return key


class Mover(abc.ABC):
    """One tier's storage. Instances are used from several threads at once."""

    url: str
    capabilities: Capabilities = Capabilities()
    # Set by the caller before ``list``/``stat``: "tags" and/or "metadata" to have entries
    # carry them (where ``capabilities.read_metadata``). Off by default: reading them may
    # cost a request per object.
    want_metadata: frozenset[str] = frozenset()

    @abc.abstractmethod
    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        """Every object whose key starts with ``prefix``, recursively, sorted by key
        (code-point order, which is UTF-8 byte order). Keys failing ``check_key`` are
        skipped; the caller learns of them through ``skipped_keys``.

        Every entry carries the content mtime, the same value :meth:`stat` reports. A store
        whose listing lacks it (S3 keeps it in user metadata, which ListObjects omits) takes
        it from ``known`` when the listing proves the object unchanged since (same size and
        ``etag`` version token), and asks the store only for the others; so are tags and
        metadata that ``want_metadata`` asks for and the listing lacks."""

    @abc.abstractmethod
    def stat(self, key: str) -> Entry:
        """The object's current entry; :class:`ObjectNotFound` if absent."""

    @abc.abstractmethod
    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """The object's bytes, streamed; memory stays bounded by ``chunk_size``."""

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start`` (inclusive) to ``end`` (exclusive) of the object; fewer when it is
        shorter. This default streams :meth:`read_chunks` from byte 0 and skips to ``start``
        (correct, as slow as reading the prefix); movers whose store serves ranges override
        it and set ``capabilities.ranged_reads``."""
        if end <= start:
            return b""
        out = bytearray()
        position = 0
        chunks = self.read_chunks(key)
        try:
            for chunk in chunks:
                if position + len(chunk) > start:
                    out += chunk[max(0, start - position) : end - position]
                position += len(chunk)
                if position >= end:
                    break
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return bytes(out)

    @abc.abstractmethod
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
        """Store ``chunks`` under ``key`` (replacing any object there) with the content
        mtime ``mtime``, atomically where ``capabilities.atomic_write``. With ``durable``
        the bytes are on stable storage when this returns (the caller may then delete
        the source). Returns the stored entry, with any native checksum.

        ``metadata``: attributes named in ``capabilities.attributes`` are applied before
        the object appears under ``key``; the mode always, an owner or group only where
        the store lets this writer set it (a refused or unknown owner leaves the writer's,
        as ``cp -p`` does: callers that must know compare :meth:`attributes` afterwards).
        The other keys are recorded as user metadata where ``capabilities.user_metadata``,
        else ignored. The content mtime is ``mtime``, never a ``metadata`` key.

        ``if_absent`` (only where ``capabilities.conditional_create``; other movers' ``write``
        does not take it): create, never replace. An object already at ``key`` is left
        untouched and the write raises :class:`ObjectExists` (the chunks may be partly read)."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; :class:`ObjectNotFound` if absent."""

    # -- optional abilities -------------------------------------------------------------
    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        """Copy inside one store without moving bytes through this process, keeping the
        content mtime; ``storage_class`` is the copy's class (default: the source's).
        :class:`Unsupported` when ``dst`` is not in the same store."""
        raise Unsupported(f"{self.url}: no server-side copy")

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        """Change the object's storage class in place; content and content mtime stay."""
        raise Unsupported(f"{self.url}: cannot change storage classes")

    def restore(self, key: str, *, days: int, tier: str) -> None:
        """Start bringing an archived object back to readable for ``days`` days (``tier``:
        the store's retrieval speed). Returns at once; ``stat().restore_state`` says when
        the object is readable ("restored"). Asking again while restoring is not an error."""
        raise Unsupported(f"{self.url}: cannot restore archived objects")

    def attributes(self, key: str) -> dict[str, str]:
        """The object's POSIX attributes (see ``Capabilities.attributes``), or those its user
        metadata records; empty where the store keeps neither."""
        return {}

    def list_attributes(self, prefix: str = "") -> Iterator[tuple[str, dict[str, str]]]:
        """``(key, attributes())`` for every object :meth:`list` yields, in its order, from
        listings (no request per object). Only where ``capabilities.attributes``."""
        raise Unsupported(f"{self.url}: no attributes in listings")

    def set_attributes(self, key: str, attributes: Mapping[str, str]) -> None:
        """Apply ``attributes`` to the object in place, as ``write(metadata=...)`` would;
        content and content mtime stay. Only where ``capabilities.attributes``."""
        raise Unsupported(f"{self.url}: cannot set attributes")

    def skipped_keys(self) -> list[str]:
        """Names the last ``list`` passed over because they are unsafe or not regular files."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections; the mover is not used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class MoverWrapper(Mover):
    """A mover around another (retries, rate limits): every call passes to ``inner``; a
    wrapper overrides only what it changes. Mover-specific extras of ``inner`` (e.g.
    ``RcloneMover.bulk_copy``, ``LocalMover.removed_temp_files``) stay reachable."""

    def __init__(self, inner: Mover) -> None:
        self.inner = inner
        self.url = inner.url
        self.capabilities = inner.capabilities

    @property  # type: ignore[override]
    def want_metadata(self) -> frozenset[str]:
        return self.inner.want_metadata

    @want_metadata.setter
    def want_metadata(self, kinds: frozenset[str]) -> None:
        self.inner.want_metadata = kinds

    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        return self.inner.list(prefix, known=known)

    def stat(self, key: str) -> Entry:
        return self.inner.stat(key)

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        return self.inner.read_chunks(key, chunk_size)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self.inner.read_range(key, start, end)

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
        # ``if_absent`` only when asked: the inner write of a mover without
        # ``capabilities.conditional_create`` does not take it.
        return self.inner.write(
            key,
            chunks,
            size=size,
            mtime=mtime,
            durable=durable,
            storage_class=storage_class,
            metadata=metadata,
            **({"if_absent": True} if if_absent else {}),
        )

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        return self.inner.server_side_copy(src_key, dst, dst_key, storage_class=storage_class)

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        return self.inner.set_storage_class(key, storage_class)

    def restore(self, key: str, *, days: int, tier: str) -> None:
        self.inner.restore(key, days=days, tier=tier)

    def attributes(self, key: str) -> dict[str, str]:
        return self.inner.attributes(key)

    def list_attributes(self, prefix: str = "") -> Iterator[tuple[str, dict[str, str]]]:
        return self.inner.list_attributes(prefix)

    def set_attributes(self, key: str, attributes: Mapping[str, str]) -> None:
        self.inner.set_attributes(key, attributes)

    def skipped_keys(self) -> builtins.list[str]:
        return self.inner.skipped_keys()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)
