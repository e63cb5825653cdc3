"""SIGKILL a real apply of ~2,000 files (local -> local and local -> S3 on moto, some of them
multipart) at many points: at exact S3 requests (through the fault proxy's hooks: before
and after the store acted) and at moments in between. After every kill each object still
has an intact copy (bytes checked on the stores directly), the index records nothing the
stores do not hold, and no half-written object sits under a final name. A last run
converges, a fresh scan agrees with the index, and no multipart upload is left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from tierctl import api
from tierctl.movers.s3_conditional import PROBE_PREFIX

from .reliability import (
    TEMP_PREFIX,
    incomplete_uploads,
    kill_quietly,
    local_files,
    md5,
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

FILES = 2000
BIG = 3  # multipart objects (3 parts of 5 MiB each)
PART = 5 << 20
DAY = 86400.0
FIGURES: dict[str, Any] = {}


def _kill_points(proc_box: list[Any]) -> list[tuple[str, Any]]:
    """(description, trigger): a Fault with a kill hook, or seconds after start."""

    def kill(_request: Any) -> None:
        os.kill(proc_box[0].pid, signal.SIGKILL)

    def at(name: str, n: int, *, after_forward: bool = False) -> Fault:
        return Fault("hook", op(name), after=n - 1, hook=kill, after_forward=after_forward)

    return [
        ("PutObject #25, before the store saw it", at("PutObject", 25)),
        ("UploadPart #2 of a multipart upload, before", at("UploadPart", 2)),
        (
            "CreateMultipartUpload, after the store started it",
            at("CreateMultipartUpload", 1, after_forward=True),
        ),
        (
            "CompleteMultipartUpload, after the object appeared",
            at("CompleteMultipartUpload", 1, after_forward=True),
        ),
        ("PutObject #60, after the store stored it", at("PutObject", 60, after_forward=True)),
        ("HeadObject #150 (stat before or after a copy)", at("HeadObject", 150)),
        ("1.5 s into the run", 1.5),
        ("PutObject #120, after the store stored it", at("PutObject", 120, after_forward=True)),
        ("GetObject #1 (reading back an existing copy)", at("GetObject", 1)),
        # Late in the series little work is left (a run without a HEAD before each PUT ends
        # within ~2 s): these points come early in their run.
        ("0.7 s into the run", 0.7),
        ("PutObject #40, before", at("PutObject", 40)),
    ]


def _check_after_kill(
    server: MotoS3, bucket: str, root: Path, originals: dict[str, bytes], index_path: str, rng: random.Random
) -> dict[str, int]:
    hot, cold = local_files(root / "hot"), local_files(root / "cold")
    listed = s3_objects(server, bucket)
    # Nothing half-written under a final name: local files other than temp files, and S3
    # objects, hold exactly the original bytes (S3: the MD5 ETag, or the bytes when multipart).
    for tier, files in (("hot", hot), ("cold", cold)):
        for key, data in files.items():
            if os.path.basename(key).startswith(TEMP_PREFIX):
                continue
            assert data == originals[key], f"{tier}/{key} holds other bytes than the original"
    s3_intact = set()
    for key, item in listed.items():
        if key.startswith(PROBE_PREFIX):
            continue  # a conditional-create probe the kill interrupted: a later create removes it
        etag = item["ETag"].strip('"')
        if "-" in etag:
            assert s3_bytes(server, bucket, key) == originals[key], f"s3/{key} differs (multipart)"
        else:
            assert etag == md5(originals[key]), f"s3/{key} differs from the original"
        s3_intact.add(key)
    # Every object has an intact copy somewhere.
    lost = [k for k in originals if k not in hot and k not in cold and k not in s3_intact]
    assert not lost, f"{len(lost)} objects lost: {lost[:3]}"
    # Objects whose only copy is on S3: compare a sample byte for byte with boto3.
    only_s3 = sorted(k for k in s3_intact if k not in hot and k not in cold)
    for key in rng.sample(only_s3, min(25, len(only_s3))):
        assert s3_bytes(server, bucket, key) == originals[key]
    # The index never records a copy the store does not hold. It may still list a source
    # placement whose delete ran but was not recorded yet: at most the units in flight
    # (2 x --jobs), and the next run stats the store before acting on it.
    stores = {"hot": hot, "cold": cold}
    stale_sources = []
    for key, tier, size in present_placements(index_path):
        if tier == "s3":
            assert key in listed and listed[key]["Size"] == size, f"index has s3/{key}, the store not"
        elif tier == "cold":
            assert key in cold and len(cold[key]) == size, f"index has cold/{key}, the store not"
        elif key not in stores[tier]:
            stale_sources.append(key)
    assert len(stale_sources) <= 8, f"{len(stale_sources)} deletes not recorded: {stale_sources[:3]}"
    return {"hot": len(hot), "cold": len(cold), "s3": len(listed), "s3_only_checked": min(25, len(only_s3))}


def test_sigkill_at_many_points_local_and_s3_loses_nothing(
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
          hot:  {{url: ./hot}}
          cold: {{url: ./cold}}
          s3:   {s3_tier(bucket, proxy.endpoint_url, part_size=PART)}
        datasets:
          logs: {{prefix: logs/, home: hot}}
        policies:
          - name: lifecycle
            dataset: logs
            rules:
              - when: "age >= 300d"
                place: [s3]
              - when: "age >= 100d"
                place: [cold]
        """,
    )
    now = time.time()
    originals: dict[str, bytes] = {}
    rng = random.Random(7)
    for i in range(FILES):
        key = f"logs/{i // 100:02d}/{i:05d}.log"
        originals[key] = rng.randbytes(1024 + i % 2048) + key.encode()
    for i in range(BIG):
        originals[f"logs/05/big-{i}.bin"] = rng.randbytes(3 * PART - 1000 * i)
    for n, (key, data) in enumerate(originals.items()):
        path = tmp_path / "hot" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        age = (310 if (n % 2 or "big" in key) else 110) * DAY
        os.utime(path, (now - age, now - age))
    (tmp_path / "cold").mkdir()
    to_s3 = {k for n, k in enumerate(originals) if n % 2 or "big" in k}
    assert tierctl("-c", config, "scan").returncode == 0
    index_path = api.load(config).index_path

    proc_box: list[Any] = [None]
    kills: list[str] = []
    started = time.monotonic()
    for description, trigger in _kill_points(proc_box):
        proxy.clear()
        if isinstance(trigger, Fault):
            proxy.add(trigger)
        proc = spawn("-c", config, "apply", "--yes", "--json", "--jobs", "4")
        proc_box[0] = proc
        try:
            deadline = time.monotonic() + (trigger if isinstance(trigger, float) else 60)
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if isinstance(trigger, float) and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            kill_quietly(proc)
        if proc.returncode == -signal.SIGKILL:
            kills.append(description)
        _check_after_kill(moto, bucket, tmp_path, originals, index_path, rng)
        FIGURES["max_incomplete_uploads_after_a_kill"] = max(
            FIGURES.get("max_incomplete_uploads_after_a_kill", 0), len(incomplete_uploads(moto, bucket))
        )
    proxy.clear()
    FIGURES.update(kills=len(kills), kill_points=kills, seconds=round(time.monotonic() - started, 1))
    assert len(kills) >= 10, f"only {len(kills)} runs were killed mid-way: {kills}"

    final = tierctl("-c", config, "apply", "--yes", "--json", timeout=180)
    assert final.returncode == 0, final.stderr[-2000:]
    assert json.loads(final.stdout)["failed"] == 0

    # Converged: every object exactly where declared, with its original bytes.
    listed = s3_objects(moto, bucket)
    assert {k for k in listed if not k.startswith(PROBE_PREFIX)} == to_s3
    for key in to_s3:
        assert s3_bytes(moto, bucket, key) == originals[key]
    assert local_files(tmp_path / "hot") == {}
    cold = local_files(tmp_path / "cold")
    leftovers = [k for k in cold if os.path.basename(k).startswith(TEMP_PREFIX)]
    assert {k: v for k, v in cold.items() if k not in leftovers} == {
        k: v for k, v in originals.items() if k not in to_s3
    }
    # A killed multipart upload is aborted when the object is written again.
    assert incomplete_uploads(moto, bucket) == []
    # A fresh scan agrees with the index, removes the temp files of killed writes, and
    # nothing is left to do.
    before = present_placements(index_path)
    assert tierctl("-c", config, "scan").returncode == 0
    after = present_placements(index_path)
    expected = {(k, "s3" if k in to_s3 else "cold", len(v)) for k, v in originals.items()}
    assert before == after == expected
    assert not [k for k in local_files(tmp_path / "cold") if TEMP_PREFIX in k]
    assert tierctl("-c", config, "plan", "--detailed-exitcode").returncode == 0
    FIGURES.update(temp_files_reaped=len(leftovers), s3_requests=len(proxy.log))
    print(f"\nreliability figures (crash): {json.dumps(FIGURES)}")
