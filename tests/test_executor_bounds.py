"""Bounds the executor keeps however slowly the index records: at most ``2 * jobs`` objects
deleted from a store and not yet recorded (what a kill can leave the index listing)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from tierctl import api
from tierctl.executor import ApplyOptions, execute, local_runner

from .conftest import Sandbox

FILES = 300
JOBS = 4


def test_deletes_never_run_more_than_2_jobs_ahead_of_the_index(sandbox: Sandbox) -> None:
    """Moves hot -> cold (copy, then delete the source) with an index that takes 30 ms per
    batch: before each batch is recorded, the sources gone from disk exceed the moves
    recorded so far by at most 2 * jobs. Without the bound workers would run up to 512
    units ahead of a slow index."""
    now = time.time()
    for i in range(FILES):
        sandbox.put("hot", f"logs/{i // 50}/{i:04d}.log", b"x" * 64, age_days=200, now=now)
    config = api.load(sandbox.config)
    api.scan(config, now=now)
    plan = api.plan(config, now=now)
    assert sum(a.op == "delete" for a in plan.actions) == FILES
    hot = sandbox.tier("hot")
    recorded = 0
    ahead: list[int] = []

    with api.movers_for(config, ["hot", "cold"]) as movers, api.open_index(config) as index:
        threads = local_runner(movers)

        def slow_index(units: Any, options: ApplyOptions, events: Any, stopping: Any) -> Iterator[Any]:
            nonlocal recorded
            for batch in threads(units, options, events, stopping):
                gone = FILES - sum(len(files) for _, _, files in os.walk(hot))  # folders go too
                ahead.append(gone - recorded)
                time.sleep(0.03)  # the index is slow: workers keep going meanwhile
                yield batch
                recorded += sum(any(r.action.op == "delete" for r in results) for results in batch)

        report = execute(plan, movers, index, ApplyOptions(jobs=JOBS), runner=slow_index)
    assert (report.done, report.failed) == (2 * FILES, 0)
    assert len(ahead) > 10 and max(ahead) <= 2 * JOBS, ahead
    assert sandbox.files("hot") == {}
