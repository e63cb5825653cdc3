"""Bad input: unsafe object keys and paths (through check_key, scan and apply, on local
tiers and on S3), symlinks that escape a tier root, case-only and NFC/NFD twins; and saved
plans that were tampered with, made for another config or index, of another format, or
too old. Each is refused with a reason or handled deliberately, never a traceback."""

from __future__ import annotations

import json
import os
import time
import unicodedata
from pathlib import Path

import pytest

from tierctl import api
from tierctl.errors import PlanFileError, UnsafeKey
from tierctl.movers.base import check_key
from tierctl.movers.local import LocalMover

from .conftest import Sandbox
from .reliability import (
    local_files,
    new_bucket,
    s3_tier,
    tierctl,
    write_config,
)
from .servers.moto_server import MotoS3

DAY = 86400.0
NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")
BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "logs/../../outside",
    "logs/./x",
    "logs//x",
    "logs/x/",
    "logs/a\x00b",
    "logs/a\nb",
    "logs/a\rb",
    "logs/a\x1bb",
    "logs/a\x7fb",
    f"logs/{NFD}.log",
    ".",
    "..",
]
FIGURES: dict[str, int] = {}


@pytest.mark.parametrize("key", BAD_KEYS)
def test_check_key_refuses_unsafe_keys(key: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeKey):
        check_key(key)
    mover = LocalMover(str(tmp_path / "tier"))
    for call in (lambda: mover.stat(key), lambda: mover.write(key, [b"x"], size=1, mtime=0.0)):
        with pytest.raises(UnsafeKey):
            call()
    assert not (tmp_path / "outside").exists() and not any(tmp_path.parent.glob("outside*"))
    FIGURES["bad_keys_refused"] = FIGURES.get("bad_keys_refused", 0) + 1


