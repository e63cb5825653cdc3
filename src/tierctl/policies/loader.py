"""Load and validate a policy file. Every problem is reported with file:line:column and a hint.

YAML is composed to nodes (not loaded) so every value keeps its position; validation then
walks plain data and looks positions up by path.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import replace
from difflib import get_close_matches
from typing import Any

import yaml

from tierctl.errors import ConfigError, ConfigErrors, ExpressionError, Location
from tierctl.movers.digest import ALGORITHMS
from tierctl.movers.registry import read_only_reason
from tierctl.policies import analysis, expr
from tierctl.policies.globs import glob_error
from tierctl.policies.model import Config, Copies, Dataset, DeleteLimit, Policy, Rule, Tier, TierCost
from tierctl.policies.units import parse_duration, parse_size

Path = tuple[str | int, ...]
MAX_CONFIG_BYTES = 4 << 20
MAX_YAML_NODES = 1_000_000  # YAML aliases can expand a small file into a huge document

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
CLASS_KEYS = ("when", "include", "exclude", "description")
POLICY_KEYS = (
    *("name", "dataset", "schedule", "include", "exclude", "rules", "description"),
    *("max_delete", "allow_costly"),
)
RULE_KEYS = ("when", "class", "place", "copies", "delete", "min_age", "description")
COPIES_KEYS = ("among", "n")


class _Doc:
    """Plain data from YAML nodes plus the position of every value and mapping key."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.values: dict[Path, Location] = {}
        self.keys: dict[Path, Location] = {}
        self.lines: list[str] = []
        self.nodes = 0
        self._scalars = yaml.SafeLoader("")

    def loc(self, where: Path, *, key: bool = False) -> Location:
        table = self.keys if key else self.values
        probe = where
        while probe:
            if probe in table:
                return table[probe]
            probe = probe[:-1]
            table = self.values
        return self.values.get((), Location(self.path, 1, 1))

    def convert(self, node: yaml.Node, where: Path) -> Any:
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES or len(where) > 64:
            raise ConfigError(
                "the policy file expands to too large or too deeply nested a document",
                location=_location(self.path, node),
                hint="check YAML anchors and aliases (&name / *name)",
            )
        self.values[where] = _location(self.path, node)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if key in out:
                    raise ConfigError(
                        f"duplicate key {key!r}",
                        location=_location(self.path, key_node),
                        hint="each key may appear once in a mapping",
                    )
                self.keys[(*where, key)] = _location(self.path, key_node)
                out[key] = self.convert(value_node, (*where, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*where, i)) for i, item in enumerate(node.value)]
        return self._scalars.construct_object(node, deep=True)


