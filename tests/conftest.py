"""Shared fixtures: local tier trees with chosen ages, a policy file writer, and the CLI
run in-process (fast) or as a real subprocess (for kill and signal tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tierctl.cli.main import run

# Fixtures every test module may ask for by name (``moto``, ``proxy``): registered here so
# no test imports a fixture (which linters see as an unused import, shadowed by the argument).
pytest_plugins = ["tests.reliability"]

DAY = 86400.0
NOW = 1_790_000_000.0  # a fixed clock for planner tests (2026-09-21)


def write_file(root: Path, key: str, data: bytes, mtime: float) -> Path:
    path = root.joinpath(*key.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run tierctl in-process: ``cli("-c", path, "plan")``."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            run(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - run() always exits
            code = 0
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def run_tierctl(
    *args: str, cwd: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run tierctl as a separate process (the installed package, same interpreter)."""
    return subprocess.run(
        [sys.executable, "-m", "tierctl", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class Sandbox:
    """A folder with tiers hot/warm/cold and a policy file."""

    root: Path

    def tier(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> str:
        return str(self.root / "policies.yaml")

    def write_config(self, text: str) -> str:
        (self.root / "policies.yaml").write_text(textwrap.dedent(text))
        return self.config

    def put(self, tier: str, key: str, data: bytes, *, age_days: float, now: float) -> Path:
        return write_file(self.tier(tier), key, data, now - age_days * DAY)

    def files(self, tier: str) -> dict[str, bytes]:
        base = self.tier(tier)
        if not base.exists():
            return {}
        return {
            p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()
        }


STANDARD_POLICY = """\
version: 1
tiers:
  hot:  {url: ./hot}
  warm: {url: ./warm}
  cold: {url: ./cold}
datasets:
  logs: {prefix: logs/, home: hot}
policies:
  - name: lifecycle
    dataset: logs
    rules:
      - when: "age < 7d"
        place: [hot, warm]
      - when: "age < 90d"
        place: [warm]
      - when: "age < 3y"
        place: [cold]
      - when: "age >= 3y"
        delete: true
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    box = Sandbox(tmp_path)
    for tier in ("hot", "warm", "cold"):
        box.tier(tier).mkdir()
    box.write_config(STANDARD_POLICY)
    return box
