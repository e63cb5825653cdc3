"""``hdfs://`` URLs: HDFS's native RPC protocol through libhdfs (pyarrow's HadoopFileSystem).

Not implemented in this tierctl: it would need a JVM, libhdfs and the cluster's Hadoop
configuration on every host that runs tierctl, and it could not be tested here. The same
cluster is reachable over WebHDFS (``webhdfs://namenode:9870/path``), which needs none of
that; the error below says so.
"""

from __future__ import annotations

from typing import Any, NoReturn
from urllib.parse import urlsplit

from tierctl.errors import MissingDependency


def open_hdfs(url: str, **options: Any) -> NoReturn:
    """Stands where a mover class would (the registry calls it with the tier's URL and
    options) and refuses with a clear message: use ``webhdfs://`` for HDFS tiers."""
    parts = urlsplit(url)
    host = parts.hostname or "namenode"
    raise MissingDependency(
        f"{url}: hdfs:// needs libhdfs (a JVM and the Hadoop client libraries through pyarrow),"
        " which this tierctl does not use",
        hint=f"use the same cluster over WebHDFS: webhdfs://{host}:9870{parts.path or '/'}"
        " (swebhdfs://...:9871 with TLS)",
    )
