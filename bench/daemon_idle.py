#!/usr/bin/env python
"""Issue 8, goal 5: the daemon idle between runs uses ~0 CPU.

Starts `tierctl daemon` on a policy due once a year (with and without the loopback metrics
endpoint), lets it settle, then reads its CPU time and wake-ups (context switches of all
its threads) from /proc over a window. Linux only.

python bench/daemon_idle.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
version: 1
index: {index}
tiers:
  hot: {{url: "file://{root}/hot"}}
  cold: {{url: "file://{root}/cold"}}
datasets:
  d: {{prefix: "", home: hot}}
policies:
  - name: yearly
    dataset: d
    schedule: "0 0 1 1 *"
    rules:
      - when: "age > 1d"
        place: [cold]
{metrics}"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _wakeups(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def measure(seconds: float, metrics: bool) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory(prefix="tierctl-idle-") as root:
        for tier in ("hot", "cold"):
            os.makedirs(f"{root}/{tier}")
        listen = 'metrics: {listen: "127.0.0.1:0"}\n' if metrics else ""
        config = Path(root, "policies.yaml")
        config.write_text(CONFIG.format(index=f"{root}/index.db", root=root, metrics=listen))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tierctl", "-c", str(config), "daemon"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(3.0)  # start-up (imports, first metrics write) is not idleness
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited early with {proc.returncode}")
            cpu0, wake0, t0 = _cpu_seconds(proc.pid), _wakeups(proc.pid), time.monotonic()
            time.sleep(seconds)
            cpu1, wake1, t1 = _cpu_seconds(proc.pid), _wakeups(proc.pid), time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    window = t1 - t0
    return {
        "case": "daemon idle, metrics endpoint" if metrics else "daemon idle",
        "window_s": round(window, 1),
        "cpu_ms_per_min": round((cpu1 - cpu0) * 1000 * 60 / window, 2),
        "wakeups_per_s": round((wake1 - wake0) / window, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per case")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    rows = [measure(args.seconds, metrics=False), measure(args.seconds, metrics=True)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        print(
            f"{row['case']:<32} CPU {row['cpu_ms_per_min']:>7} ms/min"
            f"   wake-ups {row['wakeups_per_s']:>6}/s   (window {row['window_s']} s)"
        )


if __name__ == "__main__":
    main()
