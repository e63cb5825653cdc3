"""The rclone mover over S3 (moto) and over GCS (the emulator)."""

from __future__ import annotations

import pytest

from tierctl.movers.rclone import RcloneMover

from ..servers.gcs_server import GcsEmulator
from ..servers.moto_server import MotoS3
from .conftest import GCS_BUCKET, S3_BUCKET, fresh_prefix, gcs_options, s3_options
from .contract import MoverContract


class TestRcloneS3(MoverContract):
    @pytest.fixture
    def mover(self, moto_s3: MotoS3) -> RcloneMover:
        options = {k: v for k, v in s3_options(moto_s3).items() if k != "part_size"}
        return RcloneMover(f"s3://{S3_BUCKET}/{fresh_prefix()}", **options)


class TestRcloneGCS(MoverContract):
    storage_class = "COLDLINE"
    unsupported = {  # noqa: RUF012
        "round_trip_large": "gcp-storage-emulator answers rclone's chunked resumable upload "
        "(objects above rclone's 8 MiB GCS chunk) with a 308 that rclone rejects; emulator only",
        "odd_keys": "gcp-storage-emulator returns mediaLink URLs with unescaped names ('%'), "
        "which rclone downloads from; emulator only",
    }

    @pytest.fixture
    def mover(self, gcs_emulator: GcsEmulator) -> RcloneMover:
        return RcloneMover(f"gs://{GCS_BUCKET}/{fresh_prefix()}", **gcs_options(gcs_emulator))
