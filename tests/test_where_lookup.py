"""`tierctl where KEY` and `explain KEY` look a key up without knowing its dataset: the
lookup must still be a primary-key search under each dataset (never a read of the whole
placements table), find the key in every dataset the index holds, declared or not, and the
command must start without the planner, executor and cost model (docs: start-up time)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tierctl.index import Index
from tierctl.model import Entry

KEY = "shared/a.bin"
HEAVY = ["tierctl.executor", "tierctl.planner", "tierctl.cost", "tierctl.plan", "tierctl.index.journal"]


def _index(path: Path) -> Index:
    """Placements of KEY in datasets a, b and c (c on two tiers), plus neighbours that must
    not match, written through the index's own scan merge."""
    index = Index.open(str(path))
    now = 1_790_000_000.0
    for dataset, tier in (("a", "hot"), ("b", "hot"), ("c", "hot"), ("c", "cold")):
        entries = [Entry(k, 10, now - 5) for k in ("shared/a.bi", KEY, "shared/a.bin2")]
        index.scan_tier(dataset, tier, "shared/", entries, now)
    index.scan_tier("d", "hot", "shared/", [Entry("shared/other.bin", 1, now)], now)
    return index


def test_key_lookup_finds_every_dataset_by_primary_key(tmp_path: Path) -> None:
    statements: list[str] = []
    with _index(tmp_path / "index.db") as index:
        index.conn.set_trace_callback(statements.append)
        found = index.placements(KEY)
        index.conn.set_trace_callback(None)
        assert [(p.dataset, p.tier, p.key) for p in found] == [
            ("a", "hot", KEY),
            ("b", "hot", KEY),
            ("c", "cold", KEY),
            ("c", "hot", KEY),
        ]
        assert index.placements("shared/none") == []
        [query] = [s for s in statements if "placements" in s]
        plan = [row[3] for row in index.conn.execute("EXPLAIN QUERY PLAN " + query)]
    assert any("USING PRIMARY KEY (dataset=? AND key=?)" in step for step in plan), plan
    assert not any(step.startswith("SCAN placements") for step in plan), plan


def test_empty_index_finds_nothing(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "index.db")) as index:
        assert index.placements(KEY) == []


def test_where_starts_without_planner_executor_or_cost(tmp_path: Path) -> None:
    _index(tmp_path / "index.db").close()
    config = tmp_path / "policies.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            index: {tmp_path / "index.db"}
            tiers:
              hot: {{url: {tmp_path / "hot"}}}
              cold: {{url: {tmp_path / "cold"}}}
            datasets:
              a: {{prefix: shared/}}
            policies:
              - name: p
                dataset: a
                rules:
                  - {{when: "true", place: [hot]}}
            """
        )
    )
    probe = textwrap.dedent(
        f"""\
        import json, sys
        from tierctl.cli.main import run
        try:
            run(["-c", {str(config)!r}, "where", {KEY!r}])
        except SystemExit as exc:
            code = exc.code
        print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, done.stderr
