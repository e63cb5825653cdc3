"""POSIX-ish object attributes (mode, owner, group) as string metadata, in rclone's keys.

rclone's local backend reports ``mode`` (octal, file type included: ``100644``), ``uid``
and ``gid`` (decimal); tierctl uses the same keys, so an object rclone wrote with
``--metadata`` reads back here and the other way round. Owner and group *names*, which
rclone does not carry, are ``owner`` and ``group`` (HDFS has names only; a local file
reports both where the ids resolve through ``pwd``/``grp``). On S3 and GCS the same keys
are user metadata (``x-amz-meta-mode: 100644``).

Applying a mode keeps only the permission bits (``0o777``): setuid, setgid and sticky
bits are never restored from metadata, as rclone decided for its local backend. An owner
is matched by name first and by number only when the name is unknown here (rsync's rule).
"""

from __future__ import annotations

import contextlib
import functools
import grp
import os
import pwd
from collections.abc import Mapping

MODE, UID, GID, OWNER, GROUP = "mode", "uid", "gid", "owner", "group"
ATTRIBUTE_KEYS = (MODE, UID, GID, OWNER, GROUP)
PERMISSION_BITS = 0o777


def only_attributes(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The attribute keys of ``metadata`` (case-insensitive, as S3 lower-cases them)."""
    if not metadata:
        return {}
    return {k.lower(): str(v) for k, v in metadata.items() if k.lower() in ATTRIBUTE_KEYS}


def permission_bits(value: str | None) -> int | None:
    """``"100644"``, ``"0644"`` or ``"644"`` -> ``0o644``; None when absent or not octal."""
    if not value:
        return None
    try:
        return int(value.strip(), 8) & PERMISSION_BITS
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@functools.lru_cache(maxsize=4096)
def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


@functools.lru_cache(maxsize=4096)
def _uid_of(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@functools.lru_cache(maxsize=4096)
def _gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _number(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def local_uid(attributes: Mapping[str, str]) -> int | None:
    """The local uid ``attributes`` ask for: the ``owner`` name if it resolves, else ``uid``."""
    name = attributes.get(OWNER)
    uid = _uid_of(name) if name else None
    return uid if uid is not None else _number(attributes.get(UID))


def local_gid(attributes: Mapping[str, str]) -> int | None:
    name = attributes.get(GROUP)
    gid = _gid_of(name) if name else None
    return gid if gid is not None else _number(attributes.get(GID))


def from_stat(st: os.stat_result) -> dict[str, str]:
    """A local file's attributes, rclone-style, plus the names where they resolve."""
    found = {MODE: f"{st.st_mode:o}", UID: str(st.st_uid), GID: str(st.st_gid)}
    owner, group = user_name(st.st_uid), group_name(st.st_gid)
    if owner is not None:
        found[OWNER] = owner
    if group is not None:
        found[GROUP] = group
    return found


def apply_to_fd(fd: int, attributes: Mapping[str, str]) -> None:
    """chown (as far as permitted: as ``cp -p``, a refused owner still lets the group
    through) then chmod an open regular file. The mode comes last: chown may clear bits."""
    uid, gid = local_uid(attributes), local_gid(attributes)
    if uid is not None or gid is not None:
        try:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        except PermissionError:
            if uid is not None and gid is not None:
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, -1, gid)
    bits = permission_bits(attributes.get(MODE))
    if bits is not None:
        os.fchmod(fd, bits)


def differences(wanted: Mapping[str, str], held: Mapping[str, str], names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` (``mode``, ``owner``, ``group``) ``held`` does not match ``wanted``
    for. An owner/group matches by name where both sides have one, else by number; a name
    the store holds but ``wanted`` lacks (and the other way round) cannot be compared and
    counts as a match when the numbers agree or are missing."""
    differing = []
    for name in names:
        if name == MODE:
            want = permission_bits(wanted.get(MODE))
            if want is not None and permission_bits(held.get(MODE)) != want:
                differing.append(name)
            continue
        label, number = (OWNER, UID) if name == OWNER else (GROUP, GID)
        if wanted.get(label) and held.get(label):
            if wanted[label] != held[label]:
                differing.append(name)
        elif wanted.get(number) is not None and held.get(number) is not None:
            if wanted[number] != held[number]:
                differing.append(name)
        elif wanted.get(label) or wanted.get(number) is not None:
            differing.append(name)  # asked for, and the store shows nothing comparable
    return differing
