"""The streaming scan merge: one tier's sorted listing against the index's sorted rows of
that tier, in one pass, unchanged placements untouched; and the codec of the
``placements.tags`` / ``.meta`` columns.
"""

from __future__ import annotations

import itertools
import json
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
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
# What the merge reads of each present placement of the scanned tier, in key order.
DETAIL_COLUMNS = "key, size, mtime, checksum, state, storage_class, etag, atime, restore_state, tags, meta"
# A placement as a stat listing's file would be if the scan had nothing to write for it:
# same key, size, mtime and atime, and no storage class or etag (a plain file has neither;
# :func:`_classify` would write them as None). The 'x' equals no listed atime.
SIGNATURE_COLUMNS = (
    "key, size, mtime, CASE WHEN storage_class IS NULL AND etag IS NULL THEN atime ELSE 'x' END"
)

# A plain file as a stat listing gives it: (key, size, mtime, atime); LocalMover.stat_batches.
FileStat = tuple[str, int, float, float]
_SIZE = operator.itemgetter(1)
FILES_PER_INSERT = 100  # 403 parameters a statement: below SQLite's oldest limit, 999
_INSERT_FILES = (
    "INSERT OR REPLACE INTO placements (dataset, tier, first_seen, key, size, mtime, atime, state) VALUES "
)
_FILE_VALUES = "(?1, ?2, ?3, ?, ?, ?, ?, 'present')"


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


