"""What storage costs: a cost model per tier, and a plan's monthly and one-time cost after
the guard (:mod:`tierctl.cost_guard`) has left out what loses money. Pure: no I/O, no clock.

Money is USD; storage is billed per GiB-month (what S3 and GCS call a GB is 2**30 bytes),
a month is 30 days, and an early-deletion fee is the storage of the days left before a
class's minimum duration, prorated. The defaults are list prices (see ``PRICES_AS_OF``);
every figure can be overridden per tier with ``cost:`` (docs/cost.md).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from tierctl.cost_guard import Skipped, apply_guard
from tierctl.model import ObjectSnapshot, Placement
from tierctl.movers.registry import scheme_of
from tierctl.plan import Action, Plan
from tierctl.policies.model import Config, Tier

if TYPE_CHECKING:
    from tierctl.policies.sqlfilter import TierTotal

GIB = 2**30
KIB = 2**10
DAY = 86400.0
MONTH = 30 * DAY
PRICES_AS_OF = "2026-06"
PRICES_NOTE = (
    f"default list prices as of {PRICES_AS_OF}: S3 us-east-1, GCS us-east1 (regional);"
    " override per tier with `cost:`"
)
ONE_TIME_KINDS = ("requests", "retrieval", "restore", "egress", "early_deletion")


@dataclass(frozen=True)
class CostModel:
    """What one tier charges. ``overhead`` bytes are added to every object at this class's
    rate (S3 GLACIER/DEEP_ARCHIVE metadata); ``per_object_month`` is a flat monthly fee per
    object (the part of that metadata billed at STANDARD, or INTELLIGENT_TIERING's
    monitoring); objects smaller than ``min_size`` are billed as ``min_size``; an object
    removed before ``min_duration`` seconds is billed for the rest of it."""

    storage_gb_month: float = 0.0
    write_per_1000: float = 0.0  # PUT/COPY, and class changes into this class
    read_per_1000: float = 0.0  # GET
    retrieval_per_gb: float = 0.0  # reading out of an infrequent-access class
    restore_per_1000: float = 0.0  # archive classes: restore requests, at the tier's speed
    restore_per_gb: float = 0.0
    egress_per_gb: float = 0.0  # bytes tierctl reads out of this store to somewhere else
    per_object_month: float = 0.0
    min_duration: float = 0.0
    min_size: int = 0
    overhead: int = 0
    source: str = "none"  # where the figures come from, for reports

    @property
    def min_billable(self) -> int:
        """Below this size an object is billed for more than it holds."""
        return max(self.min_size, self.overhead)

    @property
    def guarded(self) -> bool:
        return self.min_duration > 0 or self.min_billable > 0

    def monthly(self, size: int) -> float:
        """Storage of one object of ``size`` bytes for a month."""
        billable = max(size, self.min_size) + self.overhead
        return billable / GIB * self.storage_gb_month + self.per_object_month

    def early_deletion(self, size: int, age: float) -> float:
        """The fee for removing an object that has been in this class for ``age`` seconds."""
        left = self.min_duration - max(age, 0.0)
        return self.monthly(size) * left / MONTH if left > 0 else 0.0


FREE = CostModel()


def _glacier(
    storage: float, write: float, restore: dict[str, tuple[float, float]], days: int
) -> dict[str, Any]:
    """S3's archive classes: 32 KiB of metadata per object at the class's rate and 8 KiB at
    STANDARD's ($0.023), i.e. 40 KiB at the class's rate plus 8 KiB of the difference."""
    return {
        "storage_gb_month": storage,
        "write_per_1000": write,
        "read_per_1000": 0.0004,
        "egress_per_gb": 0.09,
        "min_duration": days * DAY,
        "overhead": 40 * KIB,
        "per_object_month": 8 * KIB / GIB * (0.023 - storage),
        "restore": restore,
    }


# Published list prices (USD). S3: us-east-1, first 50 TB tier; egress: to the internet,
# first 10 TB. GCS: regional us-east1 (and us-central1); egress: worldwide, first TiB.
# ``restore``: (per 1,000 requests, per GiB) by the tier's `restore: {tier: ...}` speed.
_30D = 30 * DAY
_S3_IA = {"read_per_1000": 0.001, "retrieval_per_gb": 0.01, "min_size": 128 * KIB, "egress_per_gb": 0.09}
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("s3", "STANDARD"): {
        **{"storage_gb_month": 0.023, "write_per_1000": 0.005, "read_per_1000": 0.0004},
        "egress_per_gb": 0.09,
    },
    ("s3", "STANDARD_IA"): {
        **_S3_IA,
        "storage_gb_month": 0.0125,
        "write_per_1000": 0.01,
        "min_duration": _30D,
    },
    ("s3", "ONEZONE_IA"): {**_S3_IA, "storage_gb_month": 0.01, "write_per_1000": 0.01, "min_duration": _30D},
    ("s3", "INTELLIGENT_TIERING"): {  # frequent-access rate: the automatic savings are not modelled
        **{"storage_gb_month": 0.023, "write_per_1000": 0.005, "read_per_1000": 0.0004},
        **{"per_object_month": 0.0025 / 1000, "egress_per_gb": 0.09},
    },
    ("s3", "GLACIER_IR"): {
        **_S3_IA,
        **{"storage_gb_month": 0.004, "write_per_1000": 0.02, "read_per_1000": 0.01},
        **{"retrieval_per_gb": 0.03, "min_duration": 90 * DAY},
    },
    ("s3", "GLACIER"): _glacier(
        0.0036, 0.03, {"Expedited": (10.0, 0.03), "Standard": (0.05, 0.01), "Bulk": (0.0, 0.0)}, 90
    ),
    ("s3", "DEEP_ARCHIVE"): _glacier(
        0.00099, 0.05, {"Expedited": (0.10, 0.02), "Standard": (0.10, 0.02), "Bulk": (0.025, 0.0025)}, 180
    ),
    ("gcs", "STANDARD"): {
        **{"storage_gb_month": 0.020, "write_per_1000": 0.005, "read_per_1000": 0.0004},
        "egress_per_gb": 0.12,
    },
    ("gcs", "NEARLINE"): {
        **{"storage_gb_month": 0.010, "write_per_1000": 0.01, "read_per_1000": 0.001},
        **{"retrieval_per_gb": 0.01, "min_duration": 30 * DAY, "egress_per_gb": 0.12},
    },
    ("gcs", "COLDLINE"): {
        **{"storage_gb_month": 0.004, "write_per_1000": 0.02, "read_per_1000": 0.01},
        **{"retrieval_per_gb": 0.02, "min_duration": 90 * DAY, "egress_per_gb": 0.12},
    },
    ("gcs", "ARCHIVE"): {
        **{"storage_gb_month": 0.0012, "write_per_1000": 0.05, "read_per_1000": 0.05},
        **{"retrieval_per_gb": 0.05, "min_duration": 365 * DAY, "egress_per_gb": 0.12},
    },
}
PROVIDERS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_LABEL = {"s3": "S3", "gcs": "GCS"}


def provider_of(tier: Tier) -> str | None:
    """Whose default prices apply: the tier's ``cost: {provider: ...}``, else its URL's store;
    None for local, HDFS and rclone remotes (free unless configured)."""
    if tier.cost is not None and tier.cost.provider is not None:
        return None if tier.cost.provider == "none" else tier.cost.provider
    return PROVIDERS.get(scheme_of(tier.url))


def model_for(tier: Tier) -> CostModel:
    """The tier's defaults (by store, storage class and restore speed), then its overrides."""
    provider = provider_of(tier)
    storage_class = (tier.storage_class or "STANDARD").upper()
    values: dict[str, Any] = {}
    if provider is not None and (provider, storage_class) in DEFAULTS:
        values = dict(DEFAULTS[(provider, storage_class)])
        restore = values.pop("restore", None)
        if restore:
            values["restore_per_1000"], values["restore_per_gb"] = restore[tier.restore_speed]
        values["source"] = f"default {_LABEL[provider]} {storage_class}"
    overrides = {}
    if tier.cost is not None:
        overrides = {
            f.name: getattr(tier.cost, f.name)
            for f in fields(tier.cost)
            if f.name != "provider" and getattr(tier.cost, f.name) is not None
        }
    if overrides:
        values["source"] = f"{values['source']} + cost:" if values else "cost:"
    return replace(CostModel(**values), **overrides)


