"""Create-only renames for local tiers: a finished temp file takes its final name only if
that name is free, in one atomic step (``LocalMover.write(if_absent=True)``).

``renameat2(RENAME_NOREPLACE)`` where the C library and the file system have it (Linux:
ext4, xfs, btrfs, tmpfs, ...); else a hard link, which also fails on an existing name, then
the temp name's removal; else (a file system without hard links) a check before a rename,
which is not atomic: the same guarantee a stat before every write gave.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Callable
from typing import Any

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
# The call exists but this kernel or file system does not offer the flag.
_NO_RENAMEAT2 = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)
# No hard links on this file system (vfat, some FUSE and network file systems).
_NO_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ENOSYS)


@functools.cache
def _renameat2() -> tuple[Callable[..., int], Any] | None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28 (or not Linux)
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call, ctypes.get_errno


def rename_no_replace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``; :class:`FileExistsError` (``src`` stays) if ``dst`` exists."""
    found = _renameat2()
    if found is not None:
        call, get_errno = found
        if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return
        code = get_errno()
        if code not in _NO_RENAMEAT2:
            raise OSError(code, os.strerror(code), dst)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
        os.replace(src, dst)
        return
    os.unlink(src)
