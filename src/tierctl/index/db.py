"""The index: one SQLite file (WAL), one row per placement.

Writes happen on the calling thread in explicit transactions, batched; readers that must
see a stable view while the writer works (a scan's merge-join) use a second connection,
which WAL gives a consistent snapshot.
"""

from __future__ import annotations

import itertools
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tierctl.errors import IndexUnusable
from tierctl.index.merge import (
    DETAIL_COLUMNS,
    SIGNATURE_COLUMNS,
    FileStat,
    decode_mapping,
    encode_mapping,
    merge_listing,
    merge_stats,
)
from tierctl.index.merge import PLACEMENT_COLUMNS as _PLACEMENT_COLUMNS
from tierctl.index.merge import placement_from_row as _placement
from tierctl.index.schema import MIGRATIONS, SCHEMA_VERSION
from tierctl.model import MTIME_WINDOW, Entry, ObjectSnapshot, Placement, ScanReport

# The present placements of one tier of one dataset from a key on (the scan's reads).
_TIER_RANGE = "FROM placements WHERE dataset = ? AND tier = ? AND state = 'present' AND key >= ?"

# A copy written to a tier: parameters as :func:`copy_row` orders them (?1 dataset, ?2 key,
# ?3 tier, ?4 size, ?5 mtime, ?6 checksum, ?7 storage class, ?8 etag, ?9 now, ?10 verified at,
# ?11 restore state, ?12 tags, ?13 meta, ?14 source tier, ?15 the mtime window). Tags or
# metadata the entry lacks come from the source tier's placement of the same content, else
# from the first tier's in name order that has them: the source's by primary key, then the
# object's rows in key order, so no sort for the lowest tier.
_SAME_CONTENT = "state = 'present' AND {col} IS NOT NULL AND size = ?4 AND abs(mtime - ?5) <= ?15"
_INHERITED = (
    "coalesce((SELECT {col} FROM placements WHERE dataset = ?1 AND key = ?2 AND tier = ?14 AND tier != ?3"
    f" AND {_SAME_CONTENT}),"
    " (SELECT {col} FROM placements WHERE dataset = ?1 AND key = ?2 AND tier != ?3"
    f" AND {_SAME_CONTENT} ORDER BY tier LIMIT 1))"
)
_RECORD_COPY = (
    f"INSERT INTO placements ({_PLACEMENT_COLUMNS})"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'present', ?9, ?10, NULL, NULL, ?11,"
    f" coalesce(?12, {_INHERITED.format(col='tags')}), coalesce(?13, {_INHERITED.format(col='meta')}))"
    " ON CONFLICT (dataset, key, tier) DO UPDATE SET size = excluded.size, mtime = excluded.mtime,"
    " checksum = excluded.checksum, storage_class = excluded.storage_class, etag = excluded.etag,"
    " state = 'present', verified_at = excluded.verified_at, changed_at = ?9,"
    " restore_state = excluded.restore_state, tags = excluded.tags, meta = excluded.meta"
)
_RECORD_VERIFIED = (
    "UPDATE placements SET checksum = ?, verified_at = ? WHERE dataset = ? AND key = ? AND tier = ?"
)
_RECORD_ACTION = (
    "INSERT OR REPLACE INTO actions (run_id, action_id, op, dataset, key, source, target, status,"
    " bytes, checksum, reason, error, finished_at, placement_first_seen)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def copy_row(
    dataset: str,
    key: str,
    tier: str,
    entry: Entry,
    checksum: str,
    now: float,
    *,
    verified: bool = True,
    source: str | None = None,
) -> tuple[Any, ...]:
    """The parameters of :meth:`Index.record_copy`, as :meth:`Index.record_copies` takes them."""
    return (
        dataset,
        key,
        tier,
        entry.size,
        entry.mtime,
        checksum,
        entry.storage_class,
        entry.etag,
        now,
        now if verified else None,
        entry.restore_state,
        encode_mapping(entry.tags),
        encode_mapping(entry.metadata),
        source,
        MTIME_WINDOW,
    )


def action_row(
    run_id: int,
    action: Any,
    status: str,
    *,
    bytes_done: int = 0,
    checksum: str | None = None,
    error: str | None = None,
    now: float,
    placement_first_seen: float | None = None,
) -> tuple[Any, ...]:
    """The parameters of :meth:`Index.record_action`, as :meth:`Index.record_actions` takes them."""
    return (
        run_id,
        action.id,
        action.op,
        action.dataset,
        action.key,
        action.source,
        action.target,
        status,
        bytes_done,
        checksum,
        action.reason,
        error,
        now,
        placement_first_seen,
    )


