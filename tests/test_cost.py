"""Cost-aware plans: the cost model and its defaults, the guard that skips transitions that
lose money (and what waits for them), plan and du output, and located config errors.

Plans are made from real SQLite indexes of real local folders (tiers priced with `cost:`),
and once against moto's S3 server with S3's own storage classes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tierctl import api, cost
from tierctl.plan import Action, Plan, _checksum
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Tier, TierCost

from .conftest import DAY, Sandbox, write_file
from .servers.moto_server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

GIB = 2**30
KIB = 1024

# hot: local, priced at $0.10/GiB-month; archive: a local folder priced like S3 GLACIER.
GUARDED_POLICY = """\
version: 1
tiers:
  hot: {url: ./hot, cost: {storage_gb_month: 0.10}}
  archive: {url: ./archive, storage_class: GLACIER, cost: {provider: s3}}
datasets:
  logs: {prefix: logs/, home: hot}
policies:
  - name: lifecycle
    dataset: logs
    rules:
      - when: "age < 20d"
        place: [hot]
      - when: "age < 400d"
        place: [archive]
      - when: "age >= 400d"
        delete: true
"""


def glacier_month(size: int) -> float:
    """S3 GLACIER, us-east-1: 32 KiB at $0.0036 and 8 KiB at STANDARD's $0.023 per object."""
    return (size + 32 * KIB) / GIB * 0.0036 + 8 * KIB / GIB * 0.023


# -- the model ---------------------------------------------------------------------------------
def test_default_prices_of_known_classes() -> None:
    glacier = cost.model_for(Tier("g", "s3://b/p", "GLACIER"))
    assert (glacier.storage_gb_month, glacier.write_per_1000) == (0.0036, 0.03)
    assert glacier.min_duration == 90 * DAY and glacier.min_billable == 40 * KIB
    assert (glacier.restore_per_1000, glacier.restore_per_gb) == (0.05, 0.01)  # Standard speed
    bulk = cost.model_for(Tier("d", "s3://b/p", "DEEP_ARCHIVE", restore_speed="Bulk"))
    assert (bulk.restore_per_1000, bulk.restore_per_gb, bulk.min_duration) == (0.025, 0.0025, 180 * DAY)
    ia = cost.model_for(Tier("ia", "s3://b/p", "STANDARD_IA"))
    assert (ia.min_size, ia.min_duration, ia.retrieval_per_gb) == (128 * KIB, 30 * DAY, 0.01)
    assert cost.model_for(Tier("ir", "s3://b/p", "GLACIER_IR")).min_size == 128 * KIB
    assert cost.model_for(Tier("s", "s3://b/p")).storage_gb_month == 0.023  # no class: STANDARD
    archive = cost.model_for(Tier("a", "gs://b/p", "ARCHIVE"))
    assert (archive.storage_gb_month, archive.min_duration, archive.min_size) == (0.0012, 365 * DAY, 0)
    assert cost.model_for(Tier("n", "gs://b/p", "nearline")).min_duration == 30 * DAY
    local = cost.model_for(Tier("l", "file:///data", "GLACIER"))
    assert local.monthly(GIB) == 0 and local.source == "none"  # free unless configured


def test_monthly_storage_bills_minimum_size_and_overhead() -> None:
    ia = cost.model_for(Tier("ia", "s3://b/p", "STANDARD_IA"))
    assert ia.monthly(KIB) == pytest.approx(128 * KIB / GIB * 0.0125)  # billed as 128 KiB
    assert ia.monthly(GIB) == pytest.approx(0.0125)
    glacier = cost.model_for(Tier("g", "s3://b/p", "GLACIER"))
    assert glacier.monthly(GIB) == pytest.approx(glacier_month(GIB))
    assert glacier.monthly(KIB) > 13 * cost.model_for(Tier("s", "s3://b/p")).monthly(KIB)


def test_early_deletion_fee_is_the_rest_of_the_minimum_duration() -> None:
    nearline = cost.model_for(Tier("n", "gs://b/p", "NEARLINE"))
    # 10 GiB deleted after 10 of 30 days: 20 days of $0.010/GiB-month.
    assert nearline.early_deletion(10 * GIB, 10 * DAY) == pytest.approx(10 * 0.010 * 20 / 30)
    assert nearline.early_deletion(10 * GIB, 30 * DAY) == 0
    deep = cost.model_for(Tier("d", "s3://b/p", "DEEP_ARCHIVE"))
    expected = ((GIB + 40 * KIB) / GIB * 0.00099 + 8 * KIB / GIB * (0.023 - 0.00099)) * 170 / 30
    assert deep.early_deletion(GIB, 10 * DAY) == pytest.approx(expected)