def test_scan_and_apply_skip_unsafe_names_and_symlinks_on_a_local_tier(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    now = time.time()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"not tierctl's")
    hot = sandbox.tier("hot")
    good = {
        "logs/ok.log": b"ok",
        f"logs/{NFC}.log": b"nfc",
        "logs/Case.log": b"upper",  # case-only twins are two objects, as on S3 and ext4
        "logs/case.log": b"lower",
    }
    for key, data in good.items():
        sandbox.put("hot", key, data, age_days=100, now=now)
    sandbox.put("hot", "logs/ctl\x1bname.log", b"control", age_days=100, now=now)
    sandbox.put("hot", f"logs/{NFD}.log", b"nfd", age_days=100, now=now)
    (hot / "logs" / "link.log").symlink_to(outside / "secret.txt")
    (hot / "logs" / "linkdir").symlink_to(outside, target_is_directory=True)
    result = tierctl("-c", sandbox.config, "scan", env={"COLUMNS": "300"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    warned = [line for line in result.stderr.splitlines() if "skipped unsafe or non-regular key" in line]
    assert len(warned) == 4, result.stderr  # control char, NFD, file symlink, dir symlink
    applied = tierctl("-c", sandbox.config, "apply", "--yes", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert local_files(sandbox.tier("cold")) == good  # the NFD twin, control name and links stay put
    assert (outside / "secret.txt").read_bytes() == b"not tierctl's"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (hot / "logs" / "link.log").is_symlink() and (hot / f"logs/{NFD}.log").exists()
    FIGURES["unsafe_local_names_skipped"] = len(warned)


def test_a_destination_folder_that_is_a_symlink_out_of_the_root_is_refused(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    now = time.time()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sandbox.put("hot", "logs/x.log", b"data", age_days=100, now=now)
    (sandbox.tier("cold") / "logs").symlink_to(outside, target_is_directory=True)
    assert tierctl("-c", sandbox.config, "scan").returncode == 0
    result = tierctl("-c", sandbox.config, "apply", "--yes", "--json")
    assert result.returncode == 3
    problems = json.loads(result.stdout)["problems"]
    assert any(p["op"] == "copy" and "outside the tier root" in p["error"] for p in problems), problems
    assert list(outside.iterdir()) == []
    assert (sandbox.tier("hot") / "logs/x.log").read_bytes() == b"data"


def test_unsafe_keys_on_s3_are_skipped_by_scan(tmp_path: Path, moto: MotoS3) -> None:
    bucket = new_bucket(moto)
    client = moto.client()
    for key in ("logs/ok.log", "logs/../escape.log", f"logs/{NFD}.log", "logs/a//b.log", "logs/tab\tname"):
        client.put_object(Bucket=bucket, Key=f"data/{key}", Body=b"x")
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          s3: {s3_tier(bucket, moto.endpoint_url)}
          local: {{url: ./local}}
        datasets:
          logs: {{prefix: logs/, home: s3}}
        policies:
          - name: p
            dataset: logs
            rules:
              - when: "age >= 0d"
                place: [s3, local]
        """,
    )
    result = tierctl("-c", config, "scan", env={"COLUMNS": "300"})
    assert result.returncode == 0 and "Traceback" not in result.stderr
    assert result.stderr.count("skipped unsafe or non-regular key") == 4, result.stderr
    applied = tierctl("-c", config, "apply", "--yes", "--json")
    assert applied.returncode == 0, applied.stdout
    assert local_files(tmp_path / "local") == {"logs/ok.log": b"x"}
    assert not (tmp_path / "escape.log").exists()


# -- plan files ----------------------------------------------------------------------------------
def _plan(sandbox: Sandbox, tmp_path: Path) -> str:
    sandbox.put("hot", "logs/a.log", b"aaaa", age_days=100, now=time.time())
    assert tierctl("-c", sandbox.config, "scan").returncode == 0
    path = str(tmp_path / "plan.json")
    assert tierctl("-c", sandbox.config, "plan", "-o", path).returncode == 0
    return path


def _rewrite(path: str, change, name: str) -> str:
    """Change a plan's body and re-seal its checksum (a forger who knows the format)."""
    from tierctl.plan import _checksum

    with open(path) as f:
        doc = json.load(f)
    change(doc)
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "checksum")}
    doc["checksum"] = _checksum(body)
    out = f"{path}.{name}.json"
    with open(out, "w") as f:
        json.dump(doc, f)
    return out


def test_plan_files_refused_with_a_reason(sandbox: Sandbox, tmp_path: Path) -> None:
    plan_file = _plan(sandbox, tmp_path)
    with open(plan_file) as f:
        doc = json.load(f)
    assert doc["index_path"] == api.load(sandbox.config).index_path and doc["written_at"] > 0
    cases: dict[str, tuple[list[str], str]] = {}

    tampered = tmp_path / "tampered.json"
    tampered.write_text(Path(plan_file).read_text().replace('"hot"', '"warm"', 1))
    cases["tampered"] = (["-c", sandbox.config, "apply", str(tampered)], "checksum mismatch")
    other_config = tmp_path / "other.yaml"
    other_config.write_text(Path(sandbox.config).read_text().replace("age < 90d", "age < 80d"))
    cases["another config"] = (["-c", str(other_config), "apply", plan_file], "different policy file")
    cases["another index"] = (
        ["-c", sandbox.config, "--index", str(tmp_path / "other.db"), "apply", plan_file],
        "made from another index",
    )
    old = _rewrite(plan_file, lambda d: d.update(written_at=d["written_at"] - 8 * DAY), "old")
    cases["too old"] = (["-c", sandbox.config, "apply", old], "days ago")
    newer = _rewrite(plan_file, lambda d: d.update(version=99), "v99")
    cases["format version"] = (["-c", sandbox.config, "apply", newer], "plan format version 99")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff{not json")
    cases["not a plan"] = (["-c", sandbox.config, "apply", str(garbage)], "not a readable plan")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(Path(plan_file).read_text()[:200])
    cases["truncated"] = (["-c", sandbox.config, "apply", str(truncated)], "not a readable plan")
    for name, (args, reason) in cases.items():
        result = tierctl(*args)
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert reason in result.stderr and "Traceback" not in result.stderr, (name, result.stderr)
    assert (sandbox.tier("hot") / "logs/a.log").exists()  # nothing was applied
    FIGURES["bad_plan_files_refused"] = len(cases)
    # The genuine plan still applies.
    assert tierctl("-c", sandbox.config, "apply", plan_file).returncode == 0


def test_load_plan_age_limit_is_a_parameter(sandbox: Sandbox, tmp_path: Path) -> None:
    plan_file = _plan(sandbox, tmp_path)
    config = api.load(sandbox.config)
    written = api.load_plan(config, plan_file).written_at
    assert written is not None
    with pytest.raises(PlanFileError, match="days ago"):
        api.load_plan(config, plan_file, max_age=3600, now=written + 7200)
    assert api.load_plan(config, plan_file, max_age=None, now=written + 100 * DAY).actions


def test_zz_print_figures() -> None:
    print(f"\nreliability figures (input): {json.dumps(FIGURES)}")


_ = os
