"""Retries as a wrapper around any mover (restic's backend wrappers, rclone's fserrors).

A call that raises :class:`MoverError` with ``retryable=True`` (throttling, 5xx, a reset
connection), or a connection/timeout ``OSError``, is tried again after an exponential
backoff with full jitter: ``uniform(0, min(max_delay, base_delay * 2**n))``. Other
errors pass straight through.

What is retried here is only what can be repeated from scratch: ``stat``, ``delete``,
``read_range``, the optional abilities, and the start of ``list``/``read_chunks`` (until the first item
is yielded; after that a retry would repeat or skip data). ``write`` is never retried
here: its input is a one-shot chunk iterator that cannot be replayed. A whole copy is
retried one level up, by the executor, which re-runs ``copy_verified`` and so re-reads
the source from its start (see ``ApplyOptions.retry``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from tierctl.errors import MoverError, ObjectNotFound
from tierctl.model import Entry
from tierctl.movers.base import CHUNK_SIZE, KnownEntries, Mover, MoverWrapper

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How often and how patiently to retry. ``attempts`` counts the first try."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): full jitter."""
        cap = min(self.max_delay, self.base_delay * (2**retry))
        return (rng or random).uniform(0, cap)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, MoverError):
        return exc.retryable
    return isinstance(exc, (ConnectionError, TimeoutError))


def call_with_retries(
    fn: Callable[[], T],
    backoff: Backoff,
    *,
    sleep: Callable[[float], object] = time.sleep,
    rng: random.Random | None = None,
) -> T:
    """``fn()``, retried on retryable errors; the last error propagates."""
    for retry in range(max(1, backoff.attempts)):
        try:
            return fn()
        except BaseException as exc:
            if retry + 1 >= backoff.attempts or not is_retryable(exc):
                raise
            sleep(backoff.delay(retry, rng))
    raise AssertionError("unreachable")  # pragma: no cover


class RetryingMover(MoverWrapper):
    """``inner`` with retries on its repeatable calls. Thread-safe as ``inner`` is."""

    def __init__(
        self,
        inner: Mover,
        backoff: Backoff | None = None,
        *,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner)
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = rng

    def _retry(self, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, self.backoff, sleep=self._sleep, rng=self._rng)

    def _retry_start(self, make: Callable[[], Iterator[T]]) -> Iterator[T]:
        """Retry opening a stream and getting its first item; then stream without retries."""
        state: list[Iterator[T]] = []

        def first() -> tuple[bool, T | None]:
            iterator = iter(make())
            state[:] = [iterator]
            for item in iterator:
                return True, item
            return False, None

        got, item = self._retry(first)
        if not got:
            return
        yield item  # type: ignore[misc]
        yield from state[0]

    def list(self, prefix: str = "", *, known: KnownEntries | None = None) -> Iterator[Entry]:
        return self._retry_start(lambda: self.inner.list(prefix, known=known))

    def stat(self, key: str) -> Entry:
        return self._retry(lambda: self.inner.stat(key))

    def read_chunks(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        return self._retry_start(lambda: self.inner.read_chunks(key, chunk_size))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        return self._retry(lambda: self.inner.read_range(key, start, end))

    def delete(self, key: str) -> None:
        tries = [0]

        def once() -> None:
            tries[0] += 1
            try:
                self.inner.delete(key)
            except ObjectNotFound:
                # A retry after an attempt that did delete, but whose answer was lost.
                if tries[0] == 1:
                    raise

        self._retry(once)

    def server_side_copy(
        self, src_key: str, dst: Mover, dst_key: str, *, storage_class: str | None = None
    ) -> Entry:
        target = dst.inner if isinstance(dst, RetryingMover) else dst
        return self._retry(
            lambda: self.inner.server_side_copy(src_key, target, dst_key, storage_class=storage_class)
        )

    def set_storage_class(self, key: str, storage_class: str) -> Entry:
        return self._retry(lambda: self.inner.set_storage_class(key, storage_class))

    def attributes(self, key: str) -> dict[str, str]:
        return self._retry(lambda: self.inner.attributes(key))

    def list_attributes(self, prefix: str = "") -> Iterator[tuple[str, dict[str, str]]]:
        return self._retry_start(lambda: self.inner.list_attributes(prefix))

    def set_attributes(self, key: str, attributes: Mapping[str, str]) -> None:
        self._retry(lambda: self.inner.set_attributes(key, attributes))

    def restore(self, key: str, *, days: int, tier: str) -> None:
        self._retry(lambda: self.inner.restore(key, days=days, tier=tier))

    def __repr__(self) -> str:
        return f"RetryingMover({self.inner!r}, attempts={self.backoff.attempts})"
