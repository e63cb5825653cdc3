"""Failures of ``tier://`` paths. Each is a :class:`TierctlError` (message and hint, an exit code
for the CLI) and also the ``OSError`` that fsspec-aware applications catch."""

from __future__ import annotations

from tierctl.errors import ObjectArchived, ObjectNotFound, TierctlError


class NotInNamespace(ObjectNotFound, FileNotFoundError):
    """No object or folder at this ``tier://`` path (in the index)."""

    default_hint = "`tierctl ls DATASET` lists what the index knows; run `tierctl scan` if it is stale"


class ArchivedOnly(ObjectArchived, PermissionError):
    """Every copy of the object is in an archive storage class and none is restored."""


class ReadOnlyNamespace(TierctlError, PermissionError):
    """``tier://`` is read-only: objects are placed by policies, not written through it."""

    default_hint = "write to a tier's own URL (or its folder) and run `tierctl scan`; policies place it"
