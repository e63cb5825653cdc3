"""The policy file's ``classes:`` and ``policies:`` sections: selectors, rules and guards.

Each function validates plain data from :func:`~tierctl.policies.loader_yaml.read_document`
and reports through the loader's :class:`~tierctl.policies.loader_yaml.Checker`, located.
A delete rule without a guard is always refused; :func:`analyse` adds the lint checks of
`tierctl validate` (rules that can never match, policies that decide the same objects
differently). Tiers and datasets are validated first (:mod:`.loader`) and passed in.
"""

from __future__ import annotations

import re
from typing import Any

from tierctl.movers.registry import read_only_reason
from tierctl.policies import expr
from tierctl.policies.loader_yaml import Checker, Path
from tierctl.policies.model import Config, Copies, Dataset, DeleteLimit, Policy, Rule, Tier
from tierctl.policies.units import parse_duration

CLASS_KEYS = ("when", "include", "exclude", "description")
POLICY_KEYS = (
    *("name", "dataset", "schedule", "include", "exclude", "rules", "description"),
    *("max_delete", "allow_costly"),
)
RULE_KEYS = ("when", "class", "place", "copies", "delete", "min_age", "description")
COPIES_KEYS = ("among", "n")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")


def parse_classes(v: Checker, value: Any, tiers: dict[str, Tier]) -> dict[str, expr.Node]:
    """Named selectors (a `when` and/or include/exclude globs), used as ``class(NAME)`` in
    rules and in later classes, or as a rule's ``class: NAME``."""
    if value is None:
        return {}
    keys = tuple(value) if isinstance(value, dict) else ()
    section = v.mapping(value, ("classes",), keys, "classes")
    classes: dict[str, expr.Node] = {}
    for name, body in section.items():
        where: Path = ("classes", name)
        if not _NAME.fullmatch(name):
            v.problem(where, f"bad class name {name!r}", "use letters, digits, _ and -", key=True)
            continue
        if isinstance(body, str):
            body = {"when": body}
        spec = v.mapping(body, where, CLASS_KEYS, f"class {name!r}")
        parts: list[expr.Node] = []
        include = v.globs(spec.get("include"), (*where, "include"), "include")
        exclude = v.globs(spec.get("exclude"), (*where, "exclude"), "exclude")
        if include or exclude:
            parts.append(expr.Select(include, exclude))
        if "when" in spec:
            node = v.condition(_when_text(spec["when"]), (*where, "when"), classes, tiers)
            if node is None:
                continue
            parts.append(node)
        if not parts:
            v.problem(where, f"class {name!r} selects nothing", "give it `when:` or include/exclude")
            continue
        classes[name] = parts[0] if len(parts) == 1 else expr.And(tuple(parts))
    return classes


