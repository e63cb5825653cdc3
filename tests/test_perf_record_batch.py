"""Recording a batch of results (issue #8): the batched writes of ``executor._record_results``
(one statement per kind per round, ``Index.record_copies`` ...) leave the index exactly as the
per-result writes did, and ``record_copy``'s tags/metadata inheritance (the source's
placement first, then the lowest tier's, by primary key) picks what the sorted subquery did.

The reference is the per-row code as it was before batching, kept here verbatim: a frozen
oracle; when what a result records changes on purpose, change it too."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from tierctl.executor import ApplyReport, _record_results
from tierctl.index import Index
from tierctl.index.merge import PLACEMENT_COLUMNS, encode_mapping
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.plan import Action, Expect
from tierctl.unit import ActionResult

NOW = 1_900_000_000.0
TIERS = ("a", "b", "c", "d")


# -- the reference: per-row writes, the pre-batching SQL --------------------------------------------
def _old_record_copy(
    index: Index,
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
    inherited = (
        "SELECT {col} FROM placements WHERE dataset = :dataset AND key = :key AND tier != :tier"
        " AND state = 'present' AND {col} IS NOT NULL AND size = :size AND abs(mtime - :mtime) <= :window"
        " ORDER BY tier = :source DESC, tier LIMIT 1"
    )
    index.conn.execute(
        f"INSERT INTO placements ({PLACEMENT_COLUMNS})"
        " VALUES (:dataset, :key, :tier, :size, :mtime, :checksum, :storage_class, :etag, 'present',"
        " :now, :verified_at, NULL, NULL, :restore_state,"
        f" coalesce(:tags, ({inherited.format(col='tags')})),"
        f" coalesce(:meta, ({inherited.format(col='meta')})))"
        " ON CONFLICT (dataset, key, tier) DO UPDATE SET size = excluded.size, mtime = excluded.mtime,"
        " checksum = excluded.checksum, storage_class = excluded.storage_class, etag = excluded.etag,"
        " state = 'present', verified_at = excluded.verified_at, changed_at = :now,"
        " restore_state = excluded.restore_state, tags = excluded.tags, meta = excluded.meta",
        {
            "dataset": dataset,
            "key": key,
            "tier": tier,
            "size": entry.size,
            "mtime": entry.mtime,
            "checksum": checksum,
            "storage_class": entry.storage_class,
            "etag": entry.etag,
            "now": now,
            "verified_at": now if verified else None,
            "restore_state": entry.restore_state,
            "tags": encode_mapping(entry.tags),
            "meta": encode_mapping(entry.metadata),
            "source": source,
            "window": MTIME_WINDOW,
        },
    )


def _old_record_results(
    index: Index, run_id: int, results: list[ActionResult], report: ApplyReport, now: float
) -> None:
    for r in results:
        a = r.action
        first_seen = None
        if r.status == "done":
            report.done += 1
            report.bytes += r.bytes
            if a.op == "copy" and r.entry is not None and r.checksum:
                _old_record_copy(
                    index,
                    a.dataset,
                    a.key,
                    a.target,
                    r.entry,
                    r.checksum,
                    now,
                    verified=r.verified,
                    source=a.source,
                )
                if a.source and r.verified:
                    index.record_verified(a.dataset, a.key, a.source, r.checksum, now)
            elif a.op == "verify" and r.checksum:
                index.record_verified(a.dataset, a.key, a.target, r.checksum, now)
                if a.source:
                    index.record_verified(a.dataset, a.key, a.source, r.checksum, now)
            elif a.op == "delete":
                first_seen = index.record_delete(a.dataset, a.key, a.target)
            elif a.op == "transition" and a.source and r.entry is not None:
                index.record_transition(a.dataset, a.key, a.source, a.target, r.entry, now=now)
            elif a.op == "restore" and r.entry is not None:
                index.record_restore_state(a.dataset, a.key, a.target, r.entry.restore_state)
        else:
            if r.status == "failed":
                report.failed += 1
            else:
                report.skipped += 1
            report.problems.append(r)
        index.record_action(
            run_id,
            a,
            r.status,
            bytes_done=r.bytes,
            checksum=r.checksum,
            error=r.error,
            now=now,
            placement_first_seen=first_seen,
        )


# -- the world both record into ------------------------------------------------------------------
def _placements(rng: random.Random, objects: int) -> list[tuple[Any, ...]]:
    """Rows of PLACEMENT_COLUMNS: objects on 1-3 tiers, some copies stale, tags and
    metadata known on some placements, unknown (NULL) or empty on others."""
    rows = []
    for n in range(objects):
        key = f"k/{n:04d}"
        size, mtime = rng.choice((10, 4096)), 1_800_000_000.0 + rng.randrange(3)
        for tier in rng.sample(TIERS, rng.randint(1, 3)):
            stale = rng.random() < 0.15
            tags = rng.choice((None, None, {}, {"team": tier}, {"team": "x", "keep": "1"}))
            meta = rng.choice((None, None, {"owner": tier}))
            rows.append(
                (
                    "ds",
                    key,
                    tier,
                    size + (1 if stale else 0),
                    mtime + (rng.choice((0.0005, 5.0)) if stale else 0.0),
                    rng.choice((None, "crc32c:00000001")),
                    None,
                    None,
                    "present",
                    1_700_000_000.0 + n,
                    rng.choice((None, 1_750_000_000.0)),
                    None,
                    None,
                    None,
                    encode_mapping(tags),
                    encode_mapping(meta),
                )
            )
    return rows


def _results(rng: random.Random, rows: list[tuple[Any, ...]]) -> list[ActionResult]:
    """A batch as units leave it: per object, its actions in plan order (copies, a
    transition, a verify, deletes), some failed or skipped."""
    by_key: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_key.setdefault(row[1], []).append(row)
    results: list[ActionResult] = []
    ids = iter(range(1, 1_000_000))

    def action(op: str, key: str, target: str, source: str | None, size: int, mtime: float) -> Action:
        return Action(
            id=next(ids),
            op=op,
            dataset="ds",
            key=key,
            target=target,
            size=size,
            mtime=mtime,
            reason="test",
            source=source,
            expect=Expect(size, mtime) if op == "delete" else None,
        )

    def status() -> str:
        return rng.choices(("done", "failed", "skipped"), (8, 1, 1))[0]

    for key, placements in by_key.items():
        present = [p[2] for p in placements]
        absent = [t for t in TIERS if t not in present]
        source = rng.choice(present)
        size, mtime = placements[0][3], placements[0][4]
        copied = []
        for target in rng.sample(absent + present, rng.randint(0, 2)):
            if target == source:
                continue
            copied.append(target)
            tags = rng.choice((None, None, {"new": "1"}))
            entry = Entry(
                key, size, mtime, None, rng.choice((None, "STANDARD")), None, metadata=None, tags=tags
            )
            results.append(
                ActionResult(
                    action("copy", key, target, rng.choice((source, source, None)), size, mtime),
                    status(),
                    bytes=size,
                    checksum=rng.choice(("crc32c:0000abcd", None)),
                    entry=rng.choice((entry, entry, None)),
                    verified=rng.random() < 0.8,
                )
            )
        free = [t for t in absent if t not in copied]
        if free and rng.random() < 0.3:  # into a tier nothing holds (a transition renames the placement)
            entry = Entry(key, size, mtime, None, "GLACIER", "etag-1", restore_state="archived")
            transition = action("transition", key, rng.choice(free), rng.choice(present), size, mtime)
            results.append(ActionResult(transition, status(), entry=entry))
        if rng.random() < 0.4:
            results.append(
                ActionResult(
                    action("verify", key, rng.choice(present), rng.choice(present), size, mtime),
                    status(),
                    checksum=rng.choice(("crc32c:00000001", "crc32c:ffff0000", None)),
                )
            )
        if rng.random() < 0.1:
            entry = Entry(key, size, mtime, restore_state="restoring")
            results.append(
                ActionResult(action("restore", key, present[0], None, size, mtime), status(), entry=entry)
            )
        for tier in rng.sample(present, rng.randint(0, len(present))):
            results.append(ActionResult(action("delete", key, tier, None, size, mtime), status()))
    for r in results:
        if r.status != "done":
            r.error = f"{r.status} on purpose"
    return results


def _open(path: Path, rows: list[tuple[Any, ...]]) -> Index:
    index = Index.open(str(path))
    with index.transaction() as tx:
        marks = ", ".join("?" for _ in rows[0])
        tx.executemany(f"INSERT INTO placements ({PLACEMENT_COLUMNS}) VALUES ({marks})", rows)
    return index


def _state(index: Index) -> tuple[list[Any], list[Any]]:
    actions = list(index.conn.execute("SELECT * FROM actions ORDER BY run_id, action_id"))
    return index.dump(), actions


def _report(report: ApplyReport) -> tuple[Any, ...]:
    return (report.done, report.failed, report.skipped, report.bytes, [r.action.id for r in report.problems])


def test_a_batch_records_what_per_row_writes_did(tmp_path: Path) -> None:
    for seed in range(12):
        rng = random.Random(seed)
        rows = _placements(rng, 60)
        results = _results(rng, rows)
        assert {r.action.op for r in results} >= {"copy", "verify", "delete"}
        old, new = _open(tmp_path / f"old{seed}.db", rows), _open(tmp_path / f"new{seed}.db", rows)
        old_report, new_report = ApplyReport(1), ApplyReport(1)
        for index, record, report in (
            (old, _old_record_results, old_report),
            (new, _record_results, new_report),
        ):
            with index.transaction():
                for start in range(0, len(results), 37):  # several batches, as the executor makes them
                    record(index, 1, results[start : start + 37], report, NOW + start)
        assert _state(new) == _state(old), seed
        assert _report(new_report) == _report(old_report)
        old.close()
        new.close()


def test_a_move_in_one_batch_keeps_its_order(tmp_path: Path) -> None:
    """Copy a -> b, then delete a, in one batch: the copy inherits a's tags before a goes,
    the delete's audit row keeps a's first sighting, and a's verification lands before the
    delete (else it would be lost with the row, or revive nothing)."""
    rows = _placements(random.Random(1), 1)
    rows = [r for r in rows if r[2] == rows[0][2]]
    key, tier, size, mtime = rows[0][1], rows[0][2], rows[0][3], rows[0][4]
    rows[0] = (*rows[0][:14], encode_mapping({"team": "t"}), None)
    target = next(t for t in TIERS if t != tier)
    copy = Action(1, "copy", "ds", key, target, size, mtime, "move", source=tier)
    delete = Action(
        2, "delete", "ds", key, tier, size, mtime, "move", expect=Expect(size, mtime), requires=(1,)
    )
    results = [
        ActionResult(copy, "done", bytes=size, checksum="crc32c:1", entry=Entry(key, size, mtime)),
        ActionResult(delete, "done"),
    ]
    index = _open(tmp_path / "move.db", rows)
    with index.transaction():
        _record_results(index, 7, results, ApplyReport(7), NOW)
    placements = index.dump()
    assert [(p[2], p[14]) for p in placements] == [(target, '{"team":"t"}')]
    first_seen = index.conn.execute("SELECT placement_first_seen FROM actions WHERE action_id = 2").fetchone()
    assert first_seen == (rows[0][9],)


def test_copies_inherit_tags_as_the_sorted_subquery_did(tmp_path: Path) -> None:
    """record_copy alone, over every mix of which tiers know tags or metadata, with the
    source first, absent, unknown (None) or the copy's own target."""
    rng = random.Random(5)
    for n in range(300):
        rows = _placements(rng, 1)
        key, size, mtime = rows[0][1], rows[0][3], rows[0][4]
        target = rng.choice(TIERS)
        source = rng.choice((*TIERS, None))
        entry = Entry(key, size, mtime, tags=rng.choice((None, {"x": "1"})), metadata=rng.choice((None, {})))
        indexes = []
        for name, record in (("old", _old_record_copy), ("new", Index.record_copy)):
            index = _open(tmp_path / f"{name}{n}.db", rows)
            with index.transaction():
                record(index, "ds", key, target, entry, "crc32c:2", NOW, source=source)
            indexes.append(index)
        assert indexes[0].dump() == indexes[1].dump(), (rows, target, source, entry)
        for index in indexes:
            index.close()


def test_record_copy_reads_no_temporary_b_tree(tmp_path: Path) -> None:
    """The inherited tags and metadata are found by primary key, not by sorting the
    object's placements for each copy."""
    from tierctl.index import db

    index = Index.open(str(tmp_path / "plan.db"))
    entry = Entry("k", 1, 1.0)
    plan = index.conn.execute(
        "EXPLAIN QUERY PLAN " + db._RECORD_COPY, db.copy_row("ds", "k", "a", entry, "c", NOW, source="b")
    ).fetchall()
    details = [row[-1] for row in plan]
    assert not any("TEMP B-TREE" in d for d in details), details
    assert any("PRIMARY KEY (dataset=? AND key=? AND tier=?)" in d for d in details), details
    assert isinstance(index.conn, sqlite3.Connection)