def prefix_range(prefix: str) -> tuple[str, str]:
    """Bounds for ``key >= lo AND key < hi`` selecting keys that start with ``prefix``
    (a range uses the primary key; ``LIKE 'p%'`` would not)."""
    if not prefix:
        return "", "\U0010ffff" * 2
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(frozen=True)
class TierUsage:
    dataset: str
    tier: str
    objects: int
    bytes: int


class Index:
    """Open with :meth:`open`; use from one thread (the executor funnels results to it)."""

    def __init__(self, path: str, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, *, create: bool = True) -> Index:
        path = os.path.abspath(path)
        if not os.path.exists(path):
            if not create:
                raise IndexUnusable(f"no index at {path}", hint="run `tierctl scan` first to build it")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            # Create the file owner-only before SQLite does: its -wal and -shm files
            # inherit this mode.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = _connect(path)
        index = cls(path, conn)
        index._migrate()
        return index

    def _migrate(self) -> None:
        try:
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if tables:
                    raise IndexUnusable(f"{self.path} is a SQLite file but not a tierctl index")
        except sqlite3.DatabaseError as exc:
            raise IndexUnusable(f"{self.path}: not a usable SQLite index ({exc})") from None
        if version > SCHEMA_VERSION:
            raise IndexUnusable(
                f"{self.path} has schema version {version}; this tierctl knows up to {SCHEMA_VERSION}",
                hint="upgrade tierctl",
            )
        for number in range(version, SCHEMA_VERSION):
            with self.transaction():
                for statement in _statements(MIGRATIONS[number]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number + 1}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- scan -----------------------------------------------------------------------------
    def scan_tier(
        self,
        dataset: str,
        tier: str,
        prefix: str,
        entries: Iterable[Entry],
        now: float,
        *,
        allow_empty: bool = False,
    ) -> ScanReport:
        """Merge a sorted listing of one tier under ``prefix`` into the index.

        Unchanged placements are not written. Tags and metadata an entry carries are
        compared as stored JSON text; a change of them alone is a change (counted in
        ``changed``, with ``changed_at``), their first reading is not. An entry without them
        (None: not read) keeps what the index knows, as an entry without atime keeps the
        recorded atime (reads recorded by other means). A tier that lists nothing where the index
        holds present placements is not marked empty unless ``allow_empty``: an unmounted
        disk must not look like "every file deleted".
        """
        report = ScanReport(dataset, tier)
        lo, hi = prefix_range(prefix)
        reader = _connect(self.path)
        try:
            rows = reader.execute(
                f"SELECT {DETAIL_COLUMNS} {_TIER_RANGE} AND key < ? ORDER BY key", (dataset, tier, lo, hi)
            )
            merge_listing(self.transaction, report, rows, entries, now, allow_empty)
        finally:
            reader.close()
        return report

    def scan_tier_stats(
        self,
        dataset: str,
        tier: str,
        prefix: str,
        batches: Iterable[list[FileStat]],
        now: float,
        *,
        allow_empty: bool = False,
    ) -> ScanReport:
        """:meth:`scan_tier` for a listing of plain files without metadata, in sorted batches
        of ``(key, size, mtime, atime)`` (``LocalMover.stat_batches``): the same outcome,
        with unchanged files compared in C, batch by batch (``merge.merge_stats``)."""
        report = ScanReport(dataset, tier)
        lo, hi = prefix_range(prefix)
        reader = _connect(self.path)
        try:
            reader.execute("BEGIN")  # one snapshot for the signatures and the details
            signatures = reader.execute(
                f"SELECT {SIGNATURE_COLUMNS} {_TIER_RANGE} AND key < ? ORDER BY key", (dataset, tier, lo, hi)
            )

            def details(first: str, last: str) -> sqlite3.Cursor:
                sql = f"SELECT {DETAIL_COLUMNS} {_TIER_RANGE} AND key <= ? ORDER BY key"
                return reader.execute(sql, (dataset, tier, first, last))

            merge_stats(self.transaction, report, signatures, details, batches, now, allow_empty)
        finally:
            reader.close()
        return report

    # -- reads for the planner and the CLI ---------------------------------------------------
    def objects(self, dataset: str, prefix: str = "") -> Iterator[ObjectSnapshot]:
        """Present placements of ``dataset`` grouped by object, in key order (streamed)."""
        lo, hi = prefix_range(prefix)
        rows = self.conn.execute(
            f"SELECT {_PLACEMENT_COLUMNS} FROM placements"
            " WHERE dataset = ? AND key >= ? AND key < ? AND state = 'present' ORDER BY key, tier",
            (dataset, lo, hi),
        )
        for key, group in itertools.groupby(map(_placement, rows), key=lambda p: p.key):
            placements = tuple(group)
            yield ObjectSnapshot(dataset, key, placements, min(p.first_seen for p in placements))

    def placements(self, key: str, *, include_gone: bool = False) -> list[Placement]:
        """Every placement of ``key``, in any dataset. The key is looked up under each dataset
        the index holds (found by a loose index scan: one seek per dataset), so each lookup
        is a primary-key search; ``WHERE key = ?`` alone would read the whole table."""
        state = "" if include_gone else " AND state = 'present'"
        rows = self.conn.execute(
            "WITH RECURSIVE datasets (name) AS ("
            " SELECT (SELECT min(dataset) FROM placements)"
            " UNION ALL SELECT (SELECT min(dataset) FROM placements WHERE dataset > name)"
            " FROM datasets WHERE name IS NOT NULL)"
            f" SELECT {_PLACEMENT_COLUMNS} FROM placements"
            " WHERE dataset IN (SELECT name FROM datasets WHERE name IS NOT NULL) AND key = ?"
            f"{state} ORDER BY dataset, tier",
            (key,),
        )
        return [_placement(r) for r in rows]

    def usage(self, prefix: str = "", dataset: str | None = None) -> list[TierUsage]:
        """Objects and bytes per (dataset, tier) for present placements under ``prefix``."""
        lo, hi = prefix_range(prefix)
        sql = (
            "SELECT dataset, tier, count(*), coalesce(sum(size), 0) FROM placements"
            " WHERE state = 'present' AND key >= ? AND key < ?"
        )
        params: list[Any] = [lo, hi]
        if dataset is not None:
            sql += " AND dataset = ?"
            params.append(dataset)
        sql += " GROUP BY dataset, tier ORDER BY dataset, tier"
        return [TierUsage(*r) for r in self.conn.execute(sql, params)]

    def object_count(self, prefix: str = "", dataset: str | None = None) -> int:
        lo, hi = prefix_range(prefix)
        sql = (
            "SELECT count(DISTINCT dataset || char(0) || key) FROM placements"
            " WHERE state = 'present' AND key >= ? AND key < ?"
        )
        params: list[Any] = [lo, hi]
        if dataset is not None:
            sql += " AND dataset = ?"
            params.append(dataset)
        return int(self.conn.execute(sql, params).fetchone()[0])

    def listing(
        self, prefix: str = "", limit: int | None = None
    ) -> Iterator[tuple[str, str, int, float, list[str]]]:
        """(dataset, key, size, mtime of newest placement, tiers) per object under ``prefix``."""
        lo, hi = prefix_range(prefix)
        rows = self.conn.execute(
            "SELECT dataset, key, max(size), max(mtime), group_concat(tier, ',') FROM placements"
            " WHERE state = 'present' AND key >= ? AND key < ? GROUP BY dataset, key ORDER BY key"
            + (" LIMIT ?" if limit is not None else ""),
            (lo, hi, limit) if limit is not None else (lo, hi),
        )
        for dataset, key, size, mtime, tiers in rows:
            yield dataset, key, size, mtime, sorted(tiers.split(","))

    # -- writes from the executor --------------------------------------------------------------
    def record_copy(
        self,
        dataset: str,
        key: str,
        tier: str,
        entry: Entry,
        checksum: str,
        now: float,
        *,
        verified: bool = True,
        source: str | None = None,
    ) -> None:
        """Record a copy of ``key`` written to ``tier``. The copy carries the object's tags
        and metadata: the entry's where it has them, else those recorded for the ``source``
        tier, else those of another present placement of the same content (the planner copies
        only the current version), else unknown. A copy over a placement the index already
        has sets ``changed_at`` to ``now``: the new content's time in the tier's class
        (minimum storage durations, early-deletion fees) counts from the overwrite, not from
        when the placement was first seen."""
        self.conn.execute(
            _RECORD_COPY, copy_row(dataset, key, tier, entry, checksum, now, verified=verified, source=source)
        )

    def record_copies(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """:meth:`record_copy` of each of ``rows`` (:func:`copy_row`), in order, in one statement."""
        self.conn.executemany(_RECORD_COPY, rows)

    def record_verified(self, dataset: str, key: str, tier: str, checksum: str, now: float) -> None:
        self.conn.execute(_RECORD_VERIFIED, (checksum, now, dataset, key, tier))

    def record_verifications(self, rows: Iterable[tuple[str, str, str, str, float]]) -> None:
        """:meth:`record_verified` of each (dataset, key, tier, checksum, now), in order."""
        self.conn.executemany(_RECORD_VERIFIED, ((c, t, d, k, tier) for d, k, tier, c, t in rows))

    def record_transition(
        self, dataset: str, key: str, source: str, target: str, entry: Entry, *, now: float | None = None
    ) -> None:
        """The object changed storage class in place at ``now`` (default: the clock): its
        placement moves from ``source`` to ``target`` (tiers sharing one URL), keeping its
        digest, verification time and first sighting. ``changed_at`` becomes ``now``: the
        object's time in its new class (minimum storage durations, early-deletion fees)
        counts from the transition, not from when it was first seen."""
        now = time.time() if now is None else now
        self.conn.execute(
            "UPDATE placements SET tier = ?, storage_class = ?, etag = ?, restore_state = ?, changed_at = ?"
            " WHERE dataset = ? AND key = ? AND tier = ?",
            (target, entry.storage_class, entry.etag, entry.restore_state, now, dataset, key, source),
        )

    def record_restore_state(self, dataset: str, key: str, tier: str, state: str | None) -> None:
        self.conn.execute(
            "UPDATE placements SET restore_state = ? WHERE dataset = ? AND key = ? AND tier = ?",
            (state, dataset, key, tier),
        )

    def known_entry(self, dataset: str, tiers: str | tuple[str, ...], key: str) -> Entry | None:
        """The present placement of ``key`` on ``tiers`` (a tier, or the tiers sharing one
        store) as last recorded: the ``known`` callback of :meth:`Mover.list`, so S3 skips a
        HEAD per unchanged object."""
        group = (tiers,) if isinstance(tiers, str) else tiers
        marks = ", ".join("?" for _ in group)
        row = self.conn.execute(
            "SELECT size, mtime, checksum, storage_class, etag, atime, tags, meta FROM placements"
            f" WHERE dataset = ? AND key = ? AND state = 'present' AND tier IN ({marks}) LIMIT 1",
            (dataset, key, *group),
        ).fetchone()
        if row is None:
            return None
        size, mtime, checksum, storage_class, etag, atime, tags, meta = row
        return Entry(
            key,
            size,
            mtime,
            checksum,
            storage_class,
            etag,
            atime=atime,
            tags=decode_mapping(tags),
            metadata=decode_mapping(meta),
        )

    def record_delete(self, dataset: str, key: str, tier: str) -> float | None:
        """Forget a deleted placement; returns when it was first seen (for the audit trail)."""
        where = "WHERE dataset = ? AND key = ? AND tier = ?"  # (no RETURNING: SQLite < 3.35)
        row = self.conn.execute(f"SELECT first_seen FROM placements {where}", (dataset, key, tier)).fetchone()
        self.conn.execute(f"DELETE FROM placements {where}", (dataset, key, tier))
        return row[0] if row else None

    # -- runs and the action journal --------------------------------------------------------------
    def start_run(
        self,
        *,
        trigger: str,
        planned: int,
        policy: str | None = None,
        plan_file: str | None = None,
        now: float | None = None,
    ) -> int:
        with self.transaction() as tx:
            cur = tx.execute(
                "INSERT INTO runs (started_at, trigger, policy, plan_file, outcome, planned, pid, host)"
                " VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                (now or time.time(), trigger, policy, plan_file, planned, os.getpid(), socket.gethostname()),
            )
            return int(cur.lastrowid or 0)

    def record_action(
        self,
        run_id: int,
        action: Any,
        status: str,
        *,
        bytes_done: int = 0,
        checksum: str | None = None,
        error: str | None = None,
        now: float,
        placement_first_seen: float | None = None,
    ) -> None:
        self.conn.execute(
            _RECORD_ACTION,
            action_row(
                run_id,
                action,
                status,
                bytes_done=bytes_done,
                checksum=checksum,
                error=error,
                now=now,
                placement_first_seen=placement_first_seen,
            ),
        )

    def record_actions(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """:meth:`record_action` of each of ``rows`` (:func:`action_row`), in order."""
        self.conn.executemany(_RECORD_ACTION, rows)

    def finish_run(
        self,
        run_id: int,
        *,
        outcome: str,
        done: int,
        failed: int,
        skipped: int,
        bytes_done: int,
        error: str | None = None,
    ) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE runs SET finished_at = ?, outcome = ?, done = ?, failed = ?, skipped = ?, bytes = ?,"
                " error = ? WHERE id = ?",
                (time.time(), outcome, done, failed, skipped, bytes_done, error, run_id),
            )

    def dump(self) -> list[tuple[Any, ...]]:
        """Every placement row, for tests and debugging."""
        return list(
            self.conn.execute(f"SELECT {_PLACEMENT_COLUMNS} FROM placements ORDER BY dataset, key, tier")
        )


def _connect(path: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
    except sqlite3.DatabaseError as exc:
        raise IndexUnusable(f"{path}: not a usable SQLite index ({exc})") from None
    return conn


def _statements(script: str) -> list[str]:
    """Split a migration into statements (migrations hold no ';' inside literals)."""
    out = []
    for part in script.split(";"):
        lines = [line.split("--", 1)[0] for line in part.splitlines()]
        statement = "\n".join(lines).strip()
        if statement:
            out.append(statement)
    return out
