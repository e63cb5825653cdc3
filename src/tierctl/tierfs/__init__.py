"""``tier://``: one read-only namespace over every tier, for fsspec-aware applications.

``tier://DATASET/KEY`` names an object by its dataset and its key below the dataset's
prefix; the index says where it lives and the best readable placement is read (pandas,
pyarrow, dask and anything else that opens fsspec URLs). Reads are recorded as the
placement's last access; with a ``cache:`` tier, remote reads are kept locally. The
filesystem is registered with fsspec as ``tier`` (entry point ``fsspec.specs``).
See docs/tierfs.md.
"""

from tierctl.tierfs.errors import ArchivedOnly, NotInNamespace, ReadOnlyNamespace
from tierctl.tierfs.fs import TierFile, TierFileSystem

__all__ = ["ArchivedOnly", "NotInNamespace", "ReadOnlyNamespace", "TierFile", "TierFileSystem"]
