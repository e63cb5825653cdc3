"""``apply --executor dask://...`` on a real dask.distributed LocalCluster (two worker
processes on 127.0.0.1): the same index and stores as the local executor, secrets never in
a task, a worker SIGKILLed mid-copy, stopping, and the CLI's errors."""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402
from distributed.protocol.pickle import dumps as pickle_dumps  # noqa: E402

from tierctl import api  # noqa: E402
from tierctl.executor import ActionResult, ApplyOptions, NoEvents  # noqa: E402
from tierctl.executor_dask import LiteralCredential, plan_batches  # noqa: E402
from tierctl.movers.s3_conditional import PROBE_PREFIX  # noqa: E402
from tierctl.plan import Action  # noqa: E402

from .conftest import DAY, STANDARD_POLICY, write_file  # noqa: E402
from .servers.faultproxy import Fault, FaultProxy, op  # noqa: E402
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3  # noqa: E402

BUCKET = "tierctl-dask"
KEY_VAR, SECRET_VAR = "TIERCTL_DASK_TEST_KEY", "TIERCTL_DASK_TEST_SECRET"
TASK_PREFIX = "tierctl-apply-"


class TaskLog(SchedulerPlugin):
    """On the (in-process) scheduler: every tierctl task's payload as the scheduler holds it,
    pickled again, and the tasks taken back from a worker before they finished."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.payloads: dict[str, bytes] = {}
        self.rescheduled: list[str] = []

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if not (isinstance(key, str) and key.startswith(TASK_PREFIX)):
            return
        if finish == "processing" and key not in self.payloads:
            ts = self.scheduler.tasks.get(key)
            if ts is not None and ts.run_spec is not None:
                self.payloads[key] = pickle_dumps(ts.run_spec)
        if start == "processing" and finish not in ("memory", "erred", "forgotten"):
            self.rescheduled.append(key)


class Cluster:
    def __init__(self, cluster: LocalCluster, client: Client, log: TaskLog) -> None:
        self.cluster, self.client, self.log = cluster, client, log

    @property
    def address(self) -> str:
        return str(self.cluster.scheduler_address)

    def worker_pids(self) -> dict[str, int]:
        return self.client.run(os.getpid)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[Cluster]:
    # The workers' own environment holds the S3 credentials (spawned workers inherit it);
    # the policy files below only name the variables.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_VAR, ACCESS_KEY)
        mp.setenv(SECRET_VAR, SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        with LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=2,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=40,
        ) as cluster:
            log = TaskLog(cluster.scheduler)
            cluster.scheduler.add_plugin(log, name="tierctl-test-tasklog")
            with Client(cluster, set_as_default=False) as client:
                client.wait_for_workers(2, timeout=60)
                yield Cluster(cluster, client, log)


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as server:
        server.create_bucket(BUCKET)
        yield server


# -- helpers -----------------------------------------------------------------------------------
def _populate(root: Path, now: float, count: int, size: int = 3000) -> dict[str, bytes]:
    """``count`` objects on tier ``hot`` with ages from 1 day to 4 years (a mix of copies,
    moves and expiry deletes under STANDARD_POLICY)."""
    ages = [1, 3, 10, 30, 100, 400, 2000]
    content = {}
    for i in range(count):
        key = f"logs/f{i:03d}.log"
        data = bytes([i % 251]) * size + random.Random(i).randbytes(64)  # same in every sandbox
        write_file(root / "hot", key, data, now - ages[i % len(ages)] * DAY - i)
        content[key] = data
    return content


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), int(p.stat().st_mtime))
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".tierctl" not in p.parts and p.name != "policies.yaml"
    }


def _placements(config: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(config.index_path) as db:
        return db.execute(
            "SELECT dataset, key, tier, size, mtime, checksum, storage_class, state FROM placements"
            " ORDER BY dataset, key, tier"
        ).fetchall()


def _actions(config: Any, run_id: int | None = None) -> list[tuple[Any, ...]]:
    where = "" if run_id is None else f" WHERE run_id = {int(run_id)}"
    with sqlite3.connect(config.index_path) as db:
        return db.execute(
            "SELECT run_id, action_id, op, key, source, target, status, bytes, checksum FROM actions"
            + where
            + " ORDER BY run_id, action_id"
        ).fetchall()


def _apply(config: Any, executor: str, **options: Any) -> Any:
    api.scan(config)
    plan = api.plan(config)
    return plan, api.apply(
        config, plan, options=ApplyOptions(digest=config.digest_algorithm, **options), executor=executor
    )


def _s3_objects(server: MotoS3, prefix: str) -> dict[str, bytes]:
    client = server.client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {
        o["Key"][len(prefix) :]: client.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for p in pages
        for o in p.get("Contents", [])
    }


def _s3_config(root: Path, endpoint: str, prefix: str, *, executor: str | None = None) -> Any:
    root.mkdir(parents=True, exist_ok=True)
    (root / "policies.yaml").write_text(
        f"""\
