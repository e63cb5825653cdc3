"""The ``hdfs://`` mover over a local folder, for the tests: no NameNode can run here.

:class:`LocalHdfsMover` is :class:`HdfsMover` with :meth:`~HdfsMover.connect` returning
``pyarrow.fs.SubTreeFileSystem(cluster_root, LocalFileSystem())`` instead of a
HadoopFileSystem: every other line of the mover runs unchanged, and the URL's path
(``hdfs://namenode:8020/warehouse``) is a folder under ``cluster_root``. Objects are placed
on it with :func:`place`, a :class:`LocalMover` on the same folder (the cluster's other
writers), since the ``hdfs://`` mover does not write.

:func:`recording_filesystem` wraps a pyarrow FileSystem and records each listing request,
so a test can see how the mover walks a tree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from pyarrow import fs as pafs

from tierctl.model import Entry
from tierctl.movers.hdfs import HdfsMover
from tierctl.movers.local import LocalMover


class LocalHdfsMover(HdfsMover):
    """``HdfsMover(url, **options)`` over ``cluster_root`` (set by the test, see the module docs)."""

    cluster_root: ClassVar[Path | None] = None
    wrap: ClassVar[Any] = None  # a callable FileSystem -> FileSystem, e.g. recording_filesystem

    def connect(self) -> pafs.FileSystem:
        assert self.cluster_root is not None, "set LocalHdfsMover.cluster_root first"
        self.cluster_root.mkdir(parents=True, exist_ok=True)
        local = pafs.SubTreeFileSystem(str(self.cluster_root), pafs.LocalFileSystem())
        return self.wrap(local) if self.wrap is not None else local


def folder_of(cluster_root: Path, url: str) -> Path:
    """The local folder that holds ``url``'s files."""
    return cluster_root / unquote(urlsplit(url).path).strip("/")


def place(cluster_root: Path, url: str, key: str, data: bytes, mtime: float, **kwargs: Any) -> Entry:
    """Write ``key`` under ``url`` as another HDFS client would (temp name, rename, mtime)."""
    local = LocalMover(folder_of(cluster_root, url).as_uri())
    return local.write(key, [data], size=len(data), mtime=mtime, **kwargs)


class _Recorder(pafs.FileSystemHandler):
    """Passes every call to ``inner``; records each ``FileSelector`` listing and its size."""

    def __init__(self, inner: pafs.FileSystem, listings: list[tuple[str, bool, int]]) -> None:
        self.inner = inner
        self.listings = listings

    def get_type_name(self) -> str:
        return "recording"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        infos = list(self.inner.get_file_info(selector))
        self.listings.append((selector.base_dir, selector.recursive, len(infos)))
        return infos

    def create_dir(self, path: str, recursive: bool) -> None:
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        self.inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.inner.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.inner.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self.inner.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return self.inner.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self.inner.open_append_stream(path, metadata=metadata)


def recording_filesystem(inner: pafs.FileSystem, listings: list[tuple[str, bool, int]]) -> pafs.FileSystem:
    """``inner`` as a pyarrow FileSystem that appends ``(folder, recursive, entries)`` to
    ``listings`` for every FileSelector listing."""
    return pafs.PyFileSystem(_Recorder(inner, listings))
