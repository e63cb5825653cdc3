"""Run the tierctl CLI in this process under cProfile, every thread included.

    python bench/tierbench/profiled.py OUT.prof [--cpu] -- tierctl-args...

cProfile only sees the thread it was enabled on; apply does its copies on worker threads,
so each new thread gets a profiler of its own (``threading.setprofile``) and all are
merged into OUT.prof. ``--cpu`` times with per-thread CPU time instead of wall time
(waiting for the GIL or the disk then does not count).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading
import time
from types import FrameType
from typing import Any


def main() -> int:
    out, *rest = sys.argv[1:]
    cpu = "--cpu" in rest[: rest.index("--")]
    args = rest[rest.index("--") + 1 :]
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def new_profile() -> cProfile.Profile:
        p = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
        with lock:
            profiles.append(p)
        return p

    def start_in_thread(frame: FrameType, event: str, arg: Any) -> None:
        new_profile().enable()  # replaces this hook for the rest of the thread

    threading.setprofile(start_in_thread)
    sys.argv = ["tierctl", *args]
    main_profile = new_profile()
    code: int | str | None = 0
    main_profile.enable()
    try:
        from tierctl.cli.main import run  # inside the profile: imports are part of every command

        run()
    except SystemExit as exc:
        code = exc.code
    finally:
        main_profile.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(main_profile)
    for p in profiles:
        if p is not main_profile:
            stats.add(p)
    stats.dump_stats(out)
    return int(code or 0) if not isinstance(code, str) else 1


if __name__ == "__main__":
    sys.exit(main())
