"""Test data: file trees on disk and placements synthesized straight into an index."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DATASET = "data"
PREFIX = "data/"
PER_DIR = 100  # files per folder: data/d0000/f00000.bin
MiB = 1 << 20


@dataclass(frozen=True)
class TreeSpec:
    """``count`` files of ``size`` bytes under ``<root>/data/``; same spec, same bytes and mtimes."""

    count: int
    size: int
    seed: int = 8

    @property
    def label(self) -> str:
        return f"{human_count(self.count)} x {human_size(self.size)}"

    @property
    def total_bytes(self) -> int:
        return self.count * self.size


def human_count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def human_size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"


def key_of(i: int) -> str:
    return f"{PREFIX}d{i // PER_DIR:04d}/f{i:06d}.bin"


def build_tree(root: Path, spec: TreeSpec, mtime: float) -> None:
    """Write the tree; every file gets ``mtime`` (ns precision) and distinct content."""
    rng = random.Random(spec.seed)
    block = rng.randbytes(spec.size)
    mtime_ns = int(mtime * 1e9)
    made: set[str] = set()
    for i in range(spec.count):
        path = root / key_of(i)
        parent = str(path.parent)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        # A distinct header per file (so no two files hash alike), the shared random body after it.
        header = i.to_bytes(8, "little")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if spec.size >= len(header):
                os.write(fd, header)
                view = memoryview(block)[len(header) :]
                while view:
                    view = view[os.write(fd, view) :]
            else:
                os.write(fd, block)
        finally:
            os.close(fd)
        os.utime(path, ns=(mtime_ns, mtime_ns))


def synth_index(
    index_path: Path, placements: int, *, now: float, missing_every: int = 100
) -> tuple[int, int]:
    """Write about ``placements`` rows for objects on tiers ``src`` and ``dst`` (every
    ``missing_every``-th object only on ``src``, so the plan has copies to make), in one
    transaction with ``executemany`` as a real scan writes. Returns (objects, rows)."""
    from tierctl.index import Index

    per_object = 2 - 1 / missing_every
    objects = int(placements / per_object)
    day = 86_400.0

    def rows() -> Iterator[tuple[object, ...]]:
        rng = random.Random(4)
        for i in range(objects):
            key = key_of(i)
            size = rng.randrange(1, 64 * MiB)
            mtime = now - rng.uniform(0, 365 * day)
            checksum = f"crc32c:{rng.getrandbits(32):08x}"
            yield (DATASET, key, "src", size, mtime, checksum, "present", now - day, now - day)
            if i % missing_every != missing_every - 1:
                yield (DATASET, key, "dst", size, mtime, checksum, "present", now - day, now - day)

    count = 0

    def counted() -> Iterator[tuple[object, ...]]:
        nonlocal count
        for row in rows():
            count += 1
            yield row

    with Index.open(str(index_path)) as index, index.transaction() as tx:
        tx.executemany(
            "INSERT INTO placements (dataset, key, tier, size, mtime, checksum, state, first_seen,"
            " verified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            counted(),
        )
    return objects, count


def default_mtime() -> float:
    return time.time() - 86_400  # a day old: not "just written" for any tool's heuristics


def rclone_env(workdir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for rclone: an empty config file of our own (no user config, no notice)."""
    conf = workdir / "rclone.conf"
    conf.touch()
    env = dict(os.environ)
    env["RCLONE_CONFIG"] = str(conf)
    env.update(extra or {})
    return env
