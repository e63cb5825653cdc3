"""`tierctl plan` when the cost guard holds every change: not "No changes."."""

from __future__ import annotations

import time

from .conftest import Sandbox
from .test_cost import GUARDED_POLICY, KIB


def test_a_plan_held_whole_by_the_guard_does_not_say_no_changes(sandbox: Sandbox, cli) -> None:
    (sandbox.root / "archive").mkdir()
    sandbox.write_config(GUARDED_POLICY)
    # Moved to archive (a 90-day class) and deleted 10 days later: the guard holds the copy.
    sandbox.put("hot", "logs/doomed.log", b"d" * 64 * KIB, age_days=390, now=time.time())
    assert cli("-c", sandbox.config, "scan").code == 0
    result = cli("-c", sandbox.config, "plan")
    assert result.code == 0, result.err
    assert "No changes." not in result.out
    assert "Nothing to apply: the cost guard holds all 1 changes of 1 objects." in result.out
    assert "Skipped for cost (1; `--allow-costly` keeps them)" in result.out
    allowed = cli("-c", sandbox.config, "plan", "--allow-costly")
    assert "No changes." not in allowed.out and "Nothing to apply" not in allowed.out