def test_cost_overrides_keep_the_other_defaults() -> None:
    tier = Tier("g", "s3://b/p", "GLACIER", cost=TierCost(storage_gb_month=0.5, min_duration=0.0))
    model = cost.model_for(tier)
    assert (model.storage_gb_month, model.min_duration, model.write_per_1000) == (0.5, 0.0, 0.03)
    assert model.source == "default S3 GLACIER + cost:"
    assert cost.format_usd(1234.5) == "$1,234.50" and cost.format_usd(0.00123) == "$0.0012"


def test_one_time_cost_of_a_copy_out_of_gcs_nearline(tmp_path: Path) -> None:
    config = parse_config(
        """
version: 1
tiers:
  nearline: {url: "gs://bucket/data", storage_class: NEARLINE}
  coldline: {url: "gs://bucket/data", storage_class: COLDLINE}
  local: {url: ./local, storage_class: GLACIER}
""",
        str(tmp_path / "policies.yaml"),
    )
    prices = cost.Prices(config)
    assert prices.unpriced() == ["local"]  # a class on a local folder, without `cost:`
    copy = Action(1, "copy", "d", "d/k", "local", 2 * GIB, 0.0, "r", source="nearline")
    # A GET and 2 GiB of Nearline retrieval, and 2 GiB of egress out of GCS.
    assert cost.action_cost(copy, prices, {}, 0.0) == pytest.approx(
        {"requests": 0.001 / 1000, "retrieval": 2 * 0.01, "egress": 2 * 0.12}
    )
    # An in-place class change: a write into Coldline, Nearline's retrieval, and (age
    # unknown: 0) the whole 30 days of Nearline as an early-deletion fee. No egress.
    change = Action(2, "transition", "d", "d/k", "coldline", 2 * GIB, 0.0, "r", source="nearline")
    assert cost.action_cost(change, prices, {}, 0.0) == pytest.approx(
        {"requests": 0.02 / 1000, "retrieval": 2 * 0.01, "early_deletion": 2 * 0.010}
    )


# -- the guard, on a real index of local folders --------------------------------------------------
@pytest.fixture
def guarded(sandbox: Sandbox) -> Sandbox:
    (sandbox.root / "archive").mkdir()
    sandbox.write_config(GUARDED_POLICY)
    now = time.time()
    sandbox.put("hot", "logs/small.log", b"s" * KIB, age_days=30, now=now)  # under 40 KiB
    sandbox.put("hot", "logs/doomed.log", b"d" * 64 * KIB, age_days=390, now=now)  # deleted in 10 days
    sandbox.put("hot", "logs/keeper.log", b"k" * 64 * KIB, age_days=30, now=now)  # kept 370 days
    return sandbox


def _plan_json(cli, config: str, *args: str) -> dict:
    result = cli("-c", config, "plan", "--json", *args)
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_guard_skips_small_and_short_lived_objects_and_what_waits_for_them(guarded: Sandbox, cli) -> None:
    assert cli("-c", guarded.config, "scan").code == 0
    doc = _plan_json(cli, guarded.config)
    ops = sorted((a["op"], a["key"], a.get("source"), a["target"]) for a in doc["actions"])
    assert ops == [("copy", "logs/keeper.log", "hot", "archive"), ("delete", "logs/keeper.log", None, "hot")]
    skipped = {s["key"]: s for s in doc["cost"]["skipped"]}
    assert set(skipped) == {"logs/small.log", "logs/doomed.log"}
    assert "below the minimum billable size" in skipped["logs/small.log"]["reason"]
    assert "40.0 KiB" in skipped["logs/small.log"]["reason"]
    assert "deleted in 10 days" in skipped["logs/doomed.log"]["reason"]
    assert "90-day minimum storage duration" in skipped["logs/doomed.log"]["reason"]
    assert all(len(s["dropped"]) == 1 for s in skipped.values())  # each copy's move-delete

    # Applying it moves only the keeper; the skipped objects keep their only copy.
    assert cli("-c", guarded.config, "apply", "--yes").code == 0
    assert set(guarded.files("hot")) == {"logs/small.log", "logs/doomed.log"}
    assert set(guarded.files("archive")) == {"logs/keeper.log"}


def test_guard_looks_past_changes_that_keep_the_object_on_the_tier(sandbox: Sandbox, cli) -> None:
    """At 40d the object stays on archive (and gains warm); at 50d it is deleted: 20 days
    after it would enter a 90-day class."""
    (sandbox.root / "archive").mkdir()
    sandbox.write_config(
        GUARDED_POLICY.replace(
            '      - when: "age < 400d"\n        place: [archive]\n      - when: "age >= 400d"',
            '      - when: "age < 40d"\n        place: [archive]\n'
            '      - when: "age < 50d"\n        place: [archive, warm]\n      - when: "age >= 50d"',
        ).replace("  hot:", "  warm: {url: ./warm}\n  hot:")
    )
    sandbox.put("hot", "logs/brief.log", b"b" * 64 * KIB, age_days=30, now=time.time())
    cli("-c", sandbox.config, "scan")
    doc = _plan_json(cli, sandbox.config)
    [skipped] = doc["cost"]["skipped"]
    assert "deleted in 20 days (policy 'lifecycle' rule 4)" in skipped["reason"]
    assert doc["actions"] == []


