from __future__ import annotations

from collections.abc import Iterator

import pytest

from tierctl.movers.s3 import _LEAN_OFF, S3Mover

from ..servers.moto_server import MotoS3
from .conftest import S3_BUCKET, fresh_prefix, s3_options
from .contract import MoverContract


class TestS3Mover(MoverContract):
    storage_class = "GLACIER"

    @pytest.fixture
    def mover(self, moto_s3: MotoS3) -> Iterator[S3Mover]:
        mover = S3Mover(f"s3://{S3_BUCKET}/{fresh_prefix()}", **s3_options(moto_s3))
        yield mover
        assert mover._lean is not _LEAN_OFF  # the lean path served its share throughout
        mover.close()


class TestS3MoverThroughS3fsOnly(MoverContract):
    """The same contract with every request through s3fs: the path a store takes when the
    lean one cannot serve it (a proxy in the environment, a region redirect)."""

    storage_class = "GLACIER"

    @pytest.fixture
    def mover(self, moto_s3: MotoS3) -> Iterator[S3Mover]:
        mover = S3Mover(f"s3://{S3_BUCKET}/{fresh_prefix()}", **s3_options(moto_s3))
        mover._lean = _LEAN_OFF
        yield mover
        assert mover._lean is _LEAN_OFF
        mover.close()
