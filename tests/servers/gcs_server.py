"""gcp-storage-emulator in-process over real HTTP on loopback, for tests.

gcsfs is pointed at it with ``endpoint_url`` and ``token="anon"``. gcsfs must not be
imported before ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` is set (else it probes for
zonal buckets over gRPC); :func:`prepare_environment` does that and is called on import.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from types import TracebackType


def prepare_environment() -> None:
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"


prepare_environment()

PROJECT = "tierctl-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class GcsEmulator:
    """A running emulator; ``endpoint_url`` is ``http://127.0.0.1:<port>``."""

    endpoint_url: str = ""
    _server: object = None

    def start(self) -> GcsEmulator:
        from gcp_storage_emulator.server import create_server

        # The emulator binds in its own thread and cannot report a port-0 choice back,
        # so pick a free port first (a race only with other processes binding right now).
        port = _free_port()
        server = create_server("127.0.0.1", port, in_memory=True)
        server.start()
        self._server = server
        self.endpoint_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None

    def create_bucket(self, name: str) -> str:
        import requests

        response = requests.post(
            f"{self.endpoint_url}/storage/v1/b", params={"project": PROJECT}, json={"name": name}, timeout=10
        )
        response.raise_for_status()
        return name

    def __enter__(self) -> GcsEmulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
