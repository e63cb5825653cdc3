"""The WebHDFS mover against the WebHDFS protocol server (tests/servers/webhdfs.py), in
both of its modes: a NameNode that redirects data to a "datanode", and an HttpFS gateway.
A small ``dfs.ls.limit`` makes every listing of more than three entries page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl.movers.webhdfs import WebHDFSMover

from ..servers.webhdfs import WebHDFSServer
from .contract import MoverContract


class TestWebHDFSMover(MoverContract):
    redirect = True

    @pytest.fixture
    def mover(self, tmp_path: Path) -> Iterator[WebHDFSMover]:
        with WebHDFSServer(tmp_path / "hdfs", batch_size=3, redirect=self.redirect) as server:
            mover = WebHDFSMover(f"{server.url}/data/tier", user="hdfs")
            yield mover
            mover.close()


class TestHttpFSGatewayMover(TestWebHDFSMover):
    redirect = False