class Prices:
    """The cost model of every tier of a config, resolved once."""

    def __init__(self, config: Config) -> None:
        self.models = {name: model_for(tier) for name, tier in config.tiers.items()}
        # A class nobody priced (an unknown S3/GCS class, a class on an rclone remote): free
        # here, which the reports say. Local and HDFS tiers without a class are free.
        self.unknown = [
            name
            for name, tier in config.tiers.items()
            if self.models[name].source == "none" and (tier.storage_class or provider_of(tier))
        ]
        self.stores = {name: _store(tier.url) for name, tier in config.tiers.items()}
        # Tiers that charge nothing at all (local and HDFS tiers without `cost:`), and those
        # the guard looks at: per action of a plan, these are dictionary lookups.
        self.free = frozenset(name for name, model in self.models.items() if _charges_nothing(model))
        self.guarded = frozenset(name for name, model in self.models.items() if model.guarded)
        self.min_duration = {name: model.min_duration for name, model in self.models.items()}

    def __getitem__(self, tier: str) -> CostModel:
        return self.models.get(tier, FREE)

    def charges_nothing(self, tier: str) -> bool:
        return tier in self.free or tier not in self.models

    def unpriced(self) -> list[str]:
        return list(self.unknown)

    def same_store(self, a: str, b: str) -> bool:
        return self.stores.get(a) == self.stores.get(b)