version: 1
tiers:
  hot: {{url: ./hot}}
  s3:
    url: "s3://{BUCKET}/{prefix}"
    options:
      endpoint_url: "{endpoint}"
      region: {REGION}
      key: "${{{KEY_VAR}}}"
      secret: "${{{SECRET_VAR}}}"
datasets:
  logs: {{prefix: logs/, home: hot}}
policies:
  - name: offload
    dataset: logs
    rules:
      - when: "age < 7d"
        place: [hot, s3]
      - when: "age >= 7d"
        place: [s3]
{f"executor: {executor}" if executor else ""}
"""
    )
    return api.load(str(root / "policies.yaml"))


def _local_config(root: Path, extra: str = "") -> Any:
    for tier in ("hot", "warm", "cold"):
        (root / tier).mkdir(parents=True, exist_ok=True)
    (root / "policies.yaml").write_text(STANDARD_POLICY + extra)
    return api.load(str(root / "policies.yaml"))


# -- the same result as the local executor -------------------------------------------------------
def test_local_tiers_same_index_and_stores_as_the_local_executor(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    now = time.time()
    configs = {}
    for name in ("local", "dask"):
        configs[name] = _local_config(tmp_path / name)
        _populate(tmp_path / name, now, 40)
    tasks_before = len(dask_cluster.log.payloads)

    plan_local, local = _apply(configs["local"], "local")
    plan_dask, remote = _apply(configs["dask"], dask_cluster.address)

    assert [a.to_dict() for a in plan_local.actions] == [a.to_dict() for a in plan_dask.actions]
    assert {a.op for a in plan_dask.actions} >= {"copy", "delete"}  # moves and expiry deletes
    assert len(dask_cluster.log.payloads) > tasks_before  # the units really ran on the cluster
    assert (remote.outcome, remote.done, remote.failed, remote.skipped, remote.bytes) == (
        local.outcome,
        local.done,
        local.failed,
        local.skipped,
        local.bytes,
    )
    assert remote.outcome == "ok" and remote.done == len(plan_dask.actions)
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "local")
    assert _placements(configs["dask"]) == _placements(configs["local"])
    strip = [row[1:] for row in _actions(configs["dask"], remote.run_id)]
    assert strip == [row[1:] for row in _actions(configs["local"], local.run_id)]
    assert api.plan(configs["dask"]).empty


def test_local_to_s3_same_result_and_no_secret_in_any_task(
    tmp_path: Path, dask_cluster: Cluster, moto: MotoS3
) -> None:
    now = time.time()
    run = f"r{time.time_ns()}"
    configs = {}
    for name in ("local", "dask"):
        configs[name] = _s3_config(tmp_path / name, moto.endpoint_url, f"{run}-{name}")
        _populate(tmp_path / name, now, 24)
    before = set(dask_cluster.log.payloads)

    _, local = _apply(configs["local"], "local")
    plan, remote = _apply(configs["dask"], dask_cluster.address)

    assert remote.outcome == local.outcome == "ok", remote.problems
    assert remote.done == local.done == len(plan.actions)
    assert _s3_objects(moto, f"{run}-dask/") == _s3_objects(moto, f"{run}-local/")
    assert _tree(tmp_path / "dask") == _tree(tmp_path / "local")
    assert _placements(configs["dask"]) == _placements(configs["local"])
    assert api.plan(configs["dask"]).empty

    payloads = [p for k, p in dask_cluster.log.payloads.items() if k not in before]
    assert payloads
    assert all(SECRET_KEY.encode() not in p and ACCESS_KEY.encode() not in p for p in payloads)
    # The tasks do carry the tier options, as references for the worker to resolve.
    assert all(f"${{{SECRET_VAR}}}".encode() in p for p in payloads)


def test_a_literal_credential_is_refused_before_anything_runs(
    tmp_path: Path, dask_cluster: Cluster, moto: MotoS3
) -> None:
    _s3_config(tmp_path, moto.endpoint_url, f"r{time.time_ns()}")
    text = (tmp_path / "policies.yaml").read_text().replace(f"${{{SECRET_VAR}}}", SECRET_KEY)
    (tmp_path / "policies.yaml").write_text(text)
    config = api.load(str(tmp_path / "policies.yaml"))
    _populate(tmp_path, time.time(), 3)
    api.scan(config)  # here, in the coordinator, the literal secret is fine
    plan = api.plan(config)
    assert any(a.target == "s3" for a in plan.actions)
    before = set(dask_cluster.log.payloads)

    with pytest.raises(LiteralCredential, match="'secret' is written in the policy file"):
        api.apply(config, plan, executor=dask_cluster.address)

    assert set(dask_cluster.log.payloads) == before
    assert _actions(config) == []
    assert api.apply(config, plan, executor="local").outcome == "ok"


# -- a worker lost mid-copy ------------------------------------------------------------------------
def _worker_running(dask_scheduler: Any, object_key: str) -> str | None:
    """On the scheduler: the worker processing the tierctl batch that holds ``object_key``."""
    needle = object_key.encode()
    for key, ts in list(dask_scheduler.tasks.items()):
        if not (isinstance(key, str) and key.startswith(TASK_PREFIX)):
            continue
        if ts.processing_on is not None and ts.run_spec is not None and needle in pickle_dumps(ts.run_spec):
            return str(ts.processing_on.address)
    return None


def test_worker_killed_mid_copy_the_batch_runs_elsewhere_and_nothing_is_duplicated(
    tmp_path: Path, dask_cluster: Cluster, moto: MotoS3
) -> None:
    prefix = f"kill{time.time_ns()}"
    now = time.time()
    pids = dask_cluster.worker_pids()
    killed: dict[str, Any] = {}

    def kill_the_copier(request: Any) -> None:
        # The store has just stored this object (after_forward): the worker dies before it
        # can report the copy, so the object is on S3 but nowhere in the index.
        object_key = request.path.partition(f"{prefix}/")[2]
        address = dask_cluster.client.run_on_scheduler(_worker_running, object_key=object_key)
        if address in pids:
            os.kill(pids[address], signal.SIGKILL)
            killed.update(key=object_key, address=address)

    with FaultProxy(moto.endpoint_url, lifetime=120) as proxy:
        config = _s3_config(tmp_path, proxy.endpoint_url, prefix)
        content = _populate(tmp_path, now, 24, size=40_000)
        young = {k for k in content if (now - (tmp_path / "hot" / k).stat().st_mtime) < 7 * DAY}
        rescheduled_before = len(dask_cluster.log.rescheduled)
        uploads = lambda r: op("PutObject")(r) and PROBE_PREFIX not in r.path  # noqa: E731
        proxy.add(Fault("hook", match=uploads, after=5, hook=kill_the_copier, after_forward=True))

        first_plan, first = _apply(config, dask_cluster.address)
        assert killed, "the hook did not find the worker running the copy"
        assert len(dask_cluster.log.rescheduled) > rescheduled_before  # dask took the batch back
        runs = [first]
        for _ in range(2):  # converges, at most after re-runs (normally the first run suffices)
            plan = api.plan(config)
            if plan.empty:
                break
            runs.append(api.apply(config, plan, executor=dask_cluster.address))
        assert api.plan(config).empty
        puts = [(e.request.path, e.status) for e in proxy.log if e.request.operation == "PutObject"]

    # The object stored by the dead worker was verified by the retry, not stored again: a
    # retry's upload of it is a conditional create (If-None-Match: *) that moto refuses.
    tries = [status for path, status in puts if path.endswith(f"{prefix}/{killed['key']}")]
    assert tries[0] is None and all(status == 412 for status in tries[1:]), tries
    # Every object intact: on S3 all of them, locally the young ones only.
    assert _s3_objects(moto, f"{prefix}/") == content
    assert {k: v[0] for k, v in _tree(tmp_path / "hot").items()} == {k: content[k] for k in young}
    # Nothing duplicated: one present placement per (object, tier), one done copy per object.
    rows = _placements(config)
    assert len({(r[0], r[1], r[2]) for r in rows}) == len(rows)
    assert {(r[1], r[2]) for r in rows if r[7] == "present"} == {(k, "s3") for k in content} | {
        (k, "hot") for k in young
    }
    done_copies = [(r[3], r[5]) for r in _actions(config) if r[2] == "copy" and r[6] == "done"]
    assert sorted(done_copies) == sorted((k, "s3") for k in content)
    # Every action of the interrupted batch was recorded by the first run, once.
    assert len(_actions(config, first.run_id)) == len(first_plan.actions)


# -- stopping ---------------------------------------------------------------------------------------
def test_stop_submits_no_new_batch_and_records_the_finished_ones(
    tmp_path: Path, dask_cluster: Cluster
) -> None:
    config = _local_config(tmp_path)
    content = _populate(tmp_path, time.time(), 80)
    api.scan(config)
    plan = api.plan(config)
    stop = threading.Event()

    class StopAtFirstResult(NoEvents):
        def finished_object(self, results: list[ActionResult]) -> None:
            stop.set()

    report = api.apply(
        config,
        plan,
        options=ApplyOptions(stop=stop),
        events=StopAtFirstResult(),
        executor=dask_cluster.address,
    )
    recorded = _actions(config, report.run_id)
    assert report.outcome == "interrupted"
    assert 0 < len(recorded) < len(plan.actions)
    assert len(recorded) == report.done and all(r[6] == "done" for r in recorded)

    again = api.apply(config, api.plan(config), executor=dask_cluster.address)
    assert again.outcome == "ok" and api.plan(config).empty
    kept = {k: v[0] for tier in ("hot", "warm", "cold") for k, v in _tree(tmp_path / tier).items()}
    expired = {k for k in content if int(k[6:9]) % 7 == 6}  # the 2000-day-old ones
    assert kept == {k: v for k, v in content.items() if k not in expired}


# -- configuration and the command line -----------------------------------------------------------
def test_executor_key_is_used_by_apply_and_by_the_daemons_runs(
    tmp_path: Path, dask_cluster: Cluster, cli: Any
) -> None:
    from tierctl import api_ops, schedule

    address = dask_cluster.address.replace("tcp://", "dask://")
    config = _local_config(tmp_path, f"executor: {address}\n")
    assert config.executor == dask_cluster.address
    _populate(tmp_path, time.time(), 10)
    cli("-c", config.path, "scan")
    before = len(dask_cluster.log.payloads)
    result = cli("-c", config.path, "apply", "--yes", "--json")
    assert result.code == 0, result.err
    assert len(dask_cluster.log.payloads) > before

    write_file(tmp_path / "hot", "logs/later.log", b"later" * 100, time.time() - 40 * DAY)
    before = len(dask_cluster.log.payloads)
    due = [schedule.Due("lifecycle", "logs", time.time(), schedule.SCHEDULED)]
    cycle = api_ops.run_cycle(config, "logs", due, stop=threading.Event())
    assert cycle.outcome == "ok", cycle.error
    assert cycle.planned and len(dask_cluster.log.payloads) > before
    assert (tmp_path / "warm" / "logs" / "later.log").read_bytes() == b"later" * 100


def test_a_bad_executor_in_the_policy_file_is_located(tmp_path: Path) -> None:
    (tmp_path / "policies.yaml").write_text(STANDARD_POLICY + "executor: ftp://somewhere\n")
    validation = api.validate(str(tmp_path / "policies.yaml"))
    assert not validation.ok
    (problem,) = validation.problems
    assert "unknown executor 'ftp://somewhere'" in str(problem)
    assert problem.location is not None and problem.location.line == STANDARD_POLICY.count("\n") + 1
    assert "dask://HOST:8786" in problem.hint


@pytest.mark.parametrize(
    "value", ["ftp://x:1", "dask://", "dask://host:notaport", "dask://h:1/path", "threads"]
)
def test_cli_refuses_an_unknown_executor_in_one_line(tmp_path: Path, cli: Any, value: str) -> None:
    config = _local_config(tmp_path)
    _populate(tmp_path, time.time(), 3)
    before = _tree(tmp_path)
    result = cli("-c", config.path, "apply", "--yes", "--executor", value)
    assert result.code == 1
    assert result.err.startswith("error: ") and "executor" in result.err.splitlines()[0]
    assert result.err.splitlines()[1].startswith("  hint: use `local`, or a Dask scheduler")
    assert "Traceback" not in result.err
    assert _tree(tmp_path) == before


def test_cli_reports_an_unreachable_scheduler_quickly(tmp_path: Path, cli: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    config = _local_config(tmp_path)
    _populate(tmp_path, time.time(), 3)
    cli("-c", config.path, "scan")
    before = _tree(tmp_path)
    started = time.monotonic()
    result = cli("-c", config.path, "apply", "--yes", "--executor", f"dask://127.0.0.1:{port}")
    assert result.code == 1
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines[0] == f"error: cannot reach the Dask scheduler at tcp://127.0.0.1:{port} within 5 s"
    assert "Traceback" not in result.err
    assert time.monotonic() - started < 30
    assert _tree(tmp_path) == before and _actions(config) == []


def test_the_cli_does_not_import_dask_until_it_is_used() -> None:
    code = (
        "import sys, tierctl.cli.main, tierctl.api, tierctl.daemon;"
        "assert not {'dask', 'distributed'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- batching -----------------------------------------------------------------------------------------
def _unit(i: int, size: int) -> list[Action]:
    return [Action(i, "copy", "d", f"k{i}", "b", size, 0.0, "r", source="a")]


def test_batches_keep_order_spread_over_the_slots_and_cap_bytes() -> None:
    units = [_unit(i, 1000) for i in range(100)]
    batches = list(plan_batches(units, slots=4))
    assert [u for b in batches for u in b] == units
    assert len(batches) == 15 and max(len(b) for b in batches) == 7  # ~4 batches per worker thread
    assert max(len(b) for b in plan_batches([_unit(i, 10) for i in range(10_000)], slots=2)) == 64
    big = [_unit(i, 200 << 20) for i in range(3)]
    assert [len(b) for b in plan_batches(big, slots=1)] == [1, 1, 1]
