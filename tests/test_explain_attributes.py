"""`tierctl explain` (text) shows the tags and metadata an object's rules test — what a
`tag.KEY` / `meta.KEY` condition saw — and stays quiet about them when no rule tests them.
Local files carry metadata as user.* extended attributes and no tags (docs/policies)."""

from __future__ import annotations

import os
import time

import pytest

from .conftest import Sandbox

pytestmark = pytest.mark.skipif(not hasattr(os, "setxattr"), reason="needs extended attributes")

POLICY = """\
version: 1
tiers:
  hot:  {{url: ./hot}}
  warm: {{url: ./warm}}
datasets:
  logs: {{prefix: logs/, home: hot}}
policies:
  - name: by-team
    dataset: logs
    rules:
      - when: {when}
        place: [warm]
      - when: "age >= 0s"
        place: [hot]
"""


def _scanned(cli, sandbox: Sandbox, when: str) -> None:
    sandbox.write_config(POLICY.format(when=when))
    path = sandbox.put("hot", "logs/a.log", b"x" * 10, age_days=3, now=time.time())
    os.setxattr(path, "user.team", b"ml")
    os.setxattr(path, "user.note", b'two words, "quoted"')
    assert cli("-c", sandbox.config, "scan").code == 0


def test_explain_prints_metadata_the_rules_test(cli, sandbox: Sandbox) -> None:
    _scanned(cli, sandbox, '\'meta.team == "ml" and tag.owner == "ann"\'')
    result = cli("-c", sandbox.config, "explain", "logs/a.log")
    assert result.code == 0, result.err
    lines = [line.strip() for line in result.out.splitlines()]
    assert 'metadata: note="two words, \\"quoted\\"", team="ml"' in lines
    assert "tags: none" in lines  # local files have no tags: known, and empty


def test_explain_is_quiet_about_metadata_no_rule_tests(cli, sandbox: Sandbox) -> None:
    _scanned(cli, sandbox, '"size > 1KiB"')
    result = cli("-c", sandbox.config, "explain", "logs/a.log")
    assert result.code == 0, result.err
    assert "metadata:" not in result.out and "tags:" not in result.out


def test_explain_says_when_metadata_is_not_known_yet(cli, sandbox: Sandbox) -> None:
    _scanned(cli, sandbox, '"size > 1KiB"')  # scanned while no rule tested metadata
    sandbox.write_config(POLICY.format(when="'meta.team == \"ml\"'"))
    result = cli("-c", sandbox.config, "explain", "logs/a.log")
    assert result.code == 0, result.err
    assert "metadata: not known (a `tierctl scan` reads them)" in result.out
