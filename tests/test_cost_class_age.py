"""An object's time in its storage class counts from the transition tierctl made, not from
when the index first saw it: the early-deletion fee of a delete soon after the transition is
the rest of the class's minimum, and a transition out of the class before the minimum is
over is held by the cost guard (docs/cost.md). Real moto S3, real plans and applies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tierctl import api
from tierctl.cost import Prices
from tierctl.index import Index
from tierctl.movers.objmeta import MTIME_KEY, format_float_mtime

from .reliability import S3_ENV, new_bucket, write_config
from .servers.moto_server import REGION, MotoS3

DAY = 86400.0
KIB = 1024
SIZE = 256 * KIB  # above GLACIER's 40 KiB overhead: the size check does not interfere


def _config(root: Path, bucket: str, moto: MotoS3, rule: str) -> str:
    options = (
        f'{{endpoint_url: "{moto.endpoint_url}", region: {REGION},'
        ' key: "${TIERCTL_TEST_S3_KEY}", secret: "${TIERCTL_TEST_S3_SECRET}"}'
    )
    url = f"s3://{bucket}/data"
    return write_config(
        root,
        f"""\
        version: 1
        index: {root / "index.db"}
        tiers:
          s3:      {{url: "{url}", options: {options}}}
          glacier: {{url: "{url}", storage_class: GLACIER, options: {options}}}
          deep:    {{url: "{url}", storage_class: DEEP_ARCHIVE, options: {options}}}
        datasets:
          d: {{prefix: d/}}
        policies:
          - name: p
            dataset: d
            rules:
              - {rule}
        """,
    )


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)


def _placement(config_path: str, tier: str) -> tuple[float, float | None]:
    """(first_seen, changed_at) of d/obj.bin on ``tier``."""
    config = api.load(config_path)
    with Index.open(config.index_path, create=False) as index:
        [p] = [p for p in index.placements("d/obj.bin") if p.tier == tier]
    return p.first_seen, p.changed_at


@pytest.mark.usefixtures("s3_env")
def test_time_in_class_counts_from_tierctls_transition(tmp_path: Path, moto: MotoS3) -> None:
    bucket = new_bucket(moto)
    now = time.time()
    # The object has been on S3 STANDARD for 200 days as far as the index knows.
    moto.client().put_object(
        Bucket=bucket,
        Key="data/d/obj.bin",
        Body=b"x" * SIZE,
        Metadata={MTIME_KEY: format_float_mtime(now - 300 * DAY)},
    )
    to_glacier = _config(tmp_path, bucket, moto, '{when: "true", place: [glacier]}')
    api.scan(api.load(to_glacier), now=now - 200 * DAY)

    # tierctl transitions it STANDARD -> GLACIER (nothing makes it leave within 90 days).
    plan = api.plan(api.load(to_glacier))
    assert [(a.op, a.source, a.target) for a in plan.actions] == [("transition", "s3", "glacier")]
    report = api.apply(api.load(to_glacier), plan)
    assert report.failed == 0
    head = moto.client().head_object(Bucket=bucket, Key="data/d/obj.bin")
    assert head["StorageClass"] == "GLACIER"
    first_seen, changed_at = _placement(to_glacier, "glacier")
    assert first_seen == pytest.approx(now - 200 * DAY, abs=1)  # the sighting is kept
    assert changed_at is not None and changed_at >= now  # the class change is recorded

    # A delete right after: kept (deleting early costs what keeping it to day 90 would),
    # and priced with the whole 90-day minimum, not with 200 days of "age".
    delete = _config(tmp_path, bucket, moto, '{when: "age >= 30d", delete: true}')
    config = api.load(delete)
    plan = api.plan(config)
    assert [(a.op, a.target) for a in plan.actions] == [("delete", "glacier")]
    full_fee = Prices(config)["glacier"].monthly(SIZE) * 90 / 30
    assert plan.cost is not None
    assert plan.cost["one_time"]["early_deletion"] == pytest.approx(full_fee, rel=1e-3)

    # A move to DEEP_ARCHIVE: the archived object would be restored first, but only for the
    # transition out of GLACIER, which the guard holds: the restore is held with it.
    to_deep = _config(tmp_path, bucket, moto, '{when: "true", place: [deep]}')
    plan = api.plan(api.load(to_deep))
    assert plan.actions == []
    [skipped] = plan.cost["skipped"] if plan.cost else []
    assert (skipped["op"], skipped["source"], skipped["target"]) == ("restore", None, "glacier")
    assert skipped["reason"] == (
        "it is only needed for the transition glacier -> deep, which the guard holds: its placement"
        " on tier 'glacier' (default S3 GLACIER) last changed 0 days ago; leaving that class before"
        " its 90-day minimum storage duration bills the other 90 days on top of tier 'deep'"
    )
    # With --allow-costly the restore is made; the transition out is held once it is done.
    plan = api.plan(api.load(to_deep), allow_costly=True)
    assert [a.op for a in plan.actions] == ["restore"]
    assert api.apply(api.load(to_deep), plan).failed == 0
    plan = api.plan(api.load(to_deep))
    assert plan.actions == []
    [skipped] = plan.cost["skipped"] if plan.cost else []
    assert (skipped["op"], skipped["source"], skipped["target"]) == ("transition", "glacier", "deep")
    assert skipped["reason"] == (
        "its placement on tier 'glacier' (default S3 GLACIER) last changed 0 days ago; leaving that"
        " class before its 90-day minimum storage duration bills the other 90 days on top of tier 'deep'"
    )

    # Once the minimum is over, or with --allow-costly, the transition is planned.
    later = api.plan(api.load(to_deep), now=time.time() + 91 * DAY)
    assert [(a.op, a.source, a.target) for a in later.actions] == [("transition", "glacier", "deep")]
    costly = api.plan(api.load(to_deep), allow_costly=True)
    assert [(a.op, a.source, a.target) for a in costly.actions] == [("transition", "glacier", "deep")]
