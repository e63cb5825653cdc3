from __future__ import annotations

from collections.abc import Iterator

import pytest

from tierctl.movers.s3 import S3Mover

from ..servers.moto_server import MotoS3
from .conftest import S3_BUCKET, fresh_prefix, s3_options
from .contract import MoverContract


class TestS3Mover(MoverContract):
    storage_class = "GLACIER"

    @pytest.fixture
    def mover(self, moto_s3: MotoS3) -> Iterator[S3Mover]:
        mover = S3Mover(f"s3://{S3_BUCKET}/{fresh_prefix()}", **s3_options(moto_s3))
        yield mover
        mover.close()
