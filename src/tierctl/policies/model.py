"""The policy file as plain, validated data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from tierctl.model import ObjectSnapshot, Placement
from tierctl.policies.expr import Node


@dataclass(frozen=True)
class TierCost:
    """A tier's ``cost:`` mapping (docs/cost.md): ``provider`` (s3, gcs, none) picks whose
    default prices apply; every other field set overrides that default. USD per GiB-month,
    per 1,000 requests or per GiB; durations in seconds; sizes in bytes."""

    provider: str | None = None
    storage_gb_month: float | None = None
    write_per_1000: float | None = None
    read_per_1000: float | None = None
    retrieval_per_gb: float | None = None
    restore_per_1000: float | None = None
    restore_per_gb: float | None = None
    egress_per_gb: float | None = None
    per_object_month: float | None = None
    min_duration: float | None = None
    min_size: int | None = None
    overhead: int | None = None


@dataclass(frozen=True)
class Tier:
    name: str
    url: str
    storage_class: str | None = None
    mover: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    restore_days: int = 7  # how long a restored copy of an archived object stays readable
    restore_speed: str = "Standard"  # the store's retrieval tier: Expedited | Standard | Bulk
    cost: TierCost | None = None  # None: the defaults for the tier's store and class


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str  # "" or ends with "/"
    home: str | None = None


@dataclass(frozen=True)
class Copies:
    """``copies: {among: [...], n: N}``: N placements chosen among a group of tiers."""

    among: tuple[str, ...]
    n: int


@dataclass(frozen=True)
class DeleteLimit:
    """``max_delete``: the most objects one plan may expire, as a count or a percentage."""

    count: int | None = None
    percent: float | None = None

    def allows(self, deletes: int, objects: int) -> bool:
        if self.count is not None:
            return deletes <= self.count
        return deletes <= (self.percent or 0.0) / 100.0 * objects

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


@dataclass(frozen=True)
class Rule:
    """``condition`` is what decides: ``when`` and, if given, the rule's class and the
    delete guard ``min_age`` (seconds), all joined by and."""

    index: int  # 1-based position in its policy
    when: str
    condition: Node
    place: tuple[str, ...] | None = None
    delete: bool = False
    copies: Copies | None = None
    min_age: float | None = None
    class_name: str | None = None

    def describe(self) -> str:
        return f"rule {self.index} '{self.when}'"


@dataclass(frozen=True)
class Policy:
    name: str
    dataset: str
    rules: tuple[Rule, ...]
    schedule: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_delete: DeleteLimit | None = None
    # Plans keep this policy's copies and transitions that the cost guard would skip, in
    # `plan`, `apply` and the daemon alike (docs/cost.md).
    allow_costly: bool = False


@dataclass(frozen=True)
class RetrySettings:
    """``retries:``: retryable storage errors are tried ``attempts`` times in all, with
    exponential backoff and full jitter between ``base_delay`` and ``max_delay`` seconds."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0


@dataclass(frozen=True)
class DaemonSettings:
    """``daemon:``: how scheduled runs go. ``error_budget`` stops a run once more than that
    share of its finished actions failed (None: never)."""

    timezone: str = "UTC"
    error_budget: float | None = 0.2
    jobs: int = 8


@dataclass(frozen=True)
class AlertSettings:
    """``alerts:``: after daemon runs whose outcome class is in ``on`` (failure, success,
    interrupted), run ``command`` (payload as JSON on stdin) and/or POST it to ``webhook``."""

    on: tuple[str, ...] = ("failure",)
    command: str | None = None
    webhook: str | None = None
    timeout: float = 10.0


@dataclass(frozen=True)
class MetricsSettings:
    """``metrics:``: Prometheus text written to ``textfile`` after every daemon run and/or
    served at ``listen`` (host:port)."""

    textfile: str | None = None
    listen: str | None = None