class _Writes:
    """The writes one merge has pending, flushed in one transaction per :data:`BATCH`."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        dataset: str,
        tier: str,
        now: float,
    ) -> None:
        self.transaction = transaction
        self.inserts: list[tuple[Any, ...]] = []
        self.changes: list[tuple[Any, ...]] = []
        self.metadata: list[tuple[Any, ...]] = []
        self.gone: list[tuple[Any, ...]] = []
        # New files of a stat listing, as listed: (key, size, mtime, atime); see _insert_files.
        self.new_files: list[FileStat] = []
        self.context = (dataset, tier, now)

    def pending(self) -> int:
        return (
            len(self.inserts) + len(self.changes) + len(self.metadata) + len(self.gone) + len(self.new_files)
        )

    def flush_if_full(self) -> None:
        if self.pending() >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending():
            return
        with self.transaction() as tx:
            _insert_files(tx, self.context, self.new_files)
            tx.executemany(
                f"INSERT OR REPLACE INTO placements ({PLACEMENT_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'present', ?, NULL, NULL, ?, ?, ?, ?)",
                self.inserts,
            )
            # New content: tags and metadata not read with it are unknown (NULL).
            tx.executemany(
                "UPDATE placements SET size = ?, mtime = ?, checksum = ?, storage_class = ?, etag = ?,"
                " atime = coalesce(?, atime), restore_state = ?, tags = ?, meta = ?, state = 'present',"
                " verified_at = NULL, changed_at = ?"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                self.changes,
            )
            tx.executemany(
                "UPDATE placements SET checksum = coalesce(?, checksum), storage_class = ?, etag = ?,"
                " atime = coalesce(?, atime), restore_state = coalesce(?, restore_state),"
                " tags = coalesce(?, tags), meta = coalesce(?, meta),"
                " changed_at = coalesce(?, changed_at)"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                self.metadata,
            )
            tx.executemany(
                "UPDATE placements SET state = 'gone', changed_at = ?"
                " WHERE dataset = ? AND key = ? AND tier = ?",
                self.gone,
            )
        for pending in (self.inserts, self.changes, self.metadata, self.gone, self.new_files):
            pending.clear()


def _insert_files(tx: sqlite3.Connection, context: tuple[str, str, float], files: list[FileStat]) -> None:
    """Insert new files :data:`FILES_PER_INSERT` rows per statement: Python's executemany
    costs about a microsecond per execution, more than SQLite's insert of the row. The
    dataset, tier and time are bound once per statement (?1-?3; a bare ? numbers on from
    the largest number so far), no None is bound (binding None is slow in sqlite3)."""
    whole = len(files) - len(files) % FILES_PER_INSERT
    groups = (
        context + tuple(itertools.chain.from_iterable(files[start : start + FILES_PER_INSERT]))
        for start in range(0, whole, FILES_PER_INSERT)
    )
    tx.executemany(_INSERT_FILES + ", ".join([_FILE_VALUES] * FILES_PER_INSERT), groups)
    tx.executemany(_INSERT_FILES + _FILE_VALUES, map(context.__add__, files[whole:]))


def merge_listing(
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    report: ScanReport,
    rows: Iterable[tuple[Any, ...]],
    entries: Iterable[Entry],
    now: float,
    allow_empty: bool,
) -> None:
    """Merge ``entries`` (one tier's sorted listing) with ``rows`` (the index's present
    placements of that tier under the same prefix, :data:`DETAIL_COLUMNS`, sorted by key,
    from a reader connection), writing new, changed and gone placements in batches of
    :data:`BATCH` per ``transaction``."""
    writes = _Writes(transaction, report.dataset, report.tier, now)
    existing = iter(rows)
    row = _merge_entries(writes, report, next(existing, None), existing, entries, check_order=True)
    _finish(writes, report, row, existing, allow_empty)


def merge_stats(
    transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
    report: ScanReport,
    signatures: Iterable[tuple[Any, ...]],
    details: Callable[[str, str], Iterable[tuple[Any, ...]]],
    batches: Iterable[list[FileStat]],
    now: float,
    allow_empty: bool,
) -> None:
    """:func:`merge_listing` for a listing of plain files in batches of ``(key, size, mtime,
    atime)`` (``LocalMover.stat_batches``), with the same outcome, but no ``Entry`` and no
    Python per unchanged file.

    ``signatures``: :data:`SIGNATURE_COLUMNS` of the same rows, which equals a file's tuple
    exactly when the file is unchanged and its row needs no write. A batch whose rows are
    equal, as one C-level list comparison, is counted unchanged; a batch with no rows left
    is inserted as listed; any other batch goes through the entry merge, with its rows'
    :data:`DETAIL_COLUMNS` from ``details(first_key, last_key)`` (inclusive), which must read
    the same snapshot as ``signatures``."""
    writes = _Writes(transaction, report.dataset, report.tier, now)
    cursor = iter(signatures)
    ahead: list[tuple[Any, ...]] = []  # signature rows read but not yet merged, in key order
    previous = ""
    listed = 0
    for batch in batches:
        count = len(batch)
        if not count:
            continue
        first, last = batch[0][0], batch[-1][0]
        if first <= previous and listed:
            raise MoverError(f"listing of tier {report.tier!r} is not sorted at {first!r} (a mover bug)")
        previous = last
        listed += count
        report.bytes_listed += sum(map(_SIZE, batch))
        if len(ahead) < count:
            ahead.extend(itertools.islice(cursor, count - len(ahead)))
        if ahead[:count] == batch:
            del ahead[:count]
            report.unchanged += count
            continue
        # Rows up to this batch's last key belong to it (or are gone before it).
        mine = [r for r in ahead if r[0] <= last]
        del ahead[: len(mine)]
        if not ahead:
            for row in cursor:
                if row[0] > last:
                    ahead.append(row)
                    break
                mine.append(row)
        if not mine:
            writes.new_files.extend(batch)
            report.new += count
        else:
            detail = iter(details(min(mine[0][0], first), last))
            entries = [Entry(key, size, mtime, atime=atime) for key, size, mtime, atime in batch]
            left = _merge_entries(writes, report, next(detail, None), detail, entries, check_order=False)
            while left is not None:  # not possible for rows read with the signatures: safe anyway
                writes.gone.append((now, report.dataset, left[0], report.tier))
                report.gone += 1
                left = next(detail, None)
        writes.flush_if_full()
    report.listed += listed
    rest = itertools.chain(ahead, cursor)
    _finish(writes, report, next(rest, None), rest, allow_empty)


def _merge_entries(
    writes: _Writes,
    report: ScanReport,
    row: tuple[Any, ...] | None,
    existing: Iterator[tuple[Any, ...]],
    entries: Iterable[Entry],
    *,
    check_order: bool,
) -> tuple[Any, ...] | None:
    """Merge ``entries`` with the rows ``row`` (the next one) and ``existing`` (the rest);
    returns the first row not merged (None: none left)."""
    dataset, tier, now = report.dataset, report.tier, writes.context[2]
    previous = ""
    for entry in entries:
        key = entry.key
        if check_order:
            if key <= previous and report.listed:
                raise MoverError(f"listing of tier {tier!r} is not sorted at {key!r} (a mover bug)")
            previous = key
            report.listed += 1
            report.bytes_listed += entry.size
        while row is not None and row[0] < key:
            writes.gone.append((now, dataset, row[0], tier))
            report.gone += 1
            row = next(existing, None)
        if row is not None and row[0] == key:
            _classify(report, row, entry, now, writes.changes, writes.metadata, writes.inserts)
            row = next(existing, None)
        else:
            writes.inserts.append(_insert_row(dataset, tier, entry, now))
            report.new += 1
        writes.flush_if_full()
    return row


def _finish(
    writes: _Writes,
    report: ScanReport,
    row: tuple[Any, ...] | None,
    existing: Iterator[tuple[Any, ...]],
    allow_empty: bool,
) -> None:
    """Rows past the end of the listing are gone, unless the tier listed nothing at all."""
    now, dataset, tier = writes.context[2], report.dataset, report.tier
    if report.listed == 0 and row is not None and not allow_empty:
        missing = 1 + sum(1 for _ in existing)
        report.errors.append(
            f"tier {tier!r} lists no objects under dataset {dataset!r}, but the index knows "
            f"{missing}; not marking them gone (is the tier mounted?). "
            "Re-run with --allow-empty if they really were removed."
        )
        row = None
    while row is not None:
        writes.gone.append((now, dataset, row[0], tier))
        report.gone += 1
        writes.flush_if_full()
        row = next(existing, None)
    writes.flush()


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