def parse_policies(
    v: Checker,
    value: Any,
    tiers: dict[str, Tier],
    datasets: dict[str, Dataset],
    classes: dict[str, expr.Node] | None = None,
) -> tuple[Policy, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        v.problem(("policies",), "policies must be a list", "start each policy with `- name: ...`")
        return ()
    policies: list[Policy] = []
    names: set[str] = set()
    for i, body in enumerate(value):
        where: Path = ("policies", i)
        spec = v.mapping(body, where, POLICY_KEYS, "a policy")
        name = v.string(spec.get("name"), (*where, "name"), "policy name") or f"#{i + 1}"
        if name in names:
            v.problem((*where, "name"), f"duplicate policy name {name!r}")
        names.add(name)
        dataset = v.string(spec.get("dataset"), (*where, "dataset"), f"policy {name!r}: dataset")
        if dataset:
            v.name_ref(dataset, (*where, "dataset"), datasets, "dataset")
        schedule = spec.get("schedule")
        if schedule is not None:
            _check_schedule(v, schedule, (*where, "schedule"))
        include = v.globs(spec.get("include"), (*where, "include"), "include")
        exclude = v.globs(spec.get("exclude"), (*where, "exclude"), "exclude")
        rules = _rules(v, spec.get("rules"), (*where, "rules"), name, tiers, classes or {})
        limit = _max_delete(v, spec.get("max_delete"), (*where, "max_delete"))
        allow_costly = spec.get("allow_costly", False)
        if not isinstance(allow_costly, bool):
            v.problem(
                (*where, "allow_costly"),
                f"allow_costly must be true or false, got {allow_costly!r}",
                "allow_costly: true lets this policy's plans keep copies and transitions the cost"
                " guard would skip (docs/cost.md)",
            )
            allow_costly = False
        policies.append(Policy(name, dataset or "", rules, schedule, include, exclude, limit, allow_costly))
    return tuple(policies)


def _max_delete(v: Checker, value: Any, where: Path) -> DeleteLimit | None:
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
    v.problem(
        where,
        f"bad max_delete {value!r}",
        "a count of objects (max_delete: 100) or a percentage of the policy's objects (max_delete: 5%)",
    )
    return None


def _check_schedule(v: Checker, schedule: Any, where: Path) -> None:
    if not isinstance(schedule, str):
        v.problem(where, "schedule must be a cron expression string", 'e.g. schedule: "0 * * * *"')
        return
    from tierctl.schedule import SCHEDULE_HINT, problem

    message = problem(schedule)
    if message:
        v.problem(where, message, SCHEDULE_HINT)


def _rules(
    v: Checker,
    value: Any,
    where: Path,
    policy: str,
    tiers: dict[str, Tier],
    classes: dict[str, expr.Node] | None = None,
) -> tuple[Rule, ...]:
    if not isinstance(value, list) or not value:
        v.problem(
            where,
            f"policy {policy!r}: rules must be a non-empty list",
            "e.g. rules: [{when: 'age < 7d', place: [hot]}]",
        )
        return ()
    classes = classes or {}
    rules: list[Rule] = []
    for i, body in enumerate(value):
        rule_where: Path = (*where, i)
        spec = v.mapping(body, rule_where, RULE_KEYS, "a rule")
        when = _when_text(spec.get("when", "true"))
        condition = v.condition(when, (*rule_where, "when"), classes, tiers)
        guards: list[expr.Node] = []
        class_name = spec.get("class")
        if class_name is not None:
            if not isinstance(class_name, str):
                v.problem((*rule_where, "class"), "class must be the name of a class")
                condition = None
            elif v.name_ref(class_name, (*rule_where, "class"), classes, "class"):
                guards.append(expr.ClassRef(class_name, classes[class_name], f"class({class_name})"))
            else:
                condition = None
        place, delete, copies = _outcome(v, spec, rule_where, tiers)
        min_age = _min_age(v, spec, rule_where, delete)
        if min_age is not None:
            text = f"age >= {spec['min_age']}"
            guards.append(expr.Compare("age", ">=", min_age, text))
        if condition is None or when is None or not (place or copies or delete):
            continue
        if delete and min_age is None and _analysis().min_age_bound(condition) <= 0:
            v.problem(
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


def _min_age(v: Checker, spec: dict[str, Any], where: Path, delete: bool) -> float | None:
    if "min_age" not in spec:
        return None
    value = spec["min_age"]
    try:
        seconds = parse_duration(value) if isinstance(value, str) else None
    except ValueError as exc:
        v.problem((*where, "min_age"), str(exc), "e.g. min_age: 30d")
        return None
    if seconds is None:
        v.problem((*where, "min_age"), "min_age must be a duration", "e.g. min_age: 30d")
        return None
    if not delete:
        v.problem((*where, "min_age"), "min_age guards delete rules only", "use `when: age >= ...`")
        return None
    return seconds


def _outcome(
    v: Checker, spec: dict[str, Any], where: Path, tiers: dict[str, Tier]
) -> tuple[tuple[str, ...] | None, bool, Copies | None]:
    """(place, delete, copies); place and copies may be combined, delete stands alone."""
    delete = spec.get("delete", False)
    if not isinstance(delete, bool):
        v.problem((*where, "delete"), "delete must be true or false")
        delete = False
    place_value = spec.get("place")
    copies_value = spec.get("copies")
    if delete and (place_value is not None or copies_value is not None):
        v.problem(
            where,
            "a rule has either place or delete, not both",
            "`copies` goes with `place`; a delete rule removes the object everywhere",
        )
        return None, False, None
    if not delete and place_value is None and copies_value is None:
        v.problem(
            where,
            "a rule needs `place: [tiers]` or `delete: true` (or `copies: {among: [tiers], n: N}`)",
            "place is the exact set of tiers; copies picks n of a group",
        )
        return None, False, None
    if delete:
        return None, True, None
    place: tuple[str, ...] | None = None
    if place_value is not None:
        names = v.string_list(place_value, (*where, "place"), "place")
        ok = all([v.name_ref(t, (*where, "place"), tiers, "tier") for t in names])
        if not names:
            v.problem(
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
                v.problem(
                    (*where, "place"),
                    f"tiers {urls[url]!r} and {tier!r} share one URL: an object there has one storage class",
                    "place the object on one of them; moving between them is an in-place transition",
                )
                return None, False, None
            urls[url] = tier
    copies = None
    if copies_value is not None:
        copies = _copies(v, copies_value, (*where, "copies"), tiers)
        if copies is None:
            return None, False, None
    return place, False, copies


def _copies(v: Checker, value: Any, where: Path, tiers: dict[str, Tier]) -> Copies | None:
    if not isinstance(value, dict):
        v.problem(where, "copies must be a mapping", "e.g. copies: {among: [gcs, s3-eu, s3-us], n: 2}")
        return None
    spec = v.mapping(value, where, COPIES_KEYS, "copies")
    among = tuple(dict.fromkeys(v.string_list(spec.get("among"), (*where, "among"), "among")))
    if not among:
        v.problem(where, "copies needs `among: [tiers]`", "e.g. copies: {among: [gcs, s3], n: 1}")
        return None
    if not all([v.name_ref(t, (*where, "among"), tiers, "tier") for t in among]):
        return None
    n = spec.get("n", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(among):
        v.problem(
            (*where, "n") if "n" in spec else where,
            f"copies.n must be a whole number from 1 to {len(among)} (the size of among), got {n!r}",
            "n is how many tiers of `among` hold the object",
        )
        return None
    return Copies(among, n)


def _when_text(value: Any) -> str | None:
    """A `when` value as text: YAML may read `true`/`false` as booleans."""
    if isinstance(value, str):
        return value
    return str(value).lower() if isinstance(value, bool) else None


def analyse(v: Checker, config: Config) -> None:
    """Shadowed and never-matching rules; policies deciding the same objects differently."""
    analysis = _analysis()
    for i, policy in enumerate(config.policies):
        for problem in analysis.rule_problems(policy):
            where: Path = ("policies", i, "rules", problem.rule.index - 1)
            if (*where, "when") in v.doc.values:
                where = (*where, "when")
            v.problem(where, problem.message, problem.hint)
    position = {p.name: i for i, p in enumerate(config.policies)}
    for conflict in analysis.policy_conflicts(config):
        v.problem(
            ("policies", position[conflict.second.name], "name"),
            f"policies {conflict.first.name!r} and {conflict.second.name!r} select the same objects"
            f" of dataset {conflict.first.dataset!r} and decide differently, e.g. {conflict.example}:"
            f" {conflict.first.name!r} {conflict.first_outcome},"
            f" {conflict.second.name!r} {conflict.second_outcome}",
            "only the first policy that matches decides: merge them into one policy with ordered"
            " rules, or give them disjoint include/exclude globs",
        )


def check_read_only_tiers(
    v: Checker, tiers: dict[str, Tier], datasets: dict[str, Dataset], policies: tuple[Policy, ...]
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
                    v.problem(
                        (*at, key),
                        f"policy {policy.name!r} rule {rule.index} would copy objects onto tier"
                        f" {name!r}, which tierctl cannot write to: {reason}",
                        "it can be a dataset's home (scanned, read, moved from); to write to"
                        " the cluster, declare the tier as webhdfs://NAMENODE:9870/PATH",
                    )


def _analysis() -> Any:
    """The rule analysis, imported when a file needs it (`validate`, a delete rule): loading
    a policy file for `where` or `--help` does not pay for it (~25 ms)."""
    from tierctl.policies import analysis

    return analysis
