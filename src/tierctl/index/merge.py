"""The streaming scan merge: one tier's sorted listing against the index's sorted rows of
that tier, in one pass, unchanged placements untouched; and the codec of the
``placements.tags`` / ``.meta`` columns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from tierctl.errors import MoverError
from tierctl.model import MTIME_WINDOW, Entry, Placement, ScanReport

BATCH = 10_000
PLACEMENT_COLUMNS = (
    "dataset, key, tier, size, mtime, checksum, storage_class, etag, state,"
    " first_seen, verified_at, changed_at, atime, restore_state, tags, meta"
)


def encode_mapping(values: Mapping[str, str] | None) -> str | None:
    """Tags or metadata as stored in ``placements.tags`` / ``.meta``: a JSON object with
    sorted keys (one spelling per content, so a scan compares strings, not parsed JSON);
    None (SQL NULL) when not known."""
    if values is None:
        return None
    if not values:
        return "{}"
    return json.dumps(dict(values), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=4096)
def decode_mapping(text: str | None) -> Mapping[str, str] | None:
    """The stored JSON back as a read-only mapping (cached: many objects share one set of
    tags). A value that is not a JSON object of strings reads as not known."""
    if text is None:
        return None
    try:
        values = json.loads(text)
    except ValueError:
        return None
    if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
        return None
    return MappingProxyType(values)


def placement_from_row(row: tuple[Any, ...]) -> Placement:
    """A row of :data:`PLACEMENT_COLUMNS` as a Placement (tags and meta decoded)."""
    dataset, key, tier, size, mtime, checksum, storage_class, etag, state = row[:9]
    first_seen, verified_at, changed_at, atime, restore_state, tags, meta = row[9:]
    return Placement(
        dataset,
        key,
        tier,
        size,
        mtime,
        checksum,
        storage_class,
        etag,
        state,
        first_seen,
        verified_at,
        changed_at,
        atime,
        restore_state,
        decode_mapping(tags),
        decode_mapping(meta),
    )


def merge_listing(
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    report: ScanReport,
    rows: Iterable[tuple[Any, ...]],
    entries: Iterable[Entry],
    now: float,
    allow_empty: bool,
) -> None:
    """Merge ``entries`` (one tier's sorted listing) with ``rows`` (the index's placements of
    that tier under the same prefix, sorted by key, from a reader connection), writing new,
    changed and gone placements in batches of :data:`BATCH` per ``transaction``."""
    dataset, tier = report.dataset, report.tier
    inserts: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    metadata: list[tuple[Any, ...]] = []
    gone: list[tuple[Any, ...]] = []

    def flush() -> None:
        if not (inserts or changes or metadata or gone):
            return
        with transaction() as tx:
            tx.executemany(
                f"INSERT OR REPLACE INTO placements ({PLACEMENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'present', ?, NULL, NULL, ?, ?, ?, ?)",
                inserts,
            )
            # New content: tags and metadata not read with it are unknown (NULL).
            tx.executemany(
                "UPDATE placements SET size = ?, mtime = ?, checksum = ?, storage_class = ?, etag = ?,"
                " atime = coalesce(?, atime), restore_state = ?, tags = ?, meta = ?, state = 'present',"
                " verified_at = NULL, changed_at = ?"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                changes,
            )
            tx.executemany(
                "UPDATE placements SET checksum = coalesce(?, checksum), storage_class = ?, etag = ?,"
                " atime = coalesce(?, atime), restore_state = coalesce(?, restore_state),"
                " tags = coalesce(?, tags), meta = coalesce(?, meta),"
                " changed_at = coalesce(?, changed_at)"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                metadata,
            )
            tx.executemany(
                "UPDATE placements SET state = 'gone', changed_at = ?"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                gone,
            )
        for pending in (inserts, changes, metadata, gone):
            pending.clear()

    existing = iter(rows)
    row = next(existing, None)
    previous = ""
    present_missing = 0
    for entry in entries:
        if entry.key <= previous and report.listed:
            raise MoverError(f"listing of tier {tier!r} is not sorted at {entry.key!r} (a mover bug)")
        previous = entry.key
        report.listed += 1
        report.bytes_listed += entry.size
        while row is not None and row[0] < entry.key:
            if row[4] == "present":
                gone.append((now, dataset, row[0], tier))
                report.gone += 1
            row = next(existing, None)
        if row is not None and row[0] == entry.key:
            _classify(report, row, entry, now, changes, metadata, inserts)
            row = next(existing, None)
        else:
            inserts.append(_insert_row(dataset, tier, entry, now))
            report.new += 1
        if len(inserts) + len(changes) + len(metadata) + len(gone) >= BATCH:
            flush()
    while row is not None:
        if row[4] == "present":
            gone.append((now, dataset, row[0], tier))
            present_missing += 1
        row = next(existing, None)
    if report.listed == 0 and present_missing and not allow_empty:
        gone.clear()
        report.errors.append(
            f"tier {tier!r} lists no objects under dataset {dataset!r}, but the index knows "
            f"{present_missing}; not marking them gone (is the tier mounted?). "
            "Re-run with --allow-empty if they really were removed."
        )
    else:
        report.gone += present_missing
    flush()


def _classify(
    report: ScanReport,
    row: tuple[Any, ...],
    entry: Entry,
    now: float,
    changes: list[tuple[Any, ...]],
    metadata: list[tuple[Any, ...]],
    inserts: list[tuple[Any, ...]],
) -> None:
    key, size, mtime, checksum, state, storage_class, etag, atime, restore_state, tags, meta = row
    dataset, tier = report.dataset, report.tier
    if state != "present":
        inserts.append(_insert_row(dataset, tier, entry, now))
        report.new += 1
        return
    content_changed = (
        size != entry.size
        or abs(mtime - entry.mtime) > MTIME_WINDOW
        or (
            checksum is not None
            and entry.checksum is not None
            and checksum.partition(":")[0] == entry.checksum.partition(":")[0]
            and checksum != entry.checksum
        )
    )
    if content_changed:
        changes.append(
            (
                entry.size,
                entry.mtime,
                entry.checksum,
                entry.storage_class,
                entry.etag,
                entry.atime,
                entry.restore_state,
                encode_mapping(entry.tags),
                encode_mapping(entry.metadata),
                now,
                dataset,
                key,
                tier,
            )
        )
        report.changed += 1
        return
    # Tags/metadata: only entries that carry them cost an encoding and a compare.
    new_tags = new_meta = None
    retagged = False
    if entry.tags is not None:
        new_tags = encode_mapping(entry.tags)
        retagged = new_tags != tags and tags is not None
        new_tags = None if new_tags == tags else new_tags
    if entry.metadata is not None:
        new_meta = encode_mapping(entry.metadata)
        retagged = retagged or (new_meta != meta and meta is not None)
        new_meta = None if new_meta == meta else new_meta
    if retagged:
        report.changed += 1
    else:
        report.unchanged += 1
    if (
        entry.storage_class != storage_class
        or entry.etag != etag
        or (entry.checksum is not None and checksum is None)
        or (entry.atime is not None and entry.atime != atime)
        or (entry.restore_state is not None and entry.restore_state != restore_state)
        or new_tags is not None
        or new_meta is not None
    ):
        metadata.append(
            (
                entry.checksum,
                entry.storage_class,
                entry.etag,
                entry.atime,
                entry.restore_state,
                new_tags,
                new_meta,
                now if retagged else None,
                dataset,
                key,
                tier,
            )
        )


def _insert_row(dataset: str, tier: str, entry: Entry, now: float) -> tuple[Any, ...]:
    return (
        dataset,
        entry.key,
        tier,
        entry.size,
        entry.mtime,
        entry.checksum,
        entry.storage_class,
        entry.etag,
        now,
        entry.atime,
        entry.restore_state,
        encode_mapping(entry.tags),
        encode_mapping(entry.metadata),
    )
