"""Load and validate a policy file. Every problem is reported with file:line:column and a hint.

YAML is composed to nodes (not loaded) so every value keeps its position; validation then
walks plain data and looks positions up by path (:mod:`.loader_yaml`). This module reads the
file and validates its top level, tiers and datasets; the ``classes:`` and ``policies:``
sections are validated in :mod:`.loader_policies`.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from typing import Any

from tierctl.errors import ConfigError, ConfigErrors
from tierctl.movers.digest import ALGORITHMS
from tierctl.movers.registry import TierTarget, check_tier
from tierctl.policies.loader_policies import analyse, check_read_only_tiers, parse_classes, parse_policies
from tierctl.policies.loader_yaml import Checker, LocatedDoc, Path, read_document
from tierctl.policies.model import Config, Dataset, Tier, TierCost
from tierctl.policies.units import parse_duration, parse_size

MAX_CONFIG_BYTES = 4 << 20

TOP_KEYS = (
    *("version", "index", "digest", "tiers", "datasets", "classes", "policies"),
    *("daemon", "retries", "alerts", "metrics", "cache", "executor"),
)
TIER_KEYS = ("url", "storage_class", "mover", "options", "restore", "cost", "description")
COST_MONEY_KEYS = (
    *("storage_gb_month", "write_per_1000", "read_per_1000", "retrieval_per_gb"),
    *("restore_per_1000", "restore_per_gb", "egress_per_gb", "per_object_month"),
)
COST_KEYS = ("provider", *COST_MONEY_KEYS, "min_duration", "min_size", "overhead")
COST_PROVIDERS = ("s3", "gcs", "none")
RESTORE_KEYS = ("days", "tier")
RESTORE_SPEEDS = ("Expedited", "Standard", "Bulk")
DATASET_KEYS = ("prefix", "home", "description")


def load_config(path: str, *, index_override: str | None = None, lint: bool = False) -> Config:
    """Read, parse and validate the policy file at ``path``. Delete rules without a guard
    are always refused. With ``lint`` (what `tierctl validate` does) also reject rules that
    can never match and policies that decide the same objects differently."""
    path = os.path.abspath(path)
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: policy file larger than {MAX_CONFIG_BYTES >> 20} MiB",
                hint="is this the right file?",
            )
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(
            f"policy file not found: {path}",
            hint="run `tierctl init` to write a starter, or pass -c PATH / set $TIERCTL_CONFIG",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_config(text, path, index_override=index_override, lint=lint)


def parse_config(text: str, path: str, *, index_override: str | None = None, lint: bool = False) -> Config:
    doc, data = read_document(text, path)
    validator = _Validator(doc, path, index_override)
    validator.lint = lint
    return validator.run(data)


class _Validator(Checker):
    """The policy file's top level, tiers and datasets; the ``classes:`` and ``policies:``
    sections are :mod:`.loader_policies`', the operational ones :mod:`.operations`' and
    :mod:`.cache`'s, all reporting through this checker."""

    def __init__(self, doc: LocatedDoc, path: str, index_override: str | None) -> None:
        super().__init__(doc)
        self.path = path
        self.base_dir = os.path.dirname(path)
        self.index_override = index_override
        self.lint = False

    # -- sections -------------------------------------------------------------------------
    def run(self, data: Any) -> Config:
        top = self.mapping(data, (), TOP_KEYS, "the policy file")
        version = top.get("version", 1)
        if version != 1:
            self.problem(("version",), f"unsupported version {version!r}", "this tierctl reads version: 1")
        digest = top.get("digest", "crc32c")
        if not isinstance(digest, str) or digest not in ALGORITHMS:
            self.problem(("digest",), f"unknown digest {digest!r}", f"use one of: {', '.join(ALGORITHMS)}")
        tiers = self.tiers(top.get("tiers"))
        datasets = self.datasets(top.get("datasets"), tiers)
        classes = parse_classes(self, top.get("classes"), tiers)
        policies = parse_policies(self, top.get("policies"), tiers, datasets, classes)
        check_read_only_tiers(self, tiers, datasets, policies)
        index = self.index_path(top.get("index"))
        operations = self.operations(top)
        if top.get("cache") is not None:
            from tierctl.policies import cache

            operations["cache"] = cache.parse(self, top["cache"], tiers, policies)
        config = Config(self.path, tiers, datasets, policies, index, digest, classes)
        if self.lint and not self.problems:
            analyse(self, config)
        if self.problems:
            raise ConfigErrors(self.problems) if len(self.problems) > 1 else self.problems[0]
        return replace(config, **operations)

    def operations(self, top: dict[str, Any]) -> dict[str, Any]:
        """The daemon, retries, alerts and metrics sections (see policies.operations)."""
        from tierctl.policies import operations

        return operations.parse(self, top)

    def index_path(self, value: Any) -> str:
        if self.index_override:
            return os.path.abspath(self.index_override)
        if value is None:
            return os.path.join(self.base_dir, ".tierctl", "index.db")
        text = self.string(value, ("index",), "index")
        return os.path.join(self.base_dir, os.path.expanduser(text or ""))

    def tiers(self, value: Any) -> dict[str, Tier]:
        if value is None:
            self.problem((), "no tiers declared", "add a `tiers:` section, e.g. `hot: {url: ./hot}`")
            return {}
        section = self.mapping(value, ("tiers",), tuple(value) if isinstance(value, dict) else (), "tiers")
        tiers: dict[str, Tier] = {}
        for name, body in section.items():
            where: Path = ("tiers", name)
            if isinstance(body, str):
                body = {"url": body}
            spec = self.mapping(body, where, TIER_KEYS, f"tier {name!r}")
            url = self.string(spec.get("url"), (*where, "url"), f"tier {name!r}: url")
            storage_class = spec.get("storage_class")
            if storage_class is not None and not isinstance(storage_class, str):
                self.problem((*where, "storage_class"), "storage_class must be a string")
                storage_class = None
            options = spec.get("options") or {}
            if not isinstance(options, dict):
                self.problem((*where, "options"), "options must be a mapping")
                options = {}
            mover = spec.get("mover", "auto")
            days, speed = self.restore_settings(spec.get("restore"), (*where, "restore"), name)
            cost = self.cost_settings(spec.get("cost"), (*where, "cost"), name)
            if url:
                tiers[name] = Tier(
                    name, self.resolve_url(url), storage_class, str(mover), options, days, speed, cost
                )
                self.check_mover(tiers[name], where)
        self.check_tier_overlap(tiers)
        return tiers

    def check_mover(self, tier: Tier, where: Path) -> None:
        """What opening the tier's mover would reject (options, storage class, URL scheme),
        found here, offline, so that it is located in the file and `validate` catches it."""
        target = TierTarget(tier.name, tier.url, tier.mover, tier.options)
        for problem in check_tier(target, tier.storage_class):
            self.problem((*where, *problem.field), problem.message, problem.hint, key=problem.at_key)

    def restore_settings(self, value: Any, where: Path, tier: str) -> tuple[int, str]:
        """``restore: {days: 7, tier: Standard}``: how long a restored copy of an archived
        object stays readable, and the store's retrieval speed."""
        if value is None:
            return 7, "Standard"
        spec = self.mapping(value, where, RESTORE_KEYS, f"tier {tier!r}: restore")
        days = spec.get("days", 7)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 365:
            self.problem((*where, "days"), "restore days must be a whole number from 1 to 365")
            days = 7
        speed = spec.get("tier", "Standard")
        if speed not in RESTORE_SPEEDS:
            self.problem(
                (*where, "tier"),
                f"unknown restore tier {speed!r}",
                f"use one of: {', '.join(RESTORE_SPEEDS)}",
            )
            speed = "Standard"
        return days, speed

    def cost_settings(self, value: Any, where: Path, tier: str) -> TierCost | None:
        """``cost: {storage_gb_month: 0.004, min_duration: 90d, ...}``: figures that override
        the default prices of the tier's store and class (docs/cost.md)."""
        if value is None:
            return None
        spec = self.mapping(value, where, COST_KEYS, f"tier {tier!r}: cost")
        found: dict[str, Any] = {}
        for key, raw in spec.items():
            at: Path = (*where, key)
            if key == "provider":
                if raw in COST_PROVIDERS:
                    found[key] = raw
                else:
                    hint = f"use one of: {', '.join(COST_PROVIDERS)}"
                    self.problem(at, f"unknown cost provider {raw!r}", hint)
            elif key in COST_MONEY_KEYS:
                if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw < float("inf"):
                    self.problem(
                        at,
                        f"cost {key} must be an amount of US dollars (0 or more), got {raw!r}",
                        f"a plain number without a currency sign, e.g. {key}: 0.004",
                    )
                else:
                    found[key] = float(raw)
            elif key in ("min_duration", "min_size", "overhead"):
                duration = key == "min_duration"
                parse = parse_duration if duration else parse_size
                example = "90d" if duration else "128KiB"
                try:
                    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                        raise ValueError(f"{key} must be a {'duration' if duration else 'size'}")
                    found[key] = parse(str(raw)) if raw != 0 else 0
                except ValueError as exc:
                    self.problem(at, str(exc), f"e.g. {key}: {example}")
        return TierCost(**found)

    def resolve_url(self, url: str) -> str:
        if "://" in url:
            return url
        path = os.path.normpath(os.path.join(self.base_dir, os.path.expanduser(url)))
        return "file://" + path

    def check_tier_overlap(self, tiers: dict[str, Tier]) -> None:
        seen: dict[tuple[str, str | None], str] = {}
        for name, tier in tiers.items():
            same = seen.get((tier.url, tier.storage_class))
            if same:
                self.problem(
                    ("tiers", name, "url"),
                    f"tier {name!r} has the same url and storage class as {same!r}",
                    "two tiers must differ in url or storage_class",
                )
            seen[(tier.url, tier.storage_class)] = name
        for a in tiers.values():
            for b in tiers.values():
                if a.url != b.url and b.url.startswith(a.url.rstrip("/") + "/"):
                    self.problem(
                        ("tiers", b.name, "url"),
                        f"tier {b.name!r} lies inside tier {a.name!r} ({a.url})",
                        "tier roots must not nest: a scan of one would see the other's objects",
                    )

    def datasets(self, value: Any, tiers: dict[str, Tier]) -> dict[str, Dataset]:
        if value is None:
            return {}
        section = self.mapping(
            value, ("datasets",), tuple(value) if isinstance(value, dict) else (), "datasets"
        )
        datasets: dict[str, Dataset] = {}
        for name, body in section.items():
            where: Path = ("datasets", name)
            spec = self.mapping(body, where, DATASET_KEYS, f"dataset {name!r}")
            prefix = spec.get("prefix", "")
            if not isinstance(prefix, str) or prefix.startswith("/") or ".." in prefix.split("/"):
                self.problem(
                    (*where, "prefix"),
                    f"dataset {name!r}: prefix must be a relative key prefix",
                    "e.g. prefix: events/",
                )
                continue
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            home = spec.get("home")
            if home is not None:
                self.name_ref(str(home), (*where, "home"), tiers, "tier")
            datasets[name] = Dataset(name, prefix, home)
        names = sorted(datasets.values(), key=lambda d: d.prefix)
        for a, b in itertools.pairwise(names):
            if b.prefix.startswith(a.prefix):
                self.problem(
                    ("datasets", b.name, "prefix"),
                    f"datasets {a.name!r} and {b.name!r} overlap ({a.prefix!r} contains {b.prefix!r})",
                    "each object must belong to one dataset",
                )
        return datasets
