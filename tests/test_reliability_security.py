"""Secrets never leave the process: S3 credentials given as ${ENV} references and a webhook
URL carrying a token are looked for in every output tierctl produces (index and journal
bytes, plan files, daemon logs in json and text, run records, metrics, error messages).
The index, journal and locks are owner-only; the metrics endpoint binds to loopback."""

from __future__ import annotations

import os
import socket
import stat
import time
from pathlib import Path

from tierctl import api
from tierctl.policies.operations import parse_address

from .reliability import (
    new_bucket,
    secret_free,
    tierctl,
    write_config,
)
from .servers.moto_server import ACCESS_KEY, REGION, MotoS3

SECRET = "s3cr3t-Reliability-VALUE-9f2c"  # moto accepts any secret; tierctl must hide it
KEY_ID = "AKIA-RELIABILITY-KEY-ID-77"
WEBHOOK_TOKEN = "hooktoken-T0KEN-4b1d"
DAY = 86400.0


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_secrets_appear_in_no_output(tmp_path: Path, moto: MotoS3) -> None:
    bucket = new_bucket(moto)
    webhook = f"http://127.0.0.1:{_dead_port()}/services/{WEBHOOK_TOKEN}?token={WEBHOOK_TOKEN}"
    metrics_file = tmp_path / "tierctl.prom"
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          hot: {{url: ./hot}}
          s3:  {{url: "s3://{bucket}/data", options: {{endpoint_url: "{moto.endpoint_url}", region: {REGION},
                 key: "${{REL_KEY_ID}}", secret: "${{REL_SECRET}}"}}}}
          bad: {{url: "s3://no-such-bucket-rel/data", options: {{endpoint_url: "{moto.endpoint_url}",
                 region: {REGION}, key: "${{REL_KEY_ID}}", secret: "${{REL_SECRET}}"}}}}
        datasets:
          logs: {{prefix: logs/, home: hot}}
          other: {{prefix: other/, home: hot}}
        policies:
          - name: archive
            dataset: logs
            schedule: "* * * * *"
            rules:
              - when: "age >= 30d"
                place: [s3]
          - name: broken
            dataset: other
            schedule: "* * * * *"
            rules:
              - when: "age >= 30d"
                place: [bad]
        alerts:
          on: [success, failure]
          webhook: "{webhook}"
          timeout: 1
        metrics:
          textfile: {metrics_file}
        """,
    )
    env = {"REL_KEY_ID": KEY_ID, "REL_SECRET": SECRET}
    now = time.time()
    for key in ("logs/a.log", "logs/b.log", "other/c.log"):
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"payload " + key.encode())
        os.utime(path, (now - 40 * DAY, now - 40 * DAY))
    outputs: dict[str, str | bytes] = {}

    def run(name: str, *args: str) -> None:
        done = tierctl("-c", config, *args, env=env, timeout=120)
        outputs[name] = done.stdout + done.stderr

    plan_file = str(tmp_path / "plan.json")
    run("scan", "scan")
    run("plan", "plan", "-o", plan_file, "--json")
    run("apply-plan", "apply", plan_file, "--json")
    run("daemon-json", "daemon", "--once", "--log-format", "json", "--log-level", "debug")
    (tmp_path / "hot" / "logs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "hot" / "logs" / "d.log").write_bytes(b"new")
    os.utime(tmp_path / "hot" / "logs" / "d.log", (now - 40 * DAY, now - 40 * DAY))
    run("daemon-text", "daemon", "--once", "--log-format", "text", "--log-level", "debug")
    run("runs", "runs", "--json")
    run("runs-text", "runs")
    run("status", "status", "--json")
    run("history", "history", "logs/a.log", "--json")
    run("where", "where", "logs", "--json")
    # Errors: a store refusing a request, a bucket that does not exist, a missing variable.
    run("bad-env", "scan")  # with env: fine; now without the secret variable:
    missing = tierctl("-c", config, "scan", env={"REL_KEY_ID": KEY_ID}, timeout=60)
    outputs["missing-var"] = missing.stdout + missing.stderr
    assert missing.returncode == 1 and "REL_SECRET" in missing.stderr
    outputs["plan-file"] = Path(plan_file).read_bytes()
    outputs["metrics"] = metrics_file.read_bytes() if metrics_file.exists() else b""
    assert outputs["metrics"], "the daemon wrote no metrics textfile"
    index_path = api.load(config).index_path
    for suffix in ("", "-wal", "-shm", ".lock", ".daemon.lock"):
        if os.path.exists(index_path + suffix):
            outputs["index" + suffix] = Path(index_path + suffix).read_bytes()
    assert "index" in outputs
    for name in os.listdir(tmp_path):
        if name.endswith((".log", ".json", ".prom", ".txt")):
            outputs[f"file {name}"] = (tmp_path / name).read_bytes()
    # The webhook was tried (and failed), so its failure was logged, without the token.
    assert "alert failed" in str(outputs["daemon-json"]) and "127.0.0.1" in str(outputs["daemon-json"])
    assert "access denied" in str(outputs["daemon-json"]) or "does not exist" in str(outputs["daemon-json"])
    leaks = {name: secret_free(text, SECRET, KEY_ID, WEBHOOK_TOKEN) for name, text in outputs.items()}
    assert not {n: found for n, found in leaks.items() if found}, leaks
    print(f"\nreliability figures (secrets): {len(outputs)} outputs searched for 3 secrets")


def test_index_journal_and_locks_are_owner_only(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        """\
        version: 1
        tiers:
          hot: {url: ./hot}
          cold: {url: ./cold}
        datasets:
          logs: {prefix: logs/, home: hot}
        policies:
          - name: p
            dataset: logs
            rules:
              - when: "age >= 1d"
                place: [cold]
        """,
    )
    (tmp_path / "hot" / "logs").mkdir(parents=True)
    path = tmp_path / "hot" / "logs" / "a.log"
    path.write_bytes(b"x")
    os.utime(path, (time.time() - 5 * DAY,) * 2)
    old = os.umask(0o022)
    try:
        assert tierctl("-c", config, "scan").returncode == 0
        assert tierctl("-c", config, "apply", "--yes").returncode == 0
    finally:
        os.umask(old)
    index_path = api.load(config).index_path
    checked = []
    for suffix in ("", "-wal", "-shm", ".lock"):
        if os.path.exists(index_path + suffix):
            mode = stat.S_IMODE(os.stat(index_path + suffix).st_mode)
            assert mode & 0o077 == 0, f"{index_path + suffix} has mode {oct(mode)}"
            checked.append(suffix or "index")
    assert "index" in checked and ".lock" in checked
    folder_mode = stat.S_IMODE(os.stat(os.path.dirname(index_path)).st_mode)
    assert folder_mode & 0o077 == 0, oct(folder_mode)


def test_metrics_endpoint_binds_to_loopback_by_default() -> None:
    assert parse_address(":9464") == ("127.0.0.1", 9464)
    from tierctl.metrics import MetricsServer

    server = MetricsServer(*parse_address(":0"))
    server.start()  # close() waits for the serving thread: it must run
    try:
        assert server.address[0] == "127.0.0.1"
    finally:
        server.close()


_ = ACCESS_KEY
