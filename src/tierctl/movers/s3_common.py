"""What the S3 mover's modules share: storage classes, restore states, version tokens, part
sizes, and the hook that reports multipart upload ids."""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from datetime import datetime

from tierctl.movers.classes import check_storage_class

MIB = 1 << 20
DEFAULT_PART_SIZE = 64 * MIB
MIN_PART_SIZE = 5 * MIB
MAX_PARTS = 10_000
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
STORAGE_CLASSES = frozenset(
    {
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER",
        "DEEP_ARCHIVE",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    }
)
RESTORE_TIERS = ("Expedited", "Standard", "Bulk")
# Called on the writing thread with (key, upload id) as soon as ``write`` has started a
# multipart upload, before any part is sent: the executor journals the id, so a run killed
# mid-upload can have exactly its own upload aborted later (``abort_upload``).
UPLOAD_STARTED: contextvars.ContextVar[Callable[[str, str], None] | None] = contextvars.ContextVar(
    "tierctl_s3_upload_started", default=None
)


def restore_state(storage_class: str | None, restore_header: str | None) -> str | None:
    """``Restore`` header (HEAD) of an archived object -> archived | restoring | restored."""
    if storage_class not in ARCHIVE_CLASSES:
        return None
    if not restore_header:
        return "archived"
    return "restoring" if 'ongoing-request="true"' in restore_header else "restored"


def version_token(etag: str, last_modified: datetime) -> str:
    # Listings give LastModified in ms, HEAD in whole seconds: compare whole seconds.
    return f"{etag}@{int(last_modified.timestamp())}"


def part_size_for(size: int, preferred: int) -> int:
    """``preferred`` unless 10,000 parts of it cannot hold ``size``; then the next MiB up."""
    if size <= preferred * MAX_PARTS:
        return preferred
    return math.ceil(size / MAX_PARTS / MIB) * MIB


def check_class(storage_class: str) -> str:
    return check_storage_class("S3", storage_class, STORAGE_CLASSES)
