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


@dataclass(frozen=True)
class Dataset:
    name: str
    prefix: str  # "" or ends with "/"
    home: str | None = None


@dataclass(frozen=True)
class Rule:
    index: int  # 1-based position in its policy
    when: str
    condition: Node
    place: tuple[str, ...] | None = None
    delete: bool = False

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


@dataclass(frozen=True)
class Config:
    path: str  # the policy file, absolute
    tiers: dict[str, Tier]
    datasets: dict[str, Dataset]
    policies: tuple[Policy, ...]
    index_path: str
    digest_algorithm: str = "crc32c"

    def policies_for(self, dataset: str) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.dataset == dataset)

    def fingerprint(self) -> str:
        """A digest of everything that decides a plan (comments and layout excluded)."""
        doc = {
            "tiers": {n: [t.url, t.storage_class] for n, t in sorted(self.tiers.items())},
            "datasets": {n: [d.prefix, d.home] for n, d in sorted(self.datasets.items())},
            "policies": [
                [p.name, p.dataset, p.include, p.exclude, [[r.when, r.place, r.delete] for r in p.rules]]
                for p in self.policies
            ],
            "digest": self.digest_algorithm,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
