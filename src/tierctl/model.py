"""Plain data shared by every layer: what a store lists, what the index holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Two mtimes closer than this are the same instant: stores keep mtimes at different
# precisions (local ns, S3/GCS metadata ms, HDFS ms).
MTIME_WINDOW = 0.001


@dataclass(frozen=True, slots=True)
class Entry:
    """One object as a store lists it. ``key`` is relative to the tier root, '/'-separated.

    ``checksum`` is ``"algo:hex"`` when the store reports one it vouches for (S3 single-part
    ETag as ``md5:...``, GCS ``md5:``/``crc32c:``), else None.
    ``etag`` is an opaque version token that changes on every write of the key, metadata
    and storage-class changes included (S3: ``<ETag>@<Last-Modified epoch s>``, GCS: the
    generation).
    ``restore_state`` is set for objects in an archive storage class (S3 GLACIER,
    DEEP_ARCHIVE): ``"archived"`` (not readable), ``"restoring"``, ``"restored"`` (a readable
    temporary copy exists); None for readable classes or when the store did not say.
    """

    key: str
    size: int
    mtime: float
    checksum: str | None = None
    storage_class: str | None = None
    etag: str | None = None
    restore_state: str | None = None
    atime: float | None = None  # last access, where the store keeps one (local atime)
    # Object tags (S3 tagging) and user metadata (S3 x-amz-meta-*, GCS metadata, local
    # xattrs/sidecar), where the store has them and the listing carries them; None: unknown.
    tags: Mapping[str, str] | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Placement:
    """One object on one tier, as the index records it."""

    dataset: str
    key: str
    tier: str
    size: int
    mtime: float
    checksum: str | None = None
    storage_class: str | None = None
    etag: str | None = None
    state: str = "present"  # present | gone
    first_seen: float = 0.0
    verified_at: float | None = None
    changed_at: float | None = None
    atime: float | None = None  # last access, where known
    restore_state: str | None = None  # archived | restoring | restored, for archive classes
    # Object tags and user metadata as last read from the store (or carried over by a copy);
    # None: not known (the store cannot report them, or no scan has read them yet).
    tags: Mapping[str, str] | None = None
    metadata: Mapping[str, str] | None = None

    @property
    def readable(self) -> bool:
        """Not in an archive class awaiting restore: a copy may read it now."""
        return self.restore_state not in ("archived", "restoring")

    def same_content(self, other: Placement | Entry) -> bool:
        """Same version of the object: equal size and mtime, and equal checksums when both known."""
        if self.size != other.size or abs(self.mtime - other.mtime) > MTIME_WINDOW:
            return False
        if self.checksum and other.checksum:
            algo_a, _, _ = self.checksum.partition(":")
            algo_b, _, _ = other.checksum.partition(":")
            if algo_a == algo_b:
                return self.checksum == other.checksum
        return True


@dataclass(frozen=True, slots=True)
class ObjectSnapshot:
    """Everything the planner knows of one object: its placements (present ones only)."""

    dataset: str
    key: str
    placements: tuple[Placement, ...]
    first_seen: float = 0.0

    @property
    def tiers(self) -> frozenset[str]:
        return frozenset(p.tier for p in self.placements)


@dataclass(slots=True)
class ScanReport:
    """What one scan of one (dataset, tier) found."""

    dataset: str
    tier: str
    listed: int = 0
    new: int = 0
    changed: int = 0
    gone: int = 0
    unchanged: int = 0
    bytes_listed: int = 0
    errors: list[str] = field(default_factory=list)
