"""``tierctl migrate --preserve``: carrying mode, owner and group along with the content.

What each destination does with an attribute is decided once, from its capabilities:
*native* where the store holds it (local files: chmod/chown; HDFS: SETPERMISSION and
SETOWNER), *metadata* where it records user metadata (S3 ``x-amz-meta-mode``, GCS custom
metadata, in rclone's keys: see :mod:`tierctl.movers.attributes`). A destination that can
do neither is refused before anything is copied.

Copies: :class:`PreservingMover` wraps the destination; each ``write`` takes the source's
attributes (``Mover.attributes``, one status request) and passes them as ``metadata``.
Where they are native it then reads them back: an owner the store refused (as non-root
on a local disk, or as a non-superuser on HDFS, only your own user and groups can be
given) is reported as *not preserved*; the content copy stands, and the run exits 3.

Re-runs: an object whose content is unchanged is never copied again for its attributes.
Where both sides list attributes (local and HDFS), :func:`reapply` walks the two
listings together and sets in place what differs (as DistCp ``-update -p`` does); on S3
and GCS the recorded metadata is refreshed the next time the content is copied.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tierctl.errors import ConfigError, MoverError, ObjectNotFound
from tierctl.model import Entry
from tierctl.movers import attributes as posix
from tierctl.movers.base import Mover, MoverWrapper, Unsupported

ATTRIBUTES = ("mode", "owner", "group")
PRESERVABLE = ("mtime", *ATTRIBUTES)
ALIASES = {"perms": "mode", "permissions": "mode", "all": "all"}
# The metadata keys that carry each attribute (rclone's keys, plus names).
KEYS = {"mode": (posix.MODE,), "owner": (posix.OWNER, posix.UID), "group": (posix.GROUP, posix.GID)}
EXAMPLES_KEPT = 1000  # per run, in memory; the count is exact


def parse_preserve(values: Iterable[str]) -> tuple[str, ...]:
    """``["mtime,mode", "owner"]`` -> ``("mtime", "mode", "owner")`` (known order); ``all``
    is every attribute. Raises ValueError naming an unknown word. ``mtime`` is always in."""
    chosen = {"mtime"}
    for item in values:
        for word in (w.strip().lower() for w in item.split(",")):
            if not word:
                continue
            name = ALIASES.get(word, word)
            if name == "all":
                chosen.update(PRESERVABLE)
            elif name in PRESERVABLE:
                chosen.add(name)
            else:
                raise ValueError(
                    f"unknown attribute {word!r}; known: mtime, mode (or perms), owner, group, all"
                )
    return tuple(n for n in PRESERVABLE if n in chosen)


@dataclass(frozen=True)
class Preservation:
    """Which attributes a run carries, and how the destination keeps each."""

    requested: tuple[str, ...]
    native: tuple[str, ...]  # applied to the object itself
    metadata: tuple[str, ...]  # recorded as user metadata

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(a for a in self.requested if a in ATTRIBUTES)

    @property
    def native_attributes(self) -> tuple[str, ...]:
        return tuple(a for a in self.native if a in ATTRIBUTES)

    def to_dict(self, outcome: AttributeOutcome) -> dict[str, Any]:
        return {
            "requested": list(self.requested),
            "native": list(self.native),
            "metadata": list(self.metadata),
            "applied_files": outcome.applied,
            "updated_files": outcome.updated,
            "not_preserved_files": outcome.not_preserved,
            "not_preserved": [{"key": k, "attribute": n, "why": w} for k, n, w in outcome.examples],
        }

    def select(self, found: Mapping[str, str]) -> dict[str, str]:
        """The metadata keys of ``found`` that carry the requested attributes."""
        keys = {k for a in self.attributes for k in KEYS[a]}
        return {k: v for k, v in posix.only_attributes(found).items() if k in keys}


def plan_preservation(
    requested: tuple[str, ...], source: Mover, destination: Mover, warnings: list[str]
) -> Preservation:
    """How ``destination`` keeps each of ``requested``; :class:`Unsupported` if it cannot
    keep one at all. A source with no attributes to give is a warning."""
    try:
        requested = parse_preserve(requested)
    except ValueError as exc:
        raise ConfigError(f"preserve: {exc}") from None
    held = set(destination.capabilities.attributes)
    native: list[str] = []
    metadata: list[str] = []
    for name in requested:
        if name == "mtime":
            (native if held else metadata).append(name)  # file systems keep it; stores record it
        elif held & set(KEYS[name]):
            native.append(name)
        elif destination.capabilities.user_metadata:
            metadata.append(name)
        else:
            raise Unsupported(
                f"--preserve {name}: {destination.url} can neither hold nor record it",
                hint="leave it out of --preserve, or migrate to a store that keeps metadata",
            )
    preservation = Preservation(requested, tuple(native), tuple(metadata))
    if preservation.attributes and not (source.capabilities.attributes or source.capabilities.user_metadata):
        warnings.append(
            f"--preserve {','.join(preservation.attributes)}: {source.url} keeps no mode, owner or group;"
            " nothing to carry"
        )
    return preservation


@dataclass
class AttributeOutcome:
    """What happened to the attributes of a run's objects. Thread-safe."""

    applied: int = 0  # objects written with every requested attribute in place
    updated: int = 0  # unchanged objects whose attributes a re-run set in place
    not_preserved: int = 0
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (key, attribute, why)
    missed_keys: set[str] = field(default_factory=set, repr=False)  # not retried by ``reapply``
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, *, applied: int = 0, updated: int = 0) -> None:
        with self._lock:
            self.applied += applied
            self.updated += updated

    def missed(self, key: str, names: list[str], why: Callable[[str], str] | str) -> None:
        with self._lock:
            self.not_preserved += 1
            self.missed_keys.add(key)
            for name in names:
                if len(self.examples) < EXAMPLES_KEPT:
                    self.examples.append((key, name, why if isinstance(why, str) else why(name)))


