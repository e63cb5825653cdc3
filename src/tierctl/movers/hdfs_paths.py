"""Keys as paths under an HDFS root, shared by the ``hdfs://`` and ``webhdfs://`` movers."""

from __future__ import annotations

from tierctl.errors import UnsafeKey
from tierctl.movers.base import check_key

# The webhdfs:// mover writes under these names and renames; neither mover lists them.
TEMP_PREFIX = ".tierctl-tmp-"


class HdfsPaths:
    """``_path(key)``: the HDFS path of a key under ``root``. HDFS refuses ``:`` in names,
    so such keys are unsafe here on top of :func:`check_key`'s rules."""

    url: str
    root: str

    def _path(self, key: str) -> str:
        key = check_key(key)
        if ":" in key:
            raise UnsafeKey(f"unsafe key {key!r}: HDFS refuses ':' in names")
        return self._join(key)

    def _join(self, relative: str) -> str:
        if not relative:
            return self.root
        return f"{self.root.rstrip('/')}/{relative}"

    def _what(self, key: str) -> str:
        return f"{self.url}/{key}"
