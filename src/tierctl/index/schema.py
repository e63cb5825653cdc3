"""Schema migrations, applied in order; ``PRAGMA user_version`` is the schema version.

A migration is only ever appended, never edited: an index written by an older tierctl
is brought forward on open; one from a newer tierctl is refused.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: placements, runs and the per-action journal/audit trail.
    """
    CREATE TABLE placements (
        dataset       TEXT NOT NULL,
        key           TEXT NOT NULL,
        tier          TEXT NOT NULL,
        size          INTEGER NOT NULL,
        mtime         REAL NOT NULL,          -- content mtime, seconds since the epoch
        checksum      TEXT,                   -- "algo:hex"
        storage_class TEXT,
        etag          TEXT,
        state         TEXT NOT NULL DEFAULT 'present',  -- present | gone
        first_seen    REAL NOT NULL,
        verified_at   REAL,
        changed_at    REAL,
        PRIMARY KEY (dataset, key, tier)
    ) WITHOUT ROWID;
    CREATE INDEX placements_by_tier ON placements (dataset, tier, key);

    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        started_at  REAL NOT NULL,
        finished_at REAL,
        trigger     TEXT NOT NULL,            -- manual | schedule | catch-up
        policy      TEXT,
        plan_file   TEXT,
        outcome     TEXT,                     -- running | ok | partial | failed | interrupted
        planned     INTEGER NOT NULL DEFAULT 0,
        done        INTEGER NOT NULL DEFAULT 0,
        failed      INTEGER NOT NULL DEFAULT 0,
        skipped     INTEGER NOT NULL DEFAULT 0,
        bytes       INTEGER NOT NULL DEFAULT 0,
        error       TEXT,
        pid         INTEGER,
        host        TEXT
    );

    CREATE TABLE actions (
        run_id      INTEGER NOT NULL REFERENCES runs (id),
        action_id   INTEGER NOT NULL,
        op          TEXT NOT NULL,
        dataset     TEXT NOT NULL,
        key         TEXT NOT NULL,
        source      TEXT,
        target      TEXT NOT NULL,
        status      TEXT NOT NULL,            -- done | failed | skipped
        bytes       INTEGER NOT NULL DEFAULT 0,
        checksum    TEXT,
        reason      TEXT,
        error       TEXT,
        finished_at REAL NOT NULL,
        PRIMARY KEY (run_id, action_id)
    );
    CREATE INDEX actions_by_object ON actions (dataset, key);
    """,
    # 2: last access time of a placement, where the store keeps one (policy `last_access`).
    """
    ALTER TABLE placements ADD COLUMN atime REAL;
    """,
    # 3: archived objects: archived | restoring | restored (None: readable class or unknown).
    """
    ALTER TABLE placements ADD COLUMN restore_state TEXT;
    """,
    # 4: a delete keeps the deleted placement's first sighting, so history can tell where
    # an object was before it was removed from a tier.
    """
    ALTER TABLE actions ADD COLUMN placement_first_seen REAL;
    """,
    # 5: object tags and user metadata (JSON objects), where the store has them (policy
    # conditions `tag.KEY` and `meta.KEY`).
    """
    ALTER TABLE placements ADD COLUMN tags TEXT;
    ALTER TABLE placements ADD COLUMN meta TEXT;
    """,
    # 6: the step journal: what each action of a run had got to (planned, copying,
    # uploading, copied, verified, deleted; resumed and cleaned when a later run used or
    # tidied up after an interrupted one). An action's final outcome stays in `actions`.
    # Keyed like `actions`, so a run's steps are one range of the primary key.
    """
    CREATE TABLE steps (
        run_id    INTEGER NOT NULL,
        action_id INTEGER NOT NULL,
        step      TEXT NOT NULL,
        at        REAL NOT NULL,
        detail    TEXT,                       -- JSON, per step (see tierctl.index.steps)
        PRIMARY KEY (run_id, action_id, step)
    ) WITHOUT ROWID;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