def test_text_plan_lists_skipped_actions_and_cost(guarded: Sandbox, cli) -> None:
    cli("-c", guarded.config, "scan")
    result = cli("-c", guarded.config, "plan")
    assert result.code == 0, result.err
    assert "Skipped for cost (2; `--allow-costly` keeps them)" in result.out
    assert "logs/doomed.log  hot -> archive: it would be deleted in 10 days" in result.out
    assert "(and 1 action waiting for it)" in result.out
    assert "Cost: storage $" in result.out and "/month ->" in result.out and "one-time $" in result.out


def test_allow_costly_keeps_them(guarded: Sandbox, cli) -> None:
    cli("-c", guarded.config, "scan")
    doc = _plan_json(cli, guarded.config, "--allow-costly")
    assert doc["cost"]["skipped"] == [] and doc["cost"]["guard"] is False
    assert {a["key"] for a in doc["actions"] if a["op"] == "copy"} == {
        "logs/small.log",
        "logs/doomed.log",
        "logs/keeper.log",
    }
    assert cli("-c", guarded.config, "apply", "--yes", "--allow-costly").code == 0
    assert guarded.files("hot") == {}
    assert len(guarded.files("archive")) == 3


def test_plan_prices_storage_before_and_after_and_the_one_time_cost(guarded: Sandbox, cli) -> None:
    cli("-c", guarded.config, "scan")
    doc = _plan_json(cli, guarded.config)["cost"]
    hot_before = (KIB + 64 * KIB + 64 * KIB) / GIB * 0.10
    assert doc["tiers"]["hot"]["monthly_before"] == pytest.approx(hot_before, abs=1e-6)
    assert doc["tiers"]["hot"]["monthly_after"] == pytest.approx((KIB + 64 * KIB) / GIB * 0.10, abs=1e-6)
    assert doc["tiers"]["archive"]["monthly_after"] == pytest.approx(glacier_month(64 * KIB), abs=1e-6)
    assert doc["monthly_before"] == pytest.approx(hot_before, abs=1e-6)
    # One copy into GLACIER: one PUT at $0.03 per 1,000; reading the free local tier costs nothing.
    assert doc["one_time"]["requests"] == pytest.approx(0.03 / 1000)
    assert doc["one_time"]["total"] == pytest.approx(0.03 / 1000)