def _why(name: str, wanted: Mapping[str, str], held: Mapping[str, str]) -> str:
    label, number = (posix.OWNER, posix.UID) if name == "owner" else (posix.GROUP, posix.GID)
    if name == "mode":
        return f"mode {wanted.get(posix.MODE)} asked, {held.get(posix.MODE)} held"
    asked = wanted.get(label) or wanted.get(number)
    has = held.get(label) or held.get(number)
    return (
        f"{name} {asked!r} asked, {has!r} held: not permitted to this user, "
        f"or no such {'user' if name == 'owner' else 'group'} there"
    )


class PreservingMover(MoverWrapper):
    """The destination of a migration: each ``write`` carries the source object's
    attributes as ``metadata`` and, where they are native, checks they took."""

    def __init__(self, inner: Mover, source: Mover, preservation: Preservation, outcome: AttributeOutcome):
        super().__init__(inner)
        self.source = source
        self.preservation = preservation
        self.outcome = outcome

    def write(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        size: int,
        mtime: float,
        durable: bool = False,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        if_absent: bool = False,
    ) -> Entry:
        wanted = self.preservation.select(self.source.attributes(key))
        stored = super().write(
            key,
            chunks,
            size=size,
            mtime=mtime,
            durable=durable,
            storage_class=storage_class,
            metadata={**(metadata or {}), **wanted} or None,
            if_absent=if_absent,
        )
        self._check(key, wanted)
        return stored

    def _check(self, key: str, wanted: Mapping[str, str]) -> None:
        names = self.preservation.native_attributes
        if not names:
            self.outcome.count(applied=1)
            return
        held = self.inner.attributes(key)
        differing = posix.differences(wanted, held, names)
        if differing:
            self.outcome.missed(key, differing, functools.partial(_why, wanted=wanted, held=held))
        else:
            self.outcome.count(applied=1)


def reapply(
    source: Mover,
    destination: Mover,
    prefix: str,
    preservation: Preservation,
    outcome: AttributeOutcome,
    warnings: list[str],
    wanted_key: Callable[[str], bool],
    *,
    dry_run: bool = False,
) -> None:
    """Set in place, on ``destination``, the native attributes that differ from the source's,
    for the keys on both sides that ``wanted_key`` accepts (``dry_run``: count them). Two
    listings, no request per unchanged object; a warning where a side lists no attributes."""
    names = preservation.native_attributes
    if not names:
        return
    if not source.capabilities.attributes or not destination.capabilities.attributes:
        warnings.append(
            f"attributes changed on {source.url} after an object was copied reach {destination.url}"
            " with its next content change (attributes are not in its listings)"
        )
        return
    for key, wanted, held in _both(source.list_attributes(prefix), destination.list_attributes(prefix)):
        if key in outcome.missed_keys or not wanted_key(key):
            continue
        wanted = preservation.select(wanted)
        differing = posix.differences(wanted, held, names)
        if not differing:
            continue
        if dry_run:
            outcome.count(updated=1)
            continue
        try:
            destination.set_attributes(key, wanted)
            now = destination.attributes(key)
        except ObjectNotFound:
            continue  # removed meanwhile
        except MoverError as exc:
            outcome.missed(key, differing, str(exc))
            continue
        still = posix.differences(wanted, now, names)
        if still:
            outcome.missed(key, still, functools.partial(_why, wanted=wanted, held=now))
        else:
            outcome.count(updated=1)


def _both(
    left: Iterator[tuple[str, dict[str, str]]], right: Iterator[tuple[str, dict[str, str]]]
) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """Keys present in both key-ordered streams, with both attribute sets."""
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        if a[0] == b[0]:
            yield a[0], a[1], b[1]
            a, b = next(left, None), next(right, None)
        elif a[0] < b[0]:
            a = next(left, None)
        else:
            b = next(right, None)
