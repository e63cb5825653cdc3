"""A bandwidth cap as a wrapper around any mover (restic's backend wrappers).

``RateLimitedMover(inner, bytes_per_second)`` paces the bytes read through
``read_chunks`` with one token bucket shared by every thread, so ``--jobs 16`` with
``--bandwidth 100M`` moves 100 MB/s in all, not per copy. Every copy reads its source
once and verification by read-back reads the destination, so wrapping the source of a
migration caps what crosses the source's network link. Other calls (``write`` with its
``metadata``, the attribute calls) pass through unpaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from tierctl.movers.base import CHUNK_SIZE, Mover, MoverWrapper


class TokenBucket:
    """``rate`` tokens (bytes) a second, at most ``burst`` saved up. Thread-safe."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(rate / 10, CHUNK_SIZE))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def take(self, amount: int) -> None:
        """Wait until ``amount`` bytes may pass. Amounts above ``burst`` run the bucket into
        debt, which later callers wait out: the long-run rate holds for any chunk size."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class RateLimitedMover(MoverWrapper):
    """``inner`` with its reads paced to ``bytes_per_second`` (shared by all threads)."""

    def __init__(self, inner: Mover, bytes_per_second: float, *, bucket: TokenBucket | None = None) -> None:
        super().__init__(inner)
        self.bucket = bucket or TokenBucket(bytes_per_second)

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        # Chunks no larger than a tenth of a second's worth keep the pacing smooth.
        size = max(64 * 1024, min(chunk_size, int(self.bucket.rate / 10) or chunk_size))
        for chunk in self.inner.read_chunks(key, size):
            self.bucket.take(len(chunk))
            yield chunk

    def __repr__(self) -> str:
        return f"RateLimitedMover({self.inner!r}, {self.bucket.rate:.0f} B/s)"
