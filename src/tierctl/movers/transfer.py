"""Verified copies between any two movers.

A copy hashes the source stream once, writes it, then proves the destination holds the
same bytes: by the store's own checksum where it reports one we computed too (no second
read), else by reading the destination back. A copy that fails verification is removed
and never reported as done; a source that changed while being read aborts the copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tierctl.errors import ObjectChanged, VerificationFailed
from tierctl.model import MTIME_WINDOW, Entry
from tierctl.movers.base import Mover
from tierctl.movers.digest import StreamDigest, algorithm_of, digest_of


@dataclass(frozen=True)
class CopyResult:
    entry: Entry  # the destination as stored
    checksum: str  # the verified digest, "algo:hex", in the run's algorithm
    bytes: int
    verified_by: str  # "store-checksum" | "write" (Capabilities.verified_writes) | "read-back"


def copy_verified(
    src: Mover,
    key: str,
    dst: Mover,
    *,
    expected: Entry,
    algorithm: str,
    durable: bool = False,
    storage_class: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> CopyResult:
    """Copy ``key`` from ``src`` to ``dst`` and verify it.

    ``expected`` is the source as planned (size, mtime); the content mtime it carries is
    given to the destination, so an object's age travels with every copy. ``metadata``
    (attributes such as ``mode``, ``owner``) goes to ``dst.write``; verification covers
    the content only.
    Raises :class:`ObjectChanged` if the source is not (or stops being) what was planned,
    :class:`VerificationFailed` if the destination's bytes differ.
    """
    current = src.stat(key)
    _require_unchanged(src, key, expected, current)
    algorithms = [algorithm, *(a for a in dst.capabilities.native_digests if a != algorithm)]
    stream = StreamDigest(algorithms)
    stored = dst.write(
        key,
        stream.wrap(src.read_chunks(key), on_bytes),
        size=expected.size,
        mtime=expected.mtime,
        durable=durable,
        storage_class=storage_class,
        metadata=metadata,
    )
    sums = stream.checksums()
    try:
        if stream.bytes != expected.size:
            raise ObjectChanged(f"{src.url}/{key}: read {stream.bytes} bytes, planned {expected.size}")
        _require_unchanged(src, key, expected, src.stat(key))
        verified_by = _verify(dst, key, stored, sums, algorithm, stream.bytes)
    except BaseException:
        _delete_quietly(dst, key)
        raise
    return CopyResult(entry=stored, checksum=sums[algorithm], bytes=stream.bytes, verified_by=verified_by)


def _require_unchanged(src: Mover, key: str, expected: Entry, current: Entry) -> None:
    if current.size != expected.size or abs(current.mtime - expected.mtime) > MTIME_WINDOW:
        raise ObjectChanged(
            f"{src.url}/{key} changed since it was planned "
            f"(size {expected.size} -> {current.size}, mtime {expected.mtime} -> {current.mtime})",
            hint="run `tierctl scan` and plan again",
        )


def _verify(dst: Mover, key: str, stored: Entry, sums: dict[str, str], algorithm: str, nbytes: int) -> str:
    if dst.capabilities.verified_writes and not stored.checksum:
        # The write returned having stored every byte of the stream we hashed; its size says
        # it holds them all. Reading it back would read the page cache the write just filled.
        if stored.size != nbytes:
            raise VerificationFailed(f"{dst.url}/{key}: stored {stored.size} bytes, the source had {nbytes}")
        return "write"
    if stored.checksum and algorithm_of(stored.checksum) in sums:
        if stored.checksum != sums[algorithm_of(stored.checksum)]:
            raise VerificationFailed(
                f"{dst.url}/{key}: store reports {stored.checksum}, "
                f"source was {sums[algorithm_of(stored.checksum)]}"
            )
        return "store-checksum"
    readback = digest_of(dst.read_chunks(key), algorithm)
    if readback != sums[algorithm]:
        raise VerificationFailed(f"{dst.url}/{key}: read back {readback}, source was {sums[algorithm]}")
    return "read-back"


def verify_same(a: Mover, b: Mover, key: str, algorithm: str) -> str:
    """Hash ``key`` on both movers; return the digest if equal, else raise VerificationFailed."""
    digest_a = digest_of(a.read_chunks(key), algorithm)
    digest_b = digest_of(b.read_chunks(key), algorithm)
    if digest_a != digest_b:
        raise VerificationFailed(f"{key}: {a.url} has {digest_a}, {b.url} has {digest_b}")
    return digest_a


def _delete_quietly(dst: Mover, key: str) -> None:
    with contextlib.suppress(Exception):
        dst.delete(key)