def test_early_deletion_fee_of_a_plan_uses_the_placement_age(sandbox: Sandbox, cli) -> None:
    sandbox.write_config(
        GUARDED_POLICY.replace('"age < 400d"', '"age < 3y"').replace('"age >= 400d"', '"age >= 3y"')
    )
    (sandbox.root / "archive").mkdir()
    now = time.time()
    sandbox.put("archive", "logs/old.log", b"o" * (GIB // 1024), age_days=3 * 365 + 5, now=now)
    cli("-c", sandbox.config, "scan")  # first seen now: in GLACIER for 0 days
    doc = _plan_json(cli, sandbox.config, "--as-of", "+10d")
    assert [(a["op"], a["target"]) for a in doc["actions"]] == [("delete", "archive")]
    fee = doc["cost"]["one_time"]["early_deletion"]
    assert fee == pytest.approx(glacier_month(GIB // 1024) * 80 / 30, rel=1e-3)
    assert _plan_json(cli, sandbox.config, "--as-of", "+95d")["cost"]["one_time"]["early_deletion"] == 0


def test_saved_plan_keeps_its_cost_and_older_plans_still_load(guarded: Sandbox, cli) -> None:
    cli("-c", guarded.config, "scan")
    out = str(guarded.root / "plan.json")
    assert cli("-c", guarded.config, "plan", "-o", out).code == 0
    saved = api.load_plan(api.load(guarded.config), out)
    assert saved.cost is not None and len(saved.cost["skipped"]) == 2
    doc = json.loads(Path(out).read_text())
    del doc["cost"]
    body = {k: v for k, v in doc.items() if k not in ("format", "version", "checksum")}
    doc["checksum"] = _checksum(body)  # as a tierctl without cost models wrote it
    assert Plan.from_dict(doc).cost is None
    assert cli("-c", guarded.config, "apply", out, "--yes").code == 0
    assert set(guarded.files("archive")) == {"logs/keeper.log"}


# -- du --cost --------------------------------------------------------------------------------------
def test_du_cost_per_dataset_and_tier(guarded: Sandbox, cli) -> None:
    now = time.time()
    guarded.put("archive", "logs/a.log", b"a" * 100 * KIB, age_days=100, now=now)
    cli("-c", guarded.config, "scan")
    result = cli("-c", guarded.config, "du", "--cost", "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    rows = {(r["dataset"], r["tier"]): r for r in doc["usage"]}
    assert rows[("logs", "hot")]["monthly_usd"] == pytest.approx(129 * KIB / GIB * 0.10, abs=1e-6)
    assert rows[("logs", "archive")]["monthly_usd"] == pytest.approx(glacier_month(100 * KIB), abs=1e-6)
    assert rows[("logs", "archive")]["priced_by"] == "default S3 GLACIER"
    assert doc["monthly_total_usd"] == pytest.approx(sum(r["monthly_usd"] for r in doc["usage"]), abs=1e-6)
    text = cli("-c", guarded.config, "du", "--cost")
    assert text.code == 0 and "USD/month" in text.out and "default S3 GLACIER" in text.out
    assert "list prices as of 2026-06" in text.out


# -- config errors -----------------------------------------------------------------------------------
def test_cost_config_errors_are_located_with_hints(sandbox: Sandbox) -> None:
    sandbox.write_config(
        """\
        version: 1
        tiers:
          hot: {url: ./hot}
          cold:
            url: ./cold
            cost:
              storage_gb_month: "$0.004"
              min_duration: 90
              min_size: lots
              provider: azure
              storge: 1
        """
    )
    problems = {
        (p.location.line, p.location.column): (p.message, p.hint)
        for p in api.validate(sandbox.config).problems
    }
    assert problems[(7, 25)][0].startswith("cost storage_gb_month must be an amount of US dollars")
    assert "without a currency sign" in problems[(7, 25)][1]
    assert "bad duration '90'" in problems[(8, 21)][0] and problems[(8, 21)][1] == "e.g. min_duration: 90d"
    assert "bad size 'lots'" in problems[(9, 17)][0]
    assert problems[(10, 17)] == ("unknown cost provider 'azure'", "use one of: s3, gcs, none")
    message, hint = problems[(11, 7)]
    assert message == "unknown key 'storge' in tier 'cold': cost" and "storage_gb_month" in hint


# -- S3 classes on moto ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with MotoS3() as server:
        server.create_bucket("tierctl-cost")
        yield server


def test_s3_transition_to_glacier_skips_small_objects(tmp_path: Path, moto: MotoS3, cli) -> None:
    options = (
        f"{{endpoint_url: '{moto.endpoint_url}', region: {REGION}, key: {ACCESS_KEY}, secret: {SECRET_KEY}}}"
    )
    url = f"s3://tierctl-cost/c{time.time_ns()}"
    config = tmp_path / "policies.yaml"

    def write(place: str) -> str:
        config.write_text(
            f"""
version: 1
tiers:
  s3: {{url: "{url}", options: {options}}}
  glacier: {{url: "{url}", storage_class: GLACIER, options: {options}}}
  hot: {{url: ./hot}}
datasets:
  d: {{prefix: d/}}
policies:
  - name: p
    dataset: d
    rules:
      - {{when: "true", place: [{place}]}}
"""
        )
        return str(config)

    now = time.time()
    write_file(tmp_path / "hot", "d/tiny.bin", b"t" * 2 * KIB, now - 10 * DAY)
    write_file(tmp_path / "hot", "d/large.bin", b"L" * 200 * KIB, now - 10 * DAY)
    assert cli("-c", write("s3"), "scan").code == 0
    assert cli("-c", str(config), "apply", "--yes").code == 0  # both to S3 STANDARD
    doc = _plan_json(cli, write("glacier"))
    assert [(a["op"], a["key"]) for a in doc["actions"]] == [("transition", "d/large.bin")]
    [skipped] = doc["cost"]["skipped"]
    assert skipped["key"] == "d/tiny.bin" and "default S3 GLACIER" in skipped["reason"]
    assert doc["cost"]["one_time"]["requests"] == pytest.approx(0.03 / 1000)
    s3_before = (202 * KIB) / GIB * 0.023
    assert doc["cost"]["tiers"]["s3"]["monthly_before"] == pytest.approx(s3_before, abs=1e-6)
    assert cli("-c", str(config), "apply", "--yes").code == 0
    listing = moto.client().list_objects_v2(Bucket="tierctl-cost", Prefix=url.split("/", 3)[3] + "/")
    classes = {o["Key"].rsplit("/", 1)[1]: o.get("StorageClass", "STANDARD") for o in listing["Contents"]}
    assert classes == {"tiny.bin": "STANDARD", "large.bin": "GLACIER"}
