"""The read-through cache (``cache:`` in the policy file): an object that ``tier://`` reads from
a slow or remote tier is copied, verified, to a local cache tier and recorded in the index, so
the next read is local. Beyond ``max_size`` the least recently read cached objects are
evicted — each only while another readable copy of the same content exists on a kept tier
(checked on the store, not just in the index), and every delete is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

from tierctl.errors import ObjectNotFound, TierctlError
from tierctl.model import Entry, Placement
from tierctl.movers.transfer import copy_verified
from tierctl.policies.model import CacheSettings
from tierctl.tierfs import namespace

if TYPE_CHECKING:
    from tierctl.tierfs.backend import Backend

log = logging.getLogger(__name__)

RECORD_TIMEOUT = 5.0  # seconds to wait for the index to record a fill or an eviction


class ReadCache:
    """Fills and evicts the cache tier of one policy file's namespace."""

    def __init__(self, settings: CacheSettings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        self.filled = 0
        self.evicted = 0

    def wants(self, placement: Placement) -> bool:
        """Whether a read of ``placement`` should go through the cache."""
        return placement.tier in self.settings.sources and placement.size <= self.settings.max_size

    def fill(self, source: Placement) -> Placement | None:
        """Copy ``source`` to the cache tier, verified, and record it; None when that fails
        (the read then goes to ``source``: a cache never fails a read)."""
        backend, tier = self.backend, self.settings.tier
        cache_mover = backend.mover(tier)
        expected = Entry(source.key, source.size, source.mtime)
        try:
            copied = copy_verified(
                backend.mover(source.tier),
                source.key,
                cache_mover,
                expected=expected,
                algorithm=backend.config.digest_algorithm,
            )
        except (TierctlError, OSError) as exc:
            log.warning("tier:// cache: not caching %s from %s: %s", source.key, source.tier, exc)
            return None
        now = time.time()
        try:
            with backend.index_write(RECORD_TIMEOUT) as index:
                index.record_copy(source.dataset, source.key, tier, copied.entry, copied.checksum, now)
        except Exception as exc:
            # An unrecorded copy would sit outside the size bound: take it back.
            log.warning("tier:// cache: cannot record %s (%s); removing the copy", source.key, exc)
            with contextlib.suppress(TierctlError, OSError):
                cache_mover.delete(source.key)
            return None
        self.filled += 1
        self.evict(keep=(source.dataset, source.key))
        return Placement(
            source.dataset,
            source.key,
            tier,
            copied.entry.size,
            copied.entry.mtime,
            copied.checksum,
            first_seen=now,
            verified_at=now,
        )

    def usage(self) -> int:
        """Bytes on the cache tier, as the index knows them."""
        with self.backend.index_read() as conn:
            return sum(
                conn.execute(
                    "SELECT coalesce(sum(size), 0) FROM placements"
                    " WHERE dataset = ? AND tier = ? AND state = 'present'",
                    (dataset, self.settings.tier),
                ).fetchone()[0]
                for dataset in self.backend.config.datasets
            )

    def evict(self, keep: tuple[str, str] | None = None) -> int:
        """Evict least recently read objects until the cache holds at most ``max_size``
        bytes; returns the bytes evicted. ``keep``: (dataset, key) not to evict."""
        excess = self.usage() - self.settings.max_size
        if excess <= 0:
            return 0
        freed = 0
        for victim in self._by_last_read():
            if freed >= excess:
                break
            if (victim.dataset, victim.key) != keep and self._evict_one(victim):
                freed += victim.size
        return freed

    def _by_last_read(self) -> list[Placement]:
        tier = self.settings.tier
        with self.backend.index_read() as conn:
            rows = [
                Placement(*row)
                for dataset in self.backend.config.datasets
                for row in conn.execute(
                    f"SELECT {namespace.COLUMNS} FROM placements"
                    " WHERE dataset = ? AND tier = ? AND state = 'present'",
                    (dataset, tier),
                )
            ]
        return sorted(rows, key=lambda p: (p.atime if p.atime is not None else p.first_seen, p.key))

    def _evict_one(self, cached: Placement) -> bool:
        backend = self.backend
        with backend.index_read() as conn:
            placements = namespace.object_placements(conn, cached.dataset, cached.key)
        if not self._copy_elsewhere(cached, placements):
            return False
        mover = backend.mover(self.settings.tier)
        try:
            current = mover.stat(cached.key)
            if not cached.same_content(current):
                return False  # not what the index says: leave it to a scan
            mover.delete(cached.key)
        except ObjectNotFound:
            pass  # already gone (another process evicted it): just record it
        except (TierctlError, OSError) as exc:
            log.warning("tier:// cache: cannot evict %s: %s", cached.key, exc)
            return False
        try:
            with backend.index_write(RECORD_TIMEOUT) as index:
                index.record_delete(cached.dataset, cached.key, self.settings.tier)
        except Exception as exc:
            log.warning("tier:// cache: evicted %s but could not record it (%s)", cached.key, exc)
        self.evicted += 1
        return True

    def _copy_elsewhere(self, cached: Placement, placements: list[Placement]) -> bool:
        """Whether a readable copy of the current content lies on another tier, live."""
        readable, _archived = namespace.read_order(self.backend.config, placements)
        for other in readable:
            if other.tier == self.settings.tier or not other.same_content(cached):
                continue
            try:
                if other.same_content(self.backend.mover(other.tier).stat(other.key)):
                    return True
            except (TierctlError, OSError):
                continue
        return False
