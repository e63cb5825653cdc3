"""`tierctl demo`: a self-contained sandbox of three local tiers and a year of files."""

from __future__ import annotations

import os
import random

DEMO_CONFIG = """\
# A tierctl sandbox made by `tierctl demo`. Edit it and run `tierctl -c {path} plan`.
version: 1
tiers:
  hot:  {{url: ./hot}}
  warm: {{url: ./warm}}
  cold: {{url: ./cold}}
datasets:
  logs: {{prefix: logs/, home: hot}}
policies:
  - name: logs-lifecycle
    dataset: logs
    schedule: "*/15 * * * *"
    include: ["**/*.log"]
    rules:
      - when: "age < 30d"
        place: [hot, warm]     # recent logs: fast reads, plus a second copy
      - when: "age < 180d"
        place: [warm]
      - when: "age >= 180d"
        place: [cold]
"""


def build_sandbox(folder: str, *, files: int = 300, now: float, seed: int = 7) -> str:
    """Create tiers hot/warm/cold under ``folder`` with ``files`` logs on hot, their mtimes
    spread over the past year; returns the policy file's path."""
    rng = random.Random(seed)
    for tier in ("hot", "warm", "cold"):
        os.makedirs(os.path.join(folder, tier), exist_ok=True)
    for i in range(files):
        age_days = rng.uniform(0, 365)
        mtime = now - age_days * 86400
        day = _day_of(mtime)
        key = f"logs/{day[:4]}/{day[5:7]}/{day}-{i:04d}.log"
        path = os.path.join(folder, "hot", *key.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        size = rng.randint(256, 48 * 1024)
        line = f"{day} event {i} ".encode()
        with open(path, "wb") as f:
            f.write((line * (size // len(line) + 1))[:size])
        os.utime(path, (mtime, mtime))
    config_path = os.path.join(folder, "policies.yaml")
    with open(config_path, "w", encoding="utf-8") as f:
        f.write(DEMO_CONFIG.format(path=config_path))
    return config_path


def _day_of(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d")
