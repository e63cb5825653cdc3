"""The policy file as plain, validated data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tierctl.policies.expr import Node


@dataclass(frozen=True)
class Tier:
    name: str
    url: str
    storage_class: str | None = None
    mover: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    restore_days: int = 7  # how long a restored copy of an archived object stays readable
    restore_speed: str = "Standard"  # the store's retrieval tier: Expedited | Standard | Bulk


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
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
