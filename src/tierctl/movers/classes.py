"""The storage-class name check every object store shares; each store keeps its own list."""

from __future__ import annotations

from collections.abc import Collection

from tierctl.movers.base import Unsupported


def check_storage_class(store: str, storage_class: str, known: Collection[str]) -> str:
    """Return ``storage_class`` if ``store`` (a name for messages: "S3", "GCS") has it, else
    raise :class:`Unsupported` listing the classes it does have."""
    if storage_class not in known:
        raise Unsupported(
            f"{store} has no storage class {storage_class!r}",
            hint=f"use one of: {', '.join(sorted(known))}",
        )
    return storage_class
