"""Two applies on one index, and a scan during an apply (local -> S3 through the proxy,
which counts every PUT): the second apply refuses with exit 4 naming the holder, or waits
with --wait; nothing is copied twice; afterwards the index agrees with a fresh scan.
(An apply beside a running daemon: tests/test_daemon_units.py and tests/test_daemon.py.)"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tierctl import api
from tierctl.movers.s3_conditional import PROBE_PREFIX

from .reliability import (
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

FILES = 200
DAY = 86400.0


def test_two_applies_and_a_scan_during_apply(
    tmp_path: Path,
    moto: MotoS3,
    proxy: FaultProxy,
) -> None:
    bucket = new_bucket(moto)
    config = write_config(
        tmp_path,
        f"""\
        version: 1
        tiers:
          hot: {{url: ./hot}}
          s3:  {s3_tier(bucket, proxy.endpoint_url)}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: archive
            dataset: logs
            rules:
              - when: "age >= 30d"
                place: [s3]
        """,
    )
    now = time.time()
    originals = {f"logs/{i:04d}.log": os.urandom(700) + b"%d" % i for i in range(FILES)}
    for key, data in originals.items():
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (now - 40 * DAY, now - 40 * DAY))
    assert tierctl("-c", config, "scan").returncode == 0
    # The first apply's first upload stalls 3 s: it holds the index meanwhile.
    proxy.add(Fault("stall", op("PutObject"), times=1, seconds=3.0, status=200))
    first = spawn("-c", config, "apply", "--yes", "--json", "--jobs", "2")
    waiter = None
    try:
        deadline = time.monotonic() + 20
        while proxy.count("PutObject") + proxy.count("HeadObject") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        second = tierctl("-c", config, "apply", "--yes", "--json")
        assert second.returncode == 4, second.stdout + second.stderr
        assert f"pid {first.pid}" in second.stderr and "--wait" in second.stderr
        assert "Traceback" not in second.stderr
        waiter = spawn("-c", config, "apply", "--yes", "--json", "--wait", "60")
        scan = tierctl("-c", config, "scan")  # during the apply: no lock needed, no harm
        assert scan.returncode == 0, scan.stderr
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err.decode()[-2000:]
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err.decode()[-2000:]
        assert json.loads(out)["failed"] == 0
    finally:
        kill_quietly(first)
        if waiter is not None:
            kill_quietly(waiter)
    # No double copy: one PUT per object, whatever the second apply had planned.
    # (Not counting the S3 mover's probe of If-None-Match: see movers.s3_conditional.)
    uploads = [e.request for e in proxy.log if e.request.operation == "PutObject"]
    uploads = [r for r in uploads if PROBE_PREFIX not in r.path]
    assert len(uploads) == FILES, len(uploads)
    assert set(s3_objects(moto, bucket)) == set(originals)
    for key in list(originals)[:: FILES // 20]:
        assert s3_bytes(moto, bucket, key) == originals[key]
    assert local_files(tmp_path / "hot") == {}
    # No lost update: a fresh scan finds what the index says (the scan that ran during the
    # apply may have recorded a moment's view; the next scan settles it), nothing left to do.
    index_path = api.load(config).index_path
    before = present_placements(index_path)
    assert tierctl("-c", config, "scan").returncode == 0
    assert before == present_placements(index_path) == {(k, "s3", len(v)) for k, v in originals.items()}
    assert tierctl("-c", config, "plan", "--detailed-exitcode").returncode == 0