def _charges_nothing(model: CostModel) -> bool:
    return all(getattr(model, f.name) == 0 for f in fields(CostModel) if f.name != "source")


def _store(url: str) -> tuple[str, str]:
    scheme = scheme_of(url)
    rest = url.split("://", 1)[1] if "://" in url else url
    return PROVIDERS.get(scheme, scheme), rest.split("/", 1)[0]


# -- monthly storage ----------------------------------------------------------------------
_MONTHS_KEPT = 4096  # (tier, size) pairs whose month a pass over many objects remembers


@dataclass
class StorageTally:
    """Objects, bytes and monthly storage per (dataset, tier) of the placements it sees."""

    prices: Prices
    objects: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    bytes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    monthly: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, dataset: str, tier: str, size: int, sign: int = 1) -> None:
        where = (dataset, tier)
        self.objects[where] += sign
        self.bytes[where] += sign * size
        self.monthly[where] += sign * self.prices[tier].monthly(size)

    def observe(self, objects: Iterable[ObjectSnapshot]) -> Iterator[ObjectSnapshot]:
        """Pass ``objects`` through, counting every present placement on the way."""
        models, objects_, bytes_, monthly = self.prices.models, self.objects, self.bytes, self.monthly
        # A month of (tier, size), worked out once per size seen (sizes repeat; bounded: this
        # streams every object of an index).
        month_of: dict[tuple[str, int], float] = {}
        for obj in objects:
            for p in obj.placements:
                if p.state == "present":
                    where = (p.dataset, p.tier)
                    objects_[where] += 1
                    bytes_[where] += p.size
                    cost = month_of.get((p.tier, p.size))
                    if cost is None:
                        cost = models.get(p.tier, FREE).monthly(p.size)
                        if len(month_of) < _MONTHS_KEPT:
                            month_of[(p.tier, p.size)] = cost
                    monthly[where] += cost
            yield obj

    def add_totals(self, totals: Iterable[TierTotal]) -> None:
        """Add placements counted in bulk (the SQL pre-filter's settled ones), a tier at a
        time. A placement's monthly cost is affine in its size counted as at least the
        tier's ``min_size`` (``billable``), so ``n`` placements of ``B`` billable bytes cost
        what ``n - r`` of ``q`` and ``r`` of ``q + 1`` bytes do (``q, r = divmod(B, n)``)."""
        for total in totals:
            where = (total.dataset, total.tier)
            model = self.prices[total.tier]
            q, r = divmod(total.billable, total.objects)
            self.objects[where] += total.objects
            self.bytes[where] += total.bytes
            self.monthly[where] += (total.objects - r) * model.monthly(q) + r * model.monthly(q + 1)

    def per_tier(self) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for (_, tier), value in self.monthly.items():
            totals[tier] += value
        return dict(totals)


