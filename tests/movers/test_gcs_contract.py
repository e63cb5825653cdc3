from __future__ import annotations

from collections.abc import Iterator

import pytest

from tierctl.movers.gcs import GCSMover

from ..servers.gcs_server import GcsEmulator
from .conftest import GCS_BUCKET, fresh_prefix, gcs_options
from .contract import MoverContract


class TestGCSMover(MoverContract):
    storage_class = "COLDLINE"
    unsupported = {  # noqa: RUF012
        "storage_class": "gcp-storage-emulator ignores storageClass in objects.rewrite "
        "(the mover detects it and raises Unsupported; real GCS applies it)",
    }

    @pytest.fixture
    def mover(self, gcs_emulator: GcsEmulator) -> Iterator[GCSMover]:
        mover = GCSMover(f"gs://{GCS_BUCKET}/{fresh_prefix()}", **gcs_options(gcs_emulator))
        yield mover
        mover.close()
