"""moto's S3 server over real HTTP on loopback, for tests.

``MotoS3`` starts ``ThreadedMotoServer`` on 127.0.0.1 with an OS-chosen port and gives the
endpoint plus the dummy credentials every client (s3fs, boto3, rclone) must use.
A session-scoped pytest fixture lives in ``tests/movers/conftest.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType

ACCESS_KEY = "tierctl-test-key"
SECRET_KEY = "tierctl-test-secret-Zq8"  # recognizable, so leak tests can grep for it
REGION = "us-east-1"


@dataclass
class MotoS3:
    """A running moto S3 server; ``endpoint_url`` is ``http://127.0.0.1:<port>``."""

    endpoint_url: str = ""
    _server: object = None

    def start(self) -> MotoS3:
        # moto reads these when it signs nothing but still wants a region.
        os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
        from moto.server import ThreadedMotoServer

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None

    def client(self):
        """A boto3 client for arranging and inspecting test state directly."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
