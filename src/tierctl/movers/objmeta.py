"""Content mtime as object metadata, in rclone's formats, plus bucket URL parsing.

An object's age is the age of its content, so its mtime travels with every copy as user
metadata named ``mtime``, exactly as rclone writes it; an object written by the rclone
mover reads back with the same mtime through the S3/GCS movers, and the other way round.

* S3: ``x-amz-meta-mtime: 1700000000.123456789`` (seconds since the epoch, decimal,
  trailing zeros trimmed).
* GCS: ``metadata.mtime: 2023-11-14T22:13:20.123456789Z`` (RFC 3339, nanoseconds), and
  ``goog-reserved-file-mtime: 1700000000`` (whole seconds; gsutil's key), which is read
  when ``mtime`` is absent.

An object without mtime metadata (written by another tool) has the store's own
modification time as its content mtime, as rclone does. Movers that rewrite an object
in place (storage-class changes) pin that fallback into metadata first, so a transition
never makes an object look younger.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime
from urllib.parse import urlsplit

from tierctl.errors import ConfigError

MTIME_KEY = "mtime"
GSUTIL_MTIME_KEY = "goog-reserved-file-mtime"

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$"
)


def _nanoseconds(mtime: float) -> int:
    return round(mtime * 1e9)


def format_float_mtime(mtime: float) -> str:
    """rclone's S3 form: ``1700000000.123456789``; whole seconds have no fraction."""
    seconds, nanos = divmod(_nanoseconds(mtime), 1_000_000_000)
    return f"{seconds}.{nanos:09d}".rstrip("0").rstrip(".") if nanos else str(seconds)


def format_rfc3339_mtime(mtime: float) -> str:
    """rclone's GCS form (Go's RFC3339Nano): ``2023-11-14T22:13:20.123456789Z``."""
    seconds, nanos = divmod(_nanoseconds(mtime), 1_000_000_000)
    import time

    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{nanos:09d}".rstrip("0") + "Z" if nanos else f"{base}Z"


def parse_mtime(value: str | None) -> float | None:
    """Either form (or whole seconds) to seconds since the epoch; None if unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    match = _RFC3339.match(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    seconds = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second)))
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    nanos = int((fraction or "0").ljust(9, "0"))
    return (seconds * 1_000_000_000 + nanos) / 1e9


def mtime_from_metadata(metadata: dict[str, str] | None) -> float | None:
    """The content mtime user metadata records (rclone's key, then gsutil's), else None."""
    if not metadata:
        return None
    lowered = {k.lower(): v for k, v in metadata.items()}
    for key in (MTIME_KEY, GSUTIL_MTIME_KEY):
        parsed = parse_mtime(lowered.get(key))
        if parsed is not None:
            return parsed
    return None


def timestamp(value: datetime) -> float:
    return value.timestamp()


def split_bucket_url(url: str, schemes: tuple[str, ...]) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix empty or '/'-ended)."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(
            f"{url!r} is not a bucket URL",
            hint=f"write it as {schemes[0]}://BUCKET/optional/prefix",
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{url!r}: bucket URLs take no '?' or '#' part")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""
