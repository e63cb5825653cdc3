"""The bandwidth cap: a token bucket shared by every thread, wrapped around any mover."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tierctl.movers.local import LocalMover
from tierctl.movers.ratelimit import RateLimitedMover, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_holds_the_long_run_rate_for_any_chunk_size() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, burst=100, clock=clock, sleep=clock.sleep)
    for size in (10, 500, 3000, 1, 2000):
        bucket.take(size)
    assert abs(clock.now - (5511 - 100) / 1000) < 1e-9


def test_reads_through_the_wrapper_are_paced_across_threads(tmp_path: Path) -> None:
    inner = LocalMover((tmp_path / "t").as_uri())
    for name in ("a", "b"):
        inner.write(name, [b"x" * 300_000], size=300_000, mtime=1.0)
    mover = RateLimitedMover(inner, 2_000_000, bucket=TokenBucket(2_000_000, burst=65_536))
    started = time.monotonic()
    readers = [threading.Thread(target=lambda n=n: b"".join(mover.read_chunks(n))) for n in ("a", "b")]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    # 600 kB at 2 MB/s in all, less the 64 KiB burst: the two readers share one budget.
    assert time.monotonic() - started >= (600_000 - 65_536) / 2_000_000
    assert b"".join(mover.read_chunks("a")) == b"x" * 300_000
    assert [e.key for e in mover.list()] == ["a", "b"]
