"""The step journal (issue #7): what it records, and what the next run does with it.

Real `tierctl apply` processes are SIGKILLed at exact S3 requests (the fault proxy's kill
hooks in front of moto); the journal is read back with `tierctl runs show --steps --json`,
the stores with boto3 and plain file reads. What the journal adds beyond the live
reconciliation every run already does, and what these tests prove:

- a copy an interrupted run verified is recorded by the next run without reading the
  source again (no GetObject), while the target still lists the same;
- an S3 multipart upload an interrupted run started is aborted by the next run even when
  that key is never written again (before the journal it stayed until a lifecycle rule).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tierctl import api
from tierctl.executor import ApplyOptions, execute, unit_for
from tierctl.index import Index, journal
from tierctl.movers.objmeta import MTIME_KEY, format_float_mtime
from tierctl.plan import Action

from .conftest import Sandbox
from .reliability import (
    incomplete_uploads,
    kill_quietly,
    local_files,
    new_bucket,
    present_placements,
    s3_bytes,
    s3_objects,
    s3_tier,
    spawn,
    tierctl,
    write_config,
)
from .servers.faultproxy import Fault, FaultProxy, op
from .servers.moto_server import MotoS3

DAY = 86400.0
MIB = 1 << 20
PART = 5 * MIB


# -- helpers ---------------------------------------------------------------------------------------
def _run_killed_at(config: str, faults: FaultProxy, fault_op: str, n: int, *, jobs: int = 4) -> None:
    """Start `tierctl apply` and SIGKILL it when the proxy sees the ``n``-th ``fault_op``
    (before forwarding it: the store never acts on that request)."""
    box: list[Any] = []

    def kill(_request: Any) -> None:
        os.kill(box[0].pid, signal.SIGKILL)

    faults.clear()
    faults.add(Fault("hook", op(fault_op), after=n - 1, hook=kill))
    proc = spawn("-c", config, "apply", "--yes", "--json", "--jobs", str(jobs))
    box.append(proc)
    try:
        proc.wait(timeout=120)
    finally:
        kill_quietly(proc)
        faults.clear()
    assert proc.returncode == -signal.SIGKILL, f"apply was not killed: {proc.returncode}"


def _steps(config: str, run_id: int) -> list[dict[str, Any]]:
    shown = tierctl("-c", config, "runs", "show", str(run_id), "--steps", "--json")
    assert shown.returncode == 0, shown.stderr
    steps: list[dict[str, Any]] = json.loads(shown.stdout)["steps"]
    return steps


def _names(action: dict[str, Any]) -> list[str]:
    return [s["step"] for s in action["steps"]]


def _step(action: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in action["steps"] if s["step"] == name)


def _requested_keys(faults: FaultProxy, operation: str, since: int) -> list[str]:
    """Keys (below ``data/``) of the requests of one S3 operation the proxy saw from its
    ``since``-th logged request on."""
    keys = []
    for entry in list(faults.log)[since:]:
        if entry.request.operation == operation:
            path = unquote(entry.request.path)
            keys.append(path.split("/data/", 1)[1] if "/data/" in path else path)
    return keys


def _last_run(config: str) -> int:
    listed = tierctl("-c", config, "runs", "--json")
    assert listed.returncode == 0, listed.stderr
    return int(json.loads(listed.stdout)[0]["id"])


# -- a move killed between "verified" and "source deleted" ------------------------------------------
def test_move_killed_after_verify_is_finished_without_reading_again(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    """S3 -> local moves of 1 MiB objects, killed at the 3rd DeleteObject (the source
    delete of a verified copy, before S3 saw it)."""
    bucket = new_bucket(moto)
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          s3:   {s3_tier(bucket, proxy.endpoint_url)}
          cold: {{url: ./cold}}
        datasets:
          logs: {{prefix: logs/, home: s3}}
        policies:
          - name: archive
            dataset: logs
            rules:
              - when: "age >= 100d"
                place: [cold]
        """,
    )
    rng = random.Random(11)
    originals = {f"logs/{i:03d}.bin": rng.randbytes(MIB + i * 1000) for i in range(24)}
    client = moto.client()
    old = time.time() - 200 * DAY
    for key, data in originals.items():
        client.put_object(
            Bucket=bucket, Key=f"data/{key}", Body=data, Metadata={MTIME_KEY: format_float_mtime(old)}
        )
    (tmp_path / "cold").mkdir()
    assert tierctl("-c", config, "scan").returncode == 0
    index_path = api.load(config).index_path

    _run_killed_at(config, proxy, "DeleteObject", 3)
    killed = _last_run(config)

    # Every object has an intact copy: its original bytes on S3 or on cold (or both).
    on_s3, on_cold = s3_objects(moto, bucket), local_files(tmp_path / "cold")
    for key, data in originals.items():
        intact_s3 = key in on_s3 and s3_bytes(moto, bucket, key) == data
        assert intact_s3 or on_cold.get(key) == data, f"{key} has no intact copy after the kill"

    # The journal of the killed run: every action planned; verified copies whose move never
    # got to record its delete, each with its steps in order and the digest it proved.
    journal = _steps(config, killed)
    everything = json.loads(
        tierctl("-c", config, "runs", "show", str(killed), "--steps", "--all", "--json").stdout
    )["steps"]
    assert len(everything) == 2 * len(originals)
    assert all(a["steps"][0]["step"] == "planned" for a in everything)
    copies = {a["key"]: a for a in journal if a["op"] == "copy"}
    deletes = {a["key"]: a for a in journal if a["op"] == "delete"}
    resumable = {k: a for k, a in copies.items() if a["status"] == "unfinished" and "verified" in _names(a)}
    assert resumable, "no verified-but-unrecorded copy at the kill"
    for key, action in resumable.items():
        assert _names(action) == ["planned", "copying", "copied", "verified"], _names(action)
        verified = _step(action, "verified")["detail"]
        assert verified["size"] == len(originals[key]) and verified["checksum"].startswith("crc32c:")
        assert on_cold[key] == originals[key]  # the verified copy is really there
    # The kill came before S3 saw the 3rd DeleteObject: that source is still there, its copy
    # verified, and its delete never started (the move is half done).
    half_done = [k for k in resumable if k in on_s3]
    assert half_done, "no move was caught between verified and source deleted"
    for key in half_done:
        assert deletes.get(key, {"status": "unfinished"})["status"] == "unfinished"
        assert "deleted" not in _names(deletes.get(key, {"steps": []}))
    # The index records none of the unfinished work (the run died before its batch).
    assert {k for k, tier, _ in present_placements(index_path) if tier == "cold"}.isdisjoint(resumable)
    inodes = {k: os.stat(tmp_path / "cold" / k).st_ino for k in resumable}

    # The next apply resumes: no verified copy is read or written again, the half-done moves
    # are finished (their source deletes run, with their live checks), the rest is redone.
    since = len(proxy.log)
    final = tierctl("-c", config, "apply", "--yes", "--json", timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    assert json.loads(final.stdout)["failed"] == 0
    read_again = set(_requested_keys(proxy, "GetObject", since))
    assert read_again.isdisjoint(resumable), f"re-read: {sorted(read_again & set(resumable))}"
    assert {k: os.stat(tmp_path / "cold" / k).st_ino for k in resumable} == inodes  # not rewritten
    assert set(half_done) <= set(_requested_keys(proxy, "DeleteObject", since))
    # Copies the killed run had not verified are never trusted: their source is read again.
    unverified = {k for k, a in copies.items() if a["status"] == "unfinished" and "verified" not in _names(a)}
    assert unverified <= read_again
    resumed_run = _last_run(config)
    again = {a["key"]: a for a in _steps(config, resumed_run) if a["op"] == "copy"}
    for key in resumable:
        proof = _step(again[key], "verified")["detail"]
        assert proof["by"] == "journal" and proof["run"] == killed
        assert proof["checksum"] == _step(resumable[key], "verified")["detail"]["checksum"]
    marked = {a["key"]: a for a in _steps(config, killed) if a["op"] == "copy"}
    assert all("resumed" in _names(marked[k]) for k in resumable)

    # Converged: every object on cold only, with its original bytes; a fresh scan agrees.
    assert s3_objects(moto, bucket) == {}
    assert local_files(tmp_path / "cold") == originals
    before = present_placements(index_path)
    assert tierctl("-c", config, "scan").returncode == 0
    assert present_placements(index_path) == before == {(k, "cold", len(v)) for k, v in originals.items()}
    # A used verification is not used twice: the proofs are marked resumed.
    assert tierctl("-c", config, "plan", "--detailed-exitcode").returncode == 0


# -- a partial multipart upload of a key never written again --------------------------------------------
def test_partial_upload_of_a_killed_run_is_aborted_by_the_journal(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    """hot -> S3 with 5 MiB parts, killed at the 2nd UploadPart of a 15 MiB object. The object
    is then removed from hot (its key is never written again); the next apply aborts
    exactly the upload the journal names."""
    bucket = new_bucket(moto)
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          hot: {{url: ./hot}}
          s3:  {s3_tier(bucket, proxy.endpoint_url, part_size=PART)}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: offload
            dataset: logs
            rules:
              - when: "age >= 100d"
                place: [s3]
        """,
    )
    box = Sandbox(tmp_path)
    rng = random.Random(5)
    now = time.time()
    big = "logs/a-big.bin"
    originals = {big: rng.randbytes(3 * PART - 100)}
    originals |= {f"logs/small-{i}.log": rng.randbytes(2000 + i) for i in range(6)}
    for key, data in originals.items():
        box.put("hot", key, data, age_days=200, now=now)
    assert tierctl("-c", config, "scan").returncode == 0

    _run_killed_at(config, proxy, "UploadPart", 2, jobs=1)
    killed = _last_run(config)
    uploads = incomplete_uploads(moto, bucket)
    assert len(uploads) == 1 and uploads[0]["Key"] == f"data/{big}"
    action = next(a for a in _steps(config, killed) if a["key"] == big and a["op"] == "copy")
    assert action["status"] == "unfinished"
    assert _names(action)[:3] == ["planned", "copying", "uploading"]
    assert _step(action, "uploading")["detail"]["upload_id"] == uploads[0]["UploadId"]
    assert local_files(tmp_path / "hot") == originals  # nothing lost: hot untouched

    # The big file is removed by its owner; another file arrives, so there is work to apply.
    (tmp_path / "hot" / big).unlink()
    box.put("hot", "logs/later.log", b"later", age_days=200, now=now)
    assert tierctl("-c", config, "scan").returncode == 0
    since = len(proxy.log)
    final = tierctl("-c", config, "apply", "--yes", "--json", timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    assert incomplete_uploads(moto, bucket) == []
    assert _requested_keys(proxy, "AbortMultipartUpload", since) == [big]
    cleaned = next(a for a in _steps(config, killed) if a["key"] == big and a["op"] == "copy")
    detail = _step(cleaned, "cleaned")["detail"]
    assert detail == {"upload_id": uploads[0]["UploadId"], "aborted": True, "by_run": _last_run(config)}
    # The small files are on S3 with their bytes; the big one was never written there.
    listed = s3_objects(moto, bucket)
    assert big not in listed
    for key in [k for k in originals if k != big] + ["logs/later.log"]:
        assert s3_bytes(moto, bucket, key) == originals.get(key, b"later")
    # Cleaned once: the next run has nothing to abort.
    box.put("hot", "logs/later2.log", b"later2", age_days=200, now=now)
    assert tierctl("-c", config, "scan").returncode == 0
    since = len(proxy.log)
    assert tierctl("-c", config, "apply", "--yes", "--json").returncode == 0
    assert _requested_keys(proxy, "AbortMultipartUpload", since) == []


# -- steps of a normal run, in process and through a runner without a channel back ----------------------
def _serial_runner_without_channel(movers: Any) -> Any:
    """A runner like one whose units run in other processes: units get no step channel, so
    their steps come back on the results."""

    def run(units: list[list[Action]], options: ApplyOptions, events: Any, stopping: Any) -> Any:
        for unit in units:
            yield [unit_for(unit, movers, options, events.advanced, report_steps=False).run()]

    return run


def test_steps_of_a_move_are_the_same_with_or_without_a_step_channel(sandbox: Sandbox) -> None:
    """In-process runs of 3 local moves: once with the local runner (steps through the
    sink), once with a runner whose units have no channel back (steps on the results)."""
    now = time.time()
    config = api.load(sandbox.config)
    runs: dict[str, int] = {}
    for round_name, runner_kind in (("a", "local"), ("b", "no-channel")):
        for i in range(3):
            sandbox.put("hot", f"logs/{round_name}{i}.log", f"data {i}".encode(), age_days=30, now=now)
        api.scan(config)
        plan = api.plan(config)
        assert len(plan.actions) == 6  # 3 moves hot -> warm
        with Index.open(config.index_path) as index, api.movers_for(config, {"hot", "warm"}) as movers:
            runner = _serial_runner_without_channel(movers) if runner_kind == "no-channel" else None
            report = execute(plan, movers, index, ApplyOptions(jobs=2), runner=runner)
        assert report.outcome == "ok"
        runs[round_name] = report.run_id
    for round_name, run_id in runs.items():
        with Index.open(config.index_path) as index:
            actions = journal.run_steps(index, run_id)
        by_op = {(a.op, a.key): [s.step for s in a.steps] for a in actions}
        assert len(by_op) == 6
        for i in range(3):
            key = f"logs/{round_name}{i}.log"
            assert by_op[("copy", key)] == ["planned", "copying", "copied", "verified", "done"]
            assert by_op[("delete", key)] == ["planned", "deleted", "done"]
