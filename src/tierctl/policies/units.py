"""Durations (``30d``, ``12h``, ``1y``) and sizes (``1MiB``, ``10 GB``)."""

from __future__ import annotations

import re

DURATION_UNITS = {
    "s": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}
SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "pb": 10**15,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "pib": 2**50,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError with the accepted units otherwise."""
    match = _DURATION.match(text.lower())
    if not match or match.group(2) not in DURATION_UNITS:
        raise ValueError(
            f"bad duration {text!r}: expected a number and a unit "
            f"({', '.join(DURATION_UNITS)}), e.g. 7d or 12h"
        )
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes in ``text``; a bare number is bytes."""
    match = _SIZE.match(text)
    unit = (match.group(2) if match else "").lower() or "b"
    if not match or unit not in SIZE_UNITS:
        raise ValueError(
            f"bad size {text!r}: expected a number and a unit (B, KB, MB, GB, KiB, MiB, GiB, ...)"
        )
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def format_duration(seconds: float) -> str:
    for unit, length in (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:.0f}s"


def format_size(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