# -- what the cost pass must see ------------------------------------------------------------
def needs_history(plan: Plan, prices: Prices, *, guard: bool) -> set[tuple[str, str]]:
    """Objects whose placements the cost pass must see: those the guard checks (copies and
    transitions into a guarded tier, and restores, which it weighs by what they are for) and
    those with an early-deletion fee to price (which includes every transition out of a
    class with a minimum duration, the guard's other check)."""
    wanted: set[tuple[str, str]] = set()
    guarded, min_duration = prices.guarded, prices.min_duration
    for a in plan.actions:
        into_guarded = a.op in ("copy", "transition") and a.expect is None and a.target in guarded
        if guard and (into_guarded or a.op == "restore"):
            wanted.add((a.dataset, a.key))
        removes = a.op in ("delete", "transition") or (a.op == "copy" and a.expect is not None)
        removed = a.source if a.op == "transition" and a.source else a.target
        if removes and min_duration.get(removed, 0.0) > 0:
            wanted.add((a.dataset, a.key))
    return wanted


# -- a plan's cost ----------------------------------------------------------------------------
def _age_in_class(obj: ObjectSnapshot | None, tier: str, now: float) -> float:
    """How long the placement has been in its class (since first seen or last changed);
    0 when unknown, which prices the whole minimum duration."""
    placement: Placement | None = None
    if obj is not None:
        placement = next((p for p in obj.placements if p.tier == tier and p.state == "present"), None)
    if placement is None:
        return 0.0
    since = max(placement.first_seen, placement.changed_at or 0.0)
    return max(0.0, now - since)


def action_cost(
    a: Action, prices: Prices, history: Mapping[tuple[str, str], ObjectSnapshot], now: float
) -> dict[str, float]:
    """The one-time cost of one action, by kind (see ONE_TIME_KINDS)."""
    cost: dict[str, float] = defaultdict(float)
    target = prices[a.target]
    gib = a.size / GIB
    obj = history.get((a.dataset, a.key))

    def read(tier: str) -> None:
        model = prices[tier]
        cost["requests"] += model.read_per_1000 / 1000
        cost["retrieval"] += model.retrieval_per_gb * gib

    if a.op == "copy" and a.source is not None:
        read(a.source)
        cost["requests"] += target.write_per_1000 / 1000
        if not prices.same_store(a.source, a.target):
            cost["egress"] += prices[a.source].egress_per_gb * gib
        if a.expect is not None:
            cost["early_deletion"] += target.early_deletion(a.expect.size, _age_in_class(obj, a.target, now))
    elif a.op == "transition" and a.source is not None:
        source = prices[a.source]
        cost["requests"] += target.write_per_1000 / 1000
        cost["retrieval"] += source.retrieval_per_gb * gib
        cost["early_deletion"] += source.early_deletion(a.size, _age_in_class(obj, a.source, now))
    elif a.op == "verify" and a.source is not None:
        for tier in (a.source, a.target):
            read(tier)
            cost["egress"] += prices[tier].egress_per_gb * gib
    elif a.op == "restore":
        cost["restore"] += target.restore_per_1000 / 1000 + target.restore_per_gb * gib
    elif a.op == "delete":
        size = a.expect.size if a.expect is not None else a.size
        cost["early_deletion"] += target.early_deletion(size, _age_in_class(obj, a.target, now))
    return cost


