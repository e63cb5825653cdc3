"""moto's S3 server in a child process, for tests that move many objects.

The in-process ``ThreadedMotoServer`` shares the test process's GIL with the client,
and moto spends ~5-10 ms of CPU per request: for thousands of uploads a second process
(another core) roughly doubles throughput. Same endpoint and credentials as
:mod:`.moto_server`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import requests

from .moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

__all__ = ["ACCESS_KEY", "REGION", "SECRET_KEY", "MotoS3Process"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3Process(MotoS3):
    """``with MotoS3Process() as s3: s3.endpoint_url``; killed on exit."""

    def __init__(self) -> None:
        super().__init__()
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoS3Process:
        port = _free_port()
        env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self.endpoint_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("moto server exited at start")
            try:
                requests.get(f"{self.endpoint_url}/moto-api/", timeout=1)
                return self
            except requests.exceptions.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start within 30 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
