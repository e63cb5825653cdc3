"""`allow_costly: true` on a policy keeps the copies and transitions the cost guard would
skip, for that policy only, in every plan: `tierctl plan` and a real `tierctl daemon --once`
(which has no --allow-costly flag of its own). The key is validated with a located error,
and it is part of the policy file's fingerprint (a saved plan made without it is refused)."""

from __future__ import annotations

import json

from tierctl import api

from .conftest import Sandbox, run_tierctl

# `archive` bills every object as at least 128 KiB: moving a 1 KiB file there loses money.
POLICY = """\
version: 1
tiers:
  hot:     {{url: ./hot}}
  archive: {{url: ./archive, cost: {{storage_gb_month: 0.004, min_size: 128KiB}}}}
datasets:
  logs:  {{prefix: logs/, home: hot}}
  other: {{prefix: other/, home: hot}}
policies:
  - name: logs-archive
    dataset: logs
    schedule: "*/2 * * * * *"
{allow}    rules:
      - when: "age >= 7d"
        place: [archive]
  - name: other-archive
    dataset: other
    schedule: "*/2 * * * * *"
    rules:
      - when: "age >= 7d"
        place: [archive]
"""


def _setup(sandbox: Sandbox, allow: str) -> None:
    sandbox.write_config(POLICY.format(allow=allow))
    now = 1_790_000_000.0
    for key in ("logs/a.log", "other/b.log"):
        sandbox.put("hot", key, b"x" * 1024, age_days=30, now=now)


def _plan(sandbox: Sandbox) -> dict:
    done = run_tierctl("-c", sandbox.config, "plan", "--json", cwd=str(sandbox.root))
    assert done.returncode in (0, 2), done.stderr
    return json.loads(done.stdout)


def test_daemon_once_keeps_costly_moves_of_an_allow_costly_policy(sandbox: Sandbox) -> None:
    _setup(sandbox, "    allow_costly: true\n")
    assert run_tierctl("-c", sandbox.config, "scan", cwd=str(sandbox.root)).returncode == 0
    doc = _plan(sandbox)
    assert {(a["op"], a["key"]) for a in doc["actions"]} == {("copy", "logs/a.log"), ("delete", "logs/a.log")}
    assert [s["key"] for s in doc["cost"]["skipped"]] == ["other/b.log"]  # the other policy's guard holds

    once = run_tierctl("-c", sandbox.config, "daemon", "--once", cwd=str(sandbox.root), timeout=60)
    assert once.returncode == 0, once.stderr
    assert set(sandbox.files("archive")) == {"logs/a.log"}
    assert set(sandbox.files("hot")) == {"other/b.log"}


def test_without_allow_costly_the_daemon_keeps_the_guard(sandbox: Sandbox) -> None:
    _setup(sandbox, "")
    once = run_tierctl("-c", sandbox.config, "daemon", "--once", cwd=str(sandbox.root), timeout=60)
    assert once.returncode == 0, once.stderr
    assert sandbox.files("archive") == {}
    assert set(sandbox.files("hot")) == {"logs/a.log", "other/b.log"}


def test_allow_costly_must_be_a_boolean_with_a_located_error(sandbox: Sandbox) -> None:
    _setup(sandbox, '    allow_costly: "yes please"\n')
    [problem] = api.validate(sandbox.config).problems
    assert problem.location is not None and (problem.location.line, problem.location.column) == (12, 19)
    assert problem.message == "allow_costly must be true or false, got 'yes please'"
    assert problem.hint is not None and "docs/cost.md" in problem.hint
    done = run_tierctl("-c", sandbox.config, "plan", cwd=str(sandbox.root))
    assert done.returncode == 1 and "policies.yaml:12:19" in done.stderr and "Traceback" not in done.stderr


def test_allow_costly_changes_the_fingerprint(sandbox: Sandbox) -> None:
    _setup(sandbox, "")
    before = api.load(sandbox.config).fingerprint()
    sandbox.write_config(POLICY.format(allow="    allow_costly: false\n"))
    assert api.load(sandbox.config).fingerprint() == before  # the default, spelled out
    sandbox.write_config(POLICY.format(allow="    allow_costly: true\n"))
    assert api.load(sandbox.config).fingerprint() != before
