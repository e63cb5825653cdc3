"""S3 endpoints on 127.0.0.1 for the S3 cases: moto's server and ``rclone serve s3``."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ACCESS_KEY = "tierctl-bench-key"
SECRET_KEY = "tierctl-bench-secret"
REGION = "us-east-1"


@dataclass
class S3Endpoint:
    name: str
    endpoint_url: str = ""

    def rclone_env(self, remote: str = "BENCHS3") -> dict[str, str]:
        """rclone remote ``<remote>:`` for this endpoint, configured through the environment."""
        p = f"RCLONE_CONFIG_{remote}_"
        return {
            p + "TYPE": "s3",
            p + "PROVIDER": "Other",
            p + "ACCESS_KEY_ID": ACCESS_KEY,
            p + "SECRET_ACCESS_KEY": SECRET_KEY,
            p + "ENDPOINT": self.endpoint_url,
            p + "REGION": REGION,
            p + "FORCE_PATH_STYLE": "true",
        }

    def tier_options(self) -> dict[str, str]:
        """``options:`` of a tierctl ``s3://`` tier on this endpoint."""
        return {"endpoint_url": self.endpoint_url, "region": REGION, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)


class MotoServer(S3Endpoint):
    """moto's ThreadedMotoServer in this process, on an OS-chosen port."""

    def __init__(self) -> None:
        super().__init__("moto")
        self._server: Any = None

    def __enter__(self) -> MotoServer:
        os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


_LISTENING = re.compile(r"Starting s3 server on \[?(http://127\.0\.0\.1:(\d+))/?")


class RcloneS3Server(S3Endpoint):
    """``rclone serve s3`` over a local backend directory (each top-level folder is a bucket)."""

    def __init__(self, rclone: str, root: Path, env: dict[str, str], log: Path) -> None:
        super().__init__("rclone-serve-s3")
        self.rclone, self.root, self.env, self.log = rclone, root, env, log
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RcloneS3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [
            self.rclone, "serve", "s3", str(self.root),
            "--addr", "127.0.0.1:0",
            "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log.read_text(errors="replace"))
            if match:
                self.endpoint_url = match.group(1)
                _wait_for_port(int(match.group(2)), deadline)
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"rclone serve s3 did not start: {self.log.read_text(errors='replace')[-2000:]}")

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    # Buckets are made through the S3 API (the inherited ``create_bucket``): a folder made
    # behind the server's back stays invisible while its directory cache holds the old root.


def _wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
