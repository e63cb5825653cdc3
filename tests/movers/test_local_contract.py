from __future__ import annotations

from pathlib import Path

import pytest

from tierctl.movers.local import LocalMover

from .contract import MoverContract


class TestLocalMover(MoverContract):
    @pytest.fixture
    def mover(self, tmp_path: Path) -> LocalMover:
        return LocalMover((tmp_path / "tier").as_uri())
