"""Conditional creates of the S3 mover (``write(if_absent=True)``): ``If-None-Match: *``.

AWS S3 (since August 2024) and moto refuse a PUT with ``If-None-Match: *`` onto a key that
holds an object: 412 PreconditionFailed (409 ConditionalRequestConflict when a concurrent
write to the key wins), atomically, leaving the object as it was. Other S3-compatible
stores ignore the header and overwrite: ``rclone serve s3`` (v1.75) does. A header that
may be ignored is never trusted blindly: the first conditional write of a mover asks the
store once (:func:`store_refuses_overwrite`) and caches the answer for the mover's life.

Where the store refuses, a small object goes up in one conditional PUT (no HEAD first).
Where it does not, or the probe could not tell (no permission, an error), the mover HEADs
the key before writing, as callers did before: not atomic, so a writer racing between the
HEAD and the PUT can still be overwritten, exactly as without conditional creates.

Multipart uploads (objects above the part size) always HEAD the key before the upload
starts, not atomic either: the probe proves what PutObject does, not what
CompleteMultipartUpload does, and a store that refused the header there would fail every
large copy. One HEAD is nothing next to the parts of a large upload.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from tierctl.errors import MoverError, ObjectExists

if TYPE_CHECKING:
    from tierctl.movers.s3 import S3Mover

# The probe object's name, at the root of the tier's prefix (where this writer may write).
PROBE_PREFIX = ".tierctl-probe-"
PROBE_KEY = f"{PROBE_PREFIX}if-none-match"

log = logging.getLogger(__name__)


class ConditionalCreates:
    """Whether one mover's store enforces ``If-None-Match: *``, probed on first need.
    Thread-safe: concurrent first writes wait for one probe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._enforced: bool | None = None

    @property
    def known(self) -> bool | None:
        """The probe's answer; None before it ran."""
        return self._enforced

    def enforced(self, mover: S3Mover) -> bool:
        enforced = self._enforced
        if enforced is None:
            with self._lock:
                if self._enforced is None:
                    self._enforced = store_refuses_overwrite(mover)
                enforced = self._enforced
        return enforced


def store_refuses_overwrite(mover: S3Mover) -> bool:
    """Create a probe object with ``If-None-Match: *``, then write it again the same way:
    True only if the store refuses the second write. The probe is deleted either way; it has
    one fixed name, deleted first too, so a run killed between its write and its delete
    leaves one empty object that the next probe removes. Two runs probing at once can only
    make each other see no refusal (or fail to write), and so HEAD before their creates:
    slower, never an overwrite."""
    key = PROBE_KEY
    with contextlib.suppress(MoverError):
        mover._delete_now(key)
    extra: dict[str, Any] = {"Metadata": {}}
    try:
        mover._put(key, b"", extra, mover.part_size, if_absent=True)
    except MoverError as exc:
        log.info("%s: conditional writes off: the probe could not be written (%s)", mover.url, exc)
        return False
    try:
        mover._put(key, b"", extra, mover.part_size, if_absent=True)
    except ObjectExists:
        return True
    except MoverError as exc:
        log.info("%s: conditional writes off: the probe's second write failed (%s)", mover.url, exc)
        return False
    finally:
        with contextlib.suppress(MoverError):
            mover._delete_now(key)
    log.info("%s: the store ignores If-None-Match: a HEAD precedes each create", mover.url)
    return False