def _location(path: str, node: yaml.Node) -> Location:
    mark = node.start_mark
    return Location(path, mark.line + 1, mark.column + 1)


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
    doc = _Doc(path)
    doc.lines = text.splitlines()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path, 1, 1)
        raise ConfigError(
            f"YAML syntax: {exc.problem or exc.context}",
            location=loc,
            hint="check indentation and quoting near this place",
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", location=Location(path, 1, 1)) from None
    except RecursionError:
        raise ConfigError("YAML nested too deeply", location=Location(path, 1, 1)) from None
    if root is None:
        raise ConfigError(
            "policy file is empty",
            location=Location(path, 1, 1),
            hint="run `tierctl init` to write a starter",
        )
    try:
        data = doc.convert(root, ())
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML: {exc}", location=Location(path, 1, 1)) from None
    except (RecursionError, ValueError, OverflowError) as exc:
        raise ConfigError(f"YAML: cannot read a value ({exc})", location=Location(path, 1, 1)) from None
    validator = _Validator(doc, path, index_override)
    validator.lint = lint
    return validator.run(data)


class _Validator:
    def __init__(self, doc: _Doc, path: str, index_override: str | None) -> None:
        self.doc = doc
        self.path = path
        self.base_dir = os.path.dirname(path)
        self.index_override = index_override
        self.lint = False
        self.problems: list[ConfigError] = []

    def problem(self, where: Path, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(ConfigError(message, hint=hint, location=self.doc.loc(where, key=key)))

    # -- helpers --------------------------------------------------------------------------
    def mapping(self, value: Any, where: Path, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(where, f"{what} must be a mapping, got {_type_name(value)}")
            return {}
        for key in value:
            if key not in allowed:
                close = get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
                self.problem((*where, key), f"unknown key {key!r} in {what}", hint, key=True)
        return value

    def string(self, value: Any, where: Path, what: str, *, required: bool = True) -> str | None:
        if value is None:
            if required:
                self.problem(where, f"{what} is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"{what} must be a non-empty string, got {_type_name(value)}")
            return None
        return value

    def string_list(self, value: Any, where: Path, what: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(where, f"{what} must be a list of strings")
            return ()
        return tuple(value)

    def globs(self, value: Any, where: Path, what: str) -> tuple[str, ...]:
        patterns = self.string_list(value, where, what)
        for i, pattern in enumerate(patterns):
            problem = glob_error(pattern)
            if problem is not None:
                at: Path = where if isinstance(value, str) else (*where, i)
                self.problem(at, problem, "a class like [a-z] must run from low to high")
        return patterns

    def name_ref(self, name: str, where: Path, known: dict[str, Any], what: str) -> bool:
        if name in known:
            return True
        close = get_close_matches(name, list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known {what}s: {', '.join(known) or 'none'}"
        self.problem(where, f"unknown {what} {name!r}", hint)
        return False

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
        classes = self.classes(top.get("classes"), tiers)
        policies = self.policies(top.get("policies"), tiers, datasets, classes)
        self.check_read_only_tiers(tiers, datasets, policies)
        index = self.index_path(top.get("index"))
        operations = self.operations(top)
        if top.get("cache") is not None:
            from tierctl.policies import cache

            operations["cache"] = cache.parse(self, top["cache"], tiers, policies)
        config = Config(self.path, tiers, datasets, policies, index, digest, classes)
        if self.lint and not self.problems:
            self.analyse(config)
        if self.problems:
            raise ConfigErrors(self.problems) if len(self.problems) > 1 else self.problems[0]
        return replace(config, **operations)

    def analyse(self, config: Config) -> None:
        """Shadowed and never-matching rules; policies deciding the same objects differently."""
        for i, policy in enumerate(config.policies):
            for problem in analysis.rule_problems(policy):
                where: Path = ("policies", i, "rules", problem.rule.index - 1)
                if (*where, "when") in self.doc.values:
                    where = (*where, "when")
                self.problem(where, problem.message, problem.hint)
        position = {p.name: i for i, p in enumerate(config.policies)}
        for conflict in analysis.policy_conflicts(config):
            self.problem(
                ("policies", position[conflict.second.name], "name"),
                f"policies {conflict.first.name!r} and {conflict.second.name!r} select the same objects"
                f" of dataset {conflict.first.dataset!r} and decide differently, e.g. {conflict.example}:"
                f" {conflict.first.name!r} {conflict.first_outcome},"
                f" {conflict.second.name!r} {conflict.second_outcome}",
                "only the first policy that matches decides: merge them into one policy with ordered"
                " rules, or give them disjoint include/exclude globs",
            )

    def check_read_only_tiers(
        self, tiers: dict[str, Tier], datasets: dict[str, Dataset], policies: tuple[Policy, ...]
    ) -> None:
        """A tier tierctl cannot write to (``hdfs://``) may be in a rule's ``place`` or
        ``copies`` only as its dataset's home, where it keeps the objects the tier holds (a
        migration keeps its source so); anywhere else the rule would copy objects onto it."""
        for i, policy in enumerate(policies):
            dataset = datasets.get(policy.dataset)
            for rule in policy.rules:
                at: Path = ("policies", i, "rules", rule.index - 1)
                targets = [("place", name) for name in rule.place or ()]
                targets += [("copies", name) for name in (rule.copies.among if rule.copies else ())]
                for key, name in targets:
                    tier = tiers[name]
                    reason = read_only_reason(tier.url, tier.mover)
                    if reason and (dataset is None or dataset.home != name):
                        self.problem(
                            (*at, key),
                            f"policy {policy.name!r} rule {rule.index} would copy objects onto tier"
                            f" {name!r}, which tierctl cannot write to: {reason}",
                            "it can be a dataset's home (scanned, read, moved from); to write to"
                            " the cluster, declare the tier as webhdfs://NAMENODE:9870/PATH",
                        )

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
        self.check_tier_overlap(tiers)
        return tiers

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

    def classes(self, value: Any, tiers: dict[str, Tier]) -> dict[str, expr.Node]:
        """Named selectors (a `when` and/or include/exclude globs), used as ``class(NAME)`` in
        rules and in later classes, or as a rule's ``class: NAME``."""
        if value is None:
            return {}
        keys = tuple(value) if isinstance(value, dict) else ()
        section = self.mapping(value, ("classes",), keys, "classes")
        classes: dict[str, expr.Node] = {}
        for name, body in section.items():
            where: Path = ("classes", name)
            if not _NAME.fullmatch(name):
                self.problem(where, f"bad class name {name!r}", "use letters, digits, _ and -", key=True)
                continue
            if isinstance(body, str):
                body = {"when": body}
            spec = self.mapping(body, where, CLASS_KEYS, f"class {name!r}")
            parts: list[expr.Node] = []
            include = self.globs(spec.get("include"), (*where, "include"), "include")
            exclude = self.globs(spec.get("exclude"), (*where, "exclude"), "exclude")
            if include or exclude:
                parts.append(expr.Select(include, exclude))
            if "when" in spec:
                node = self.condition(_when_text(spec["when"]), (*where, "when"), classes, tiers)
                if node is None:
                    continue
                parts.append(node)
            if not parts:
                self.problem(where, f"class {name!r} selects nothing", "give it `when:` or include/exclude")
                continue
            classes[name] = parts[0] if len(parts) == 1 else expr.And(tuple(parts))
        return classes

    def policies(
        self,
        value: Any,
        tiers: dict[str, Tier],
        datasets: dict[str, Dataset],
        classes: dict[str, expr.Node] | None = None,
    ) -> tuple[Policy, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(("policies",), "policies must be a list", "start each policy with `- name: ...`")
            return ()
        policies: list[Policy] = []
        names: set[str] = set()
        for i, body in enumerate(value):
            where: Path = ("policies", i)
            spec = self.mapping(body, where, POLICY_KEYS, "a policy")
            name = self.string(spec.get("name"), (*where, "name"), "policy name") or f"#{i + 1}"
            if name in names:
                self.problem((*where, "name"), f"duplicate policy name {name!r}")
            names.add(name)
            dataset = self.string(spec.get("dataset"), (*where, "dataset"), f"policy {name!r}: dataset")
            if dataset:
                self.name_ref(dataset, (*where, "dataset"), datasets, "dataset")
            schedule = spec.get("schedule")
            if schedule is not None:
                self.check_schedule(schedule, (*where, "schedule"))
            include = self.globs(spec.get("include"), (*where, "include"), "include")
            exclude = self.globs(spec.get("exclude"), (*where, "exclude"), "exclude")
            rules = self.rules(spec.get("rules"), (*where, "rules"), name, tiers, classes or {})
            limit = self.max_delete(spec.get("max_delete"), (*where, "max_delete"))
            allow_costly = spec.get("allow_costly", False)
            if not isinstance(allow_costly, bool):
                self.problem(
                    (*where, "allow_costly"),
                    f"allow_costly must be true or false, got {allow_costly!r}",
                    "allow_costly: true lets this policy's plans keep copies and transitions the cost"
                    " guard would skip (docs/cost.md)",
                )
                allow_costly = False
            policies.append(
                Policy(name, dataset or "", rules, schedule, include, exclude, limit, allow_costly)
            )
        return tuple(policies)

    def max_delete(self, value: Any, where: Path) -> DeleteLimit | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return DeleteLimit(count=value)
        text = value.strip() if isinstance(value, str) else ""
        if text.isdigit():
            return DeleteLimit(count=int(text))
        if text.endswith("%"):
            try:
                percent = float(text[:-1])
            except ValueError:
                percent = -1.0
            if 0 <= percent <= 100:
                return DeleteLimit(percent=percent)
        self.problem(
            where,
            f"bad max_delete {value!r}",
            "a count of objects (max_delete: 100) or a percentage of the policy's objects (max_delete: 5%)",
        )
        return None

    def check_schedule(self, schedule: Any, where: Path) -> None:
        if not isinstance(schedule, str):
            self.problem(where, "schedule must be a cron expression string", 'e.g. schedule: "0 * * * *"')
            return
        from tierctl.schedule import SCHEDULE_HINT, problem

        message = problem(schedule)
        if message:
            self.problem(where, message, SCHEDULE_HINT)

    def rules(
        self,
        value: Any,
        where: Path,
        policy: str,
        tiers: dict[str, Tier],
        classes: dict[str, expr.Node] | None = None,
    ) -> tuple[Rule, ...]:
        if not isinstance(value, list) or not value:
            self.problem(
                where,
                f"policy {policy!r}: rules must be a non-empty list",
                "e.g. rules: [{when: 'age < 7d', place: [hot]}]",
            )
            return ()
        classes = classes or {}
        rules: list[Rule] = []
        for i, body in enumerate(value):
            rule_where: Path = (*where, i)
            spec = self.mapping(body, rule_where, RULE_KEYS, "a rule")
            when = _when_text(spec.get("when", "true"))
            condition = self.condition(when, (*rule_where, "when"), classes, tiers)
            guards: list[expr.Node] = []
            class_name = spec.get("class")
            if class_name is not None:
                if not isinstance(class_name, str):
                    self.problem((*rule_where, "class"), "class must be the name of a class")
                    condition = None
                elif self.name_ref(class_name, (*rule_where, "class"), classes, "class"):
                    guards.append(expr.ClassRef(class_name, classes[class_name], f"class({class_name})"))
                else:
                    condition = None
            place, delete, copies = self.outcome(spec, rule_where, tiers)
            min_age = self.min_age(spec, rule_where, delete)
            if min_age is not None:
                text = f"age >= {spec['min_age']}"
                guards.append(expr.Compare("age", ">=", min_age, text))
            if condition is None or when is None or not (place or copies or delete):
                continue
            if delete and min_age is None and analysis.min_age_bound(condition) <= 0:
                self.problem(
                    (*rule_where, "delete"),
                    f"policy {policy!r} rule {i + 1}: delete without a guard",
                    "add `min_age: 30d` (an age every deleted object must also have), or a `when` that"
                    " requires a minimum age such as `age >= 3y`",
                )
                continue
            effective = expr.And((condition, *guards)) if guards else condition
            rules.append(
                Rule(i + 1, when, effective, place, delete, copies, min_age, class_name if guards else None)
            )
        return tuple(rules)

    def min_age(self, spec: dict[str, Any], where: Path, delete: bool) -> float | None:
        if "min_age" not in spec:
            return None
        value = spec["min_age"]
        try:
            seconds = parse_duration(value) if isinstance(value, str) else None
        except ValueError as exc:
            self.problem((*where, "min_age"), str(exc), "e.g. min_age: 30d")
            return None
        if seconds is None:
            self.problem((*where, "min_age"), "min_age must be a duration", "e.g. min_age: 30d")
            return None
        if not delete:
            self.problem((*where, "min_age"), "min_age guards delete rules only", "use `when: age >= ...`")
            return None
        return seconds

    def condition(
        self,
        when: str | None,
        where: Path,
        classes: dict[str, expr.Node] | None = None,
        tiers: dict[str, Tier] | None = None,
    ) -> expr.Node | None:
        if when is None:
            self.problem(where, "when must be a condition string", "e.g. when: 'age < 7d'")
            return None
        try:
            return expr.parse(when, classes=classes or {}, tiers=tiers)
        except ExpressionError as exc:
            base = self.doc.loc(where)
            # Point at the character when the scalar is on one line (plain or quoted).
            quoted = 1 if self._is_quoted(base) else 0
            loc = Location(base.path, base.line, base.column + quoted + exc.column - 1)
            self.problems.append(ConfigError(f"in `{when}`: {exc.message}", hint=exc.hint, location=loc))
            return None

    def _is_quoted(self, loc: Location) -> bool:
        if not 0 < loc.line <= len(self.doc.lines):
            return False
        line = self.doc.lines[loc.line - 1]
        return len(line) >= loc.column and line[loc.column - 1] in "'\""

    def outcome(
        self, spec: dict[str, Any], where: Path, tiers: dict[str, Tier]
    ) -> tuple[tuple[str, ...] | None, bool, Copies | None]:
        """(place, delete, copies); place and copies may be combined, delete stands alone."""
        delete = spec.get("delete", False)
        if not isinstance(delete, bool):
            self.problem((*where, "delete"), "delete must be true or false")
            delete = False
        place_value = spec.get("place")
        copies_value = spec.get("copies")
        if delete and (place_value is not None or copies_value is not None):
            self.problem(
                where,
                "a rule has either place or delete, not both",
                "`copies` goes with `place`; a delete rule removes the object everywhere",
            )
            return None, False, None
        if not delete and place_value is None and copies_value is None:
            self.problem(
                where,
                "a rule needs `place: [tiers]` or `delete: true` (or `copies: {among: [tiers], n: N}`)",
                "place is the exact set of tiers; copies picks n of a group",
            )
            return None, False, None
        if delete:
            return None, True, None
        place: tuple[str, ...] | None = None
        if place_value is not None:
            names = self.string_list(place_value, (*where, "place"), "place")
            ok = all([self.name_ref(t, (*where, "place"), tiers, "tier") for t in names])
            if not names:
                self.problem(
                    (*where, "place"),
                    "place needs at least one tier",
                    "to remove objects use `delete: true`",
                )
            place = tuple(dict.fromkeys(names)) if ok and names else None
            if place is None:
                return None, False, None
            urls: dict[str, str] = {}
            for tier in place:
                url = tiers[tier].url.rstrip("/")
                if url in urls:
                    self.problem(
                        (*where, "place"),
                        f"tiers {urls[url]!r} and {tier!r} share one URL:"
                        " an object there has one storage class",
                        "place the object on one of them; moving between them is an in-place transition",
                    )
                    return None, False, None
                urls[url] = tier
        copies = None
        if copies_value is not None:
            copies = self.copies(copies_value, (*where, "copies"), tiers)
            if copies is None:
                return None, False, None
        return place, False, copies

    def copies(self, value: Any, where: Path, tiers: dict[str, Tier]) -> Copies | None:
        if not isinstance(value, dict):
            self.problem(where, "copies must be a mapping", "e.g. copies: {among: [gcs, s3-eu, s3-us], n: 2}")
            return None
        spec = self.mapping(value, where, COPIES_KEYS, "copies")
        among = tuple(dict.fromkeys(self.string_list(spec.get("among"), (*where, "among"), "among")))
        if not among:
            self.problem(where, "copies needs `among: [tiers]`", "e.g. copies: {among: [gcs, s3], n: 1}")
            return None
        if not all([self.name_ref(t, (*where, "among"), tiers, "tier") for t in among]):
            return None
        n = spec.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(among):
            self.problem(
                (*where, "n") if "n" in spec else where,
                f"copies.n must be a whole number from 1 to {len(among)} (the size of among), got {n!r}",
                "n is how many tiers of `among` hold the object",
            )
            return None
        return Copies(among, n)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def _when_text(value: Any) -> str | None:
    """A `when` value as text: YAML may read `true`/`false` as booleans."""
    if isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else None


def _type_name(value: Any) -> str:
    names: dict[type, str] = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "a number",
        float: "a number",
        bool: "true/false",
        type(None): "nothing",
    }
    return names.get(type(value), type(value).__name__)