@dataclass(frozen=True)
class CacheSettings:
    """``cache:``: objects that ``tier://`` reads from a ``sources`` tier are copied to the
    local tier ``tier`` (at most ``max_size`` bytes; the least recently read are evicted).

    The cache tier's placements belong to the cache: policies neither count them as copies
    nor place or delete them, except that a ``delete`` rule removes the object from the
    cache too."""

    tier: str
    max_size: int
    sources: tuple[str, ...]

    def split(self, obj: ObjectSnapshot) -> tuple[ObjectSnapshot, tuple[Placement, ...]]:
        """``obj`` without its cache placements, and its present cache placements. A read of
        the cached copy is a read of the object: its time moves to the placements holding
        the same content, so ``last_access`` sees it."""
        cached = tuple(p for p in obj.placements if p.tier == self.tier)
        if not cached:
            return obj, ()
        read = max((p.atime for p in cached if p.atime is not None), default=None)
        kept: list[Placement] = []
        for p in obj.placements:
            if p.tier == self.tier:
                continue
            if read is not None and (p.atime or 0.0) < read and any(p.same_content(c) for c in cached):
                p = replace(p, atime=read)
            kept.append(p)
        return replace(obj, placements=tuple(kept)), tuple(p for p in cached if p.state == "present")


@dataclass(frozen=True)
class Config:
    path: str  # the policy file, absolute
    tiers: dict[str, Tier]
    datasets: dict[str, Dataset]
    policies: tuple[Policy, ...]
    index_path: str
    digest_algorithm: str = "crc32c"
    classes: dict[str, Node] = field(default_factory=dict)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    retries: RetrySettings = field(default_factory=RetrySettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    cache: CacheSettings | None = None
    # Where apply runs its units: "local" (threads here) or a Dask scheduler address
    # ("tcp://HOST:PORT", "tls://HOST:PORT"; the file may say dask://HOST:PORT).
    executor: str = "local"

    def store_group(self, tier: str) -> tuple[str, ...]:
        """The tiers that share ``tier``'s URL (one store, different storage classes), in
        declaration order; a tier alone is a group of one."""
        url = self.tiers[tier].url.rstrip("/")
        return tuple(name for name, t in self.tiers.items() if t.url.rstrip("/") == url)

    def tier_for_class(self, group: tuple[str, ...], storage_class: str | None) -> str:
        """Which tier of a store group an object in ``storage_class`` belongs to: the tier
        declaring that class, else the group's tier without a class (the store's default)."""
        wanted = (storage_class or "STANDARD").upper()
        default = None
        for name in group:
            declared = self.tiers[name].storage_class
            if declared is not None and declared.upper() == wanted:
                return name
            if declared is None or declared.upper() == "STANDARD":
                default = default or name
        return default or group[0]

    def policies_for(self, dataset: str) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.dataset == dataset)

    def fingerprint(self) -> str:
        """A digest of everything that decides a plan (comments and layout excluded)."""
        doc = {
            "tiers": {n: [t.url, t.storage_class] for n, t in sorted(self.tiers.items())},
            "datasets": {n: [d.prefix, d.home] for n, d in sorted(self.datasets.items())},
            "policies": [
                [
                    p.name,
                    p.dataset,
                    p.include,
                    p.exclude,
                    str(p.max_delete),
                    [[repr(r.condition), r.place, r.delete, repr(r.copies)] for r in p.rules],
                ]
                for p in self.policies
            ],
            "digest": self.digest_algorithm,
        }
        if self.cache is not None:  # its placements are out of the policies' reach
            doc["cache"] = self.cache.tier
        costly = [p.name for p in self.policies if p.allow_costly]
        if costly:  # it turns the cost guard off; only when set, so other files keep their digest
            doc["allow_costly"] = costly
        costs = {n: repr(t.cost) for n, t in sorted(self.tiers.items()) if t.cost is not None}
        if costs:  # the cost guard decides which actions a plan keeps
            doc["cost"] = costs
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
