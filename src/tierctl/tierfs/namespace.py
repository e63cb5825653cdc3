"""The logical tree of ``tier://`` from the index, and the order in which placements are read.

A path is ``DATASET/KEY-BELOW-THE-DATASET-PREFIX``: ``tier://events/2026/11/01.parquet`` is
the object ``events/2026/11/01.parquet`` of dataset ``events`` (prefix ``events/``), wherever
it lives. Folders are implied by keys; the root lists the datasets of the policy file.

Listings are range queries on the index's primary key (dataset, key, tier); a folder's
children are found by skipping over each sub-folder's key range, so listing a folder costs
one query per sub-folder plus a step per file in it, however many objects lie below.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tierctl.index.db import prefix_range
from tierctl.model import Placement
from tierctl.policies.evaluate import current_version
from tierctl.policies.model import Config
from tierctl.tierfs.errors import NotInNamespace

# Placement's fields, in order.
COLUMNS = (
    "dataset, key, tier, size, mtime, checksum, storage_class, etag, state,"
    " first_seen, verified_at, changed_at, atime, restore_state"
)


@dataclass(frozen=True)
class TierPath:
    """A ``tier://`` path split: ``dataset`` is "" at the root; ``key`` is the full index key
    (the dataset's prefix plus the path below the dataset)."""

    path: str
    dataset: str
    key: str

    @property
    def is_root(self) -> bool:
        return not self.dataset

    def folder_prefix(self, config: Config) -> str:
        """The key prefix of everything below this path seen as a folder."""
        prefix = config.datasets[self.dataset].prefix
        return self.key + "/" if self.key != prefix else prefix


def parse(config: Config, path: str) -> TierPath:
    """``path`` without the protocol (fsspec strips it) -> TierPath; :class:`NotInNamespace`
    for a dataset the policy file does not declare."""
    path = path.strip("/")
    if not path:
        return TierPath("", "", "")
    dataset, _, rest = path.partition("/")
    if dataset not in config.datasets:
        raise NotInNamespace(
            f"tier://{path}: no dataset {dataset!r} in {config.path}",
            hint=f"tier:// paths start with a dataset: {', '.join(config.datasets) or 'none declared'}",
        )
    return TierPath(path, dataset, config.datasets[dataset].prefix + rest)


def name_of(config: Config, dataset: str, key: str) -> str:
    """The fsspec name (a path without the protocol) of ``key`` in ``dataset``."""
    rest = key[len(config.datasets[dataset].prefix) :]
    return f"{dataset}/{rest}" if rest else dataset


def directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def version_of(config: Config, placements: list[Placement]) -> Placement:
    """The placement holding the object's current content. The read cache's copies only
    follow it, so they decide only when nothing else is left."""
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    cache_tier = config.cache.tier if config.cache is not None else None
    own = [p for p in placements if p.tier != cache_tier] or placements
    return current_version(tuple(own), tier_order)


def file_info(config: Config, dataset: str, placements: list[Placement]) -> dict[str, Any]:
    version = version_of(config, placements)
    holding = [p for p in placements if p.same_content(version)]
    return {
        "name": name_of(config, dataset, version.key),
        "size": version.size,
        "type": "file",
        "mtime": version.mtime,
        "tiers": [p.tier for p in holding],
        "readable": any(p.readable for p in holding),
        "storage_class": version.storage_class,
    }


def object_placements(conn: sqlite3.Connection, dataset: str, key: str) -> list[Placement]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM placements WHERE dataset = ? AND key = ? AND state = 'present' ORDER BY tier",
        (dataset, key),
    )
    return [Placement(*r) for r in rows]


def has_objects_below(conn: sqlite3.Connection, dataset: str, prefix: str) -> bool:
    lo, hi = prefix_range(prefix)
    row = conn.execute(
        "SELECT 1 FROM placements WHERE dataset = ? AND key >= ? AND key < ? AND state = 'present' LIMIT 1",
        (dataset, lo, hi),
    ).fetchone()
    return row is not None


def children(config: Config, conn: sqlite3.Connection, dataset: str, prefix: str) -> Iterator[dict[str, Any]]:
    """The files and folders directly below ``prefix`` (a folder's key prefix) in ``dataset``.

    Rows are stepped through lazily; at a sub-folder the cursor is dropped and a new range
    query starts past the sub-folder's keys, so its contents are never read."""
    lo, hi = prefix_range(prefix)
    while lo < hi:
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM placements WHERE dataset = ? AND key >= ? AND key < ?"
            " AND state = 'present' ORDER BY key, tier",
            (dataset, lo, hi),
        )
        lo = hi
        for key, group in itertools.groupby(rows, key=lambda r: r[1]):
            folder, slash, _ = key[len(prefix) :].partition("/")
            if slash:
                yield directory(name_of(config, dataset, prefix + folder))
                lo = prefix + folder + "0"  # '0' follows '/': past the whole sub-folder
                break
            yield file_info(config, dataset, [Placement(*r) for r in group])
        rows.close()


def files_below(
    config: Config, conn: sqlite3.Connection, dataset: str, prefix: str
) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` in ``dataset``, in key order (one range query, streamed)."""
    lo, hi = prefix_range(prefix)
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM placements WHERE dataset = ? AND key >= ? AND key < ?"
        " AND state = 'present' ORDER BY key, tier",
        (dataset, lo, hi),
    )
    for _key, group in itertools.groupby((Placement(*r) for r in rows), key=lambda p: p.key):
        yield file_info(config, dataset, list(group))


def read_order(config: Config, placements: list[Placement]) -> tuple[list[Placement], list[Placement]]:
    """(readable placements of the current content, best first; archived ones not restored).

    Best first: the read cache, then local tiers, then the other tiers in the policy file's
    order, then restored copies of archived objects (temporary, and often billed per read).
    Stale placements (older content) are never read."""
    version = version_of(config, placements)
    current = [p for p in placements if p.same_content(version)]
    tier_order = {name: i for i, name in enumerate(config.tiers)}
    cache_tier = config.cache.tier if config.cache is not None else None

    def rank(p: Placement) -> tuple[int, int]:
        if p.tier == cache_tier:
            group = 0
        elif p.restore_state == "restored":
            group = 3
        elif config.tiers[p.tier].url.startswith("file://"):
            group = 1
        else:
            group = 2
        return group, tier_order[p.tier]

    known = [p for p in current if p.tier in config.tiers]
    readable = sorted((p for p in known if p.readable), key=rank)
    archived = sorted((p for p in known if not p.readable), key=lambda p: tier_order[p.tier])
    return readable, archived