@dataclass
class PlanCost:
    """Monthly storage per tier before and after a plan, its one-time cost by kind, and what
    the guard skipped. Stored in saved plans as plain data (:meth:`to_dict`)."""

    before: dict[str, float]
    after: dict[str, float]
    one_time: dict[str, float]
    skipped: list[Skipped] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)
    guard: bool = True

    def to_dict(self) -> dict[str, Any]:
        tiers = sorted(set(self.before) | set(self.after))
        return {
            "currency": "USD",
            "monthly_before": round(sum(self.before.values()), 10),
            "monthly_after": round(sum(self.after.values()), 10),
            "tiers": {
                t: {
                    "monthly_before": round(self.before.get(t, 0.0), 10),
                    "monthly_after": round(self.after.get(t, 0.0), 10),
                }
                for t in tiers
            },
            "one_time": {k: round(self.one_time.get(k, 0.0), 10) for k in ONE_TIME_KINDS}
            | {"total": round(sum(self.one_time.values()), 10)},
            "guard": self.guard,
            "skipped": [s.to_dict() for s in self.skipped],
            "unpriced_tiers": self.unpriced,
            "prices": PRICES_NOTE,
        }


def assess(
    plan: Plan,
    config: Config,
    prices: Prices,
    before: StorageTally,
    history: Mapping[tuple[str, str], ObjectSnapshot],
    now: float,
    *,
    guard: bool = True,
) -> PlanCost:
    """Run the guard over ``plan`` (unless not ``guard``), then price what is left."""
    skipped = apply_guard(plan, config, prices, history, now) if guard else []
    after = dict(before.per_tier())
    one_time: dict[str, float] = defaultdict(float)
    # Plans repeat themselves (10,000 copies of small files from one tier to another): a
    # month of one size on one tier is worked out once, and the one-time cost of an action
    # between tiers that charge nothing is the zeros the first such action got.
    monthly_of: dict[tuple[str, int], float] = {}
    zeros: set[tuple[str, str | None, str, bool]] = set()

    def change(tier: str, size: int, sign: int) -> None:
        monthly = monthly_of.get((tier, size))
        if monthly is None:
            monthly = prices[tier].monthly(size)
            if len(monthly_of) < _MONTHS_KEPT:
                monthly_of[(tier, size)] = monthly
        after[tier] = after.get(tier, 0.0) + sign * monthly

    for a in plan.actions:
        signature = (a.op, a.source, a.target, a.expect is not None)
        if signature not in zeros:  # (else: zeros, under the keys the first such action added)
            found = action_cost(a, prices, history, now)
            for kind, value in found.items():
                one_time[kind] += value
            free = prices.charges_nothing(a.target) and (a.source is None or prices.charges_nothing(a.source))
            if free and all(value == 0.0 for value in found.values()):
                zeros.add(signature)
        if a.op == "copy":
            change(a.target, a.size, 1)
            if a.expect is not None:
                change(a.target, a.expect.size, -1)
        elif a.op == "transition" and a.source is not None:
            change(a.source, a.size, -1)
            change(a.target, a.size, 1)
        elif a.op == "delete":
            change(a.target, a.expect.size if a.expect is not None else a.size, -1)
    return PlanCost(before.per_tier(), after, dict(one_time), skipped, prices.unpriced(), guard)


def format_usd(value: float) -> str:
    """$1,234.56 from a dollar up; below, two significant digits ($0.0012, $0.0000061)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    if value < 1e-10:
        return "$0"
    if value >= 0.995:
        return f"{sign}${value:,.2f}"
    digits = min(10, max(2, 1 - math.floor(math.log10(value))))
    whole, _, fraction = f"{value:.{digits}f}".partition(".")
    return f"{sign}${whole}.{fraction.rstrip('0').ljust(2, '0')}"
