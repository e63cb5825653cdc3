"""The SQL pre-filter of `tierctl plan` (policies/sqlfilter.py) against the pure planner.

The differential test writes random placements into a real SQLite index and plans random
policies twice: every object through the Python planner (``Index.objects``), and only the
objects the SQL pre-filter leaves (``Prefilter.unsettled``). The plans must be equal action
for action (ids, reasons, order), with the same object count and the same ``max_delete``
verdicts. The other tests pin that objects are really settled in SQL (a pre-filter that
let everything through would pass the differential test), and the cost figures.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tierctl import api
from tierctl.errors import DeleteLimitExceeded
from tierctl.index import Index
from tierctl.model import ObjectSnapshot
from tierctl.plan import Plan
from tierctl.planner import make_plan
from tierctl.policies import expr
from tierctl.policies.evaluate import current_version, facts_for, relative_key
from tierctl.policies.expr import Facts, Select, UnknownFact
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Config
from tierctl.policies.sqlfilter import Prefilter, _Compiler, tier_bits
from tierctl.policies.sqlglob import glob_udf

from .conftest import DAY, NOW

# t3 and g3 share one store (g3 in GLACIER); c is the read cache; zz is in the index only.
TIERS = ("t0", "t1", "t2", "t3", "g3")
INDEX_TIERS = (*TIERS, "c", "zz")
LAYOUTS = ({"d": "d/", "e": "e/", "f": "f/"}, {"d": ""})  # f has no policy
AGES = (0, 1, 7, 30, 365)  # days
SIZES = (0, 1, 100, 1024, 1 << 20)
KEYS = (
    "a.log",
    "b.tmp",
    "x1.log",
    "2025/01/a.log",
    "2025/b.parquet",
    "a/b/c.parquet",
    "tmp/x.log",
    "a/tmp/y.tmp",
    "b/[x].log",
    "é/ü.log",
    "c.log/d",
    "1.log",
    "z",
)
GLOBS = (
    "**/*.log",
    "*.log",
    "**/*",
    "2025/**",
    "**",
    "a/*",
    "**/tmp/**",
    "*/b/*.parquet",
    "[ab]*",
    "[!a]*",
    "x?.log",
    "**/[0-9]*.log",
    "a**",
    "**/a*",
    "*",
    "a/**/c.parquet",
    "[a-c]/*",
    "**/*.tm?",
    "**/b.tmp",
    "b/[!x]*.log",
    "*/",
    "a.log",
    "??/*",
)
COMPARES = {
    "age": [f"{d}d" for d in AGES] + ["12h"],
    "seen": [f"{d}d" for d in AGES],
    "last_access": [f"{d}d" for d in AGES],
    "size": ["0", "1", "100", "1KiB", "1MiB"],
    "copies": ["0", "1", "2", "3"],
}
OPS = ("<", "<=", ">", ">=", "==", "!=")


def _atoms() -> st.SearchStrategy[str]:
    compare = st.sampled_from(sorted(COMPARES)).flatmap(
        lambda f: st.tuples(st.just(f), st.sampled_from(OPS), st.sampled_from(COMPARES[f]))
    )
    return st.one_of(
        compare.map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        st.tuples(
            st.sampled_from(("path", "name")), st.sampled_from(("~", "!~")), st.sampled_from(GLOBS)
        ).map(lambda t: f'{t[0]} {t[1]} "{t[2]}"'),
        st.tuples(
            st.sampled_from(("path", "name")), st.sampled_from(("==", "!=")), st.sampled_from(KEYS)
        ).map(lambda t: f'{t[0]} {t[1]} "{t[2].rpartition("/")[2] if t[0] == "name" else t[2]}"'),
        st.sampled_from(
            (
                'storage_class == "GLACIER"',
                'storage_class != ""',
                'storage_class ~ "GL*"',
                'storage_class == "STANDARD"',
                'tag.team == "ml"',
                'meta.owner != "x"',
                "true",
                "false",
                "class(logs)",
                "class(young)",
            )
        ),
        st.sampled_from(TIERS).map(lambda t: f"on({t})"),
    )


conditions = st.recursive(
    _atoms(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(("and", "or")), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda c: f"not {c}"),
    ),
    max_leaves=4,
)


@st.composite
def rules(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, ...]]]:
    """One rule as YAML lines (inside a policy's ``rules:``), and tier sets an object may
    be on for the rule to want no change (so the generated objects are often settled)."""
    when = draw(conditions)
    lines = [f"      - when: '{when}'"]
    kind = draw(st.sampled_from(("place", "place", "copies", "place+copies", "delete")))
    # Tiers of one store cannot both be in `place` (the loader refuses it).
    stores = draw(
        st.lists(st.sampled_from(("t0", "t1", "t2", "t3", "g3")), min_size=1, max_size=3, unique=True)
    )
    place = [t for t in stores if not (t == "g3" and "t3" in stores)]
    if kind == "delete":
        lines += ["        delete: true", f"        min_age: {draw(st.sampled_from(('0s', '7d')))}"]
        return lines, []
    if kind == "copies":
        place = []
    if place:
        lines.append(f"        place: [{', '.join(place)}]")
    if kind == "place":
        return lines, [tuple(place)]
    among = draw(st.lists(st.sampled_from(TIERS), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(1, len(among)))
    lines.append(f"        copies: {{among: [{', '.join(among)}], n: {n}}}")
    extra = [t for t in among if t not in place]
    wanted = max(0, n - sum(1 for t in among if t in place))
    return lines, [(*place, *combo) for combo in itertools.combinations(extra, min(wanted, len(extra)))]


@st.composite
def policy_texts(draw: st.DrawFn, datasets: dict[str, str]) -> tuple[str, list[tuple[str, ...]]]:
    """A policy file, and the tier sets its rules settle objects on."""
    cache = draw(st.booleans())
    settle_sets: list[tuple[str, ...]] = []
    lines = [
        "version: 1",
        "tiers:",
        "  t0: {url: 'file:///tmp/sqlfilter/t0'}",
        "  t1: {url: 'file:///tmp/sqlfilter/t1'}",
        "  t2: {url: 'file:///tmp/sqlfilter/t2'}",
        "  t3: {url: 's3://bucket/data'}",
        "  g3: {url: 's3://bucket/data', storage_class: GLACIER}",
    ]
    if cache:
        lines.append("  c: {url: 'file:///tmp/sqlfilter/c'}")
    lines += [
        "datasets:",
        *(f"  {name}: {{prefix: '{prefix}'}}" for name, prefix in datasets.items()),
        "classes:",
        "  logs: {include: ['**/*.log'], exclude: ['tmp/**']}",
        "  young: {when: 'age < 7d'}",
    ]
    if cache:
        lines.append("cache: {tier: c, max_size: 1GiB, from: [t3, g3]}")
    lines.append("policies:")
    for i in range(draw(st.integers(1, 3))):
        dataset = draw(st.sampled_from(("d", "d", "e"))) if "e" in datasets else "d"
        lines += [f"  - name: p{i}", f"    dataset: {dataset}"]
        include = draw(st.lists(st.sampled_from(GLOBS), max_size=2))
        exclude = draw(st.lists(st.sampled_from(GLOBS), max_size=1))
        if include:
            lines.append(f"    include: {json.dumps(include)}")
        if exclude:
            lines.append(f"    exclude: {json.dumps(exclude)}")
        if draw(st.booleans()):
            lines.append(f"    max_delete: '{draw(st.sampled_from(('0', '1', '50%', '0%')))}'")
        lines.append("    rules:")
        for _ in range(draw(st.integers(1, 4))):
            rule_lines, sets = draw(rules())
            lines += rule_lines
            settle_sets += sets
    return "\n".join(lines) + "\n", settle_sets


CHECKSUMS = (None, "", "crc32c:aa", "crc32c:bb", "md5:aa", "sha256:cc", "crc32c", "crc32c:aa:x")


@st.composite
def placement_rows(
    draw: st.DrawFn, datasets: dict[str, str], settle_sets: list[tuple[str, ...]]
) -> list[tuple[object, ...]]:
    """Rows of the placements table: objects whose copies agree or differ in every way the
    planner looks at (size, mtime in and out of the 1 ms window, checksums of one or two
    algorithms, classes, restores, reads, tags, gone rows, undeclared and cache tiers)."""
    rows = []
    for n in range(draw(st.integers(1, 14))):
        dataset = draw(st.sampled_from(sorted(datasets)))
        key = datasets[dataset] + draw(st.sampled_from(KEYS))
        if any(r[0] == dataset and r[1] == key for r in rows):
            key += f"-{n}"
        size = draw(st.sampled_from(SIZES))
        mtime = NOW - draw(st.sampled_from(AGES)) * DAY + draw(st.sampled_from((0.0, 0.25, -3 * DAY)))
        checksum = draw(st.sampled_from(CHECKSUMS))
        tiers = draw(st.lists(st.sampled_from(INDEX_TIERS), min_size=1, max_size=4, unique=True))
        if settle_sets and draw(st.integers(0, 3)):
            tiers = list(draw(st.sampled_from(settle_sets)))
            if not draw(st.integers(0, 4)):  # and one more placement: undeclared, cache, any
                tiers = list(dict.fromkeys([*tiers, draw(st.sampled_from(INDEX_TIERS))]))
        # clean: every copy holds one content (the usual case); checksums: so do their sizes
        # and times, their checksums may not; messy: anything.
        mode = draw(st.sampled_from(("clean", "clean", "checksums", "messy")))
        clean = mode != "messy"
        variants = {
            "clean": ("same", "same", "jitter"),
            "checksums": ("same", "jitter", "checksum", "checksum"),
            "messy": ("same", "jitter", "older", "bigger", "checksum"),
        }[mode]
        for tier in tiers:
            same = draw(st.sampled_from(variants))
            p_size = size + (1 if same == "bigger" else 0)
            p_mtime = mtime + {"jitter": 0.0004, "older": -0.002}.get(same, 0.0)
            p_checksum = draw(st.sampled_from(CHECKSUMS)) if same == "checksum" else checksum
            storage_class = "GLACIER" if tier == "g3" else draw(st.sampled_from((None, None, "STANDARD", "")))
            restore = (
                draw(st.sampled_from((None, None, "archived", "restoring", "restored")))
                if tier == "g3"
                else None
            )
            tags = draw(st.sampled_from((None, '{"team":"ml"}', "{}")))
            rows.append(
                (
                    dataset,
                    key,
                    tier,
                    p_size,
                    p_mtime,
                    p_checksum,
                    storage_class,
                    None,
                    "present" if clean else draw(st.sampled_from(("present", "gone"))),
                    NOW - draw(st.sampled_from(AGES)) * DAY,
                    draw(st.sampled_from((None, NOW))),
                    None,
                    draw(st.sampled_from((None, None, NOW - DAY, NOW - 40 * DAY))),
                    restore,
                    tags,
                    tags,
                )
            )
    return rows


def _index(folder: Path, rows: list[tuple[object, ...]]) -> Index:
    index = Index.open(str(folder / "index.db"))
    with index.transaction() as tx:
        tx.executemany(
            "INSERT INTO placements (dataset, key, tier, size, mtime, checksum, storage_class, etag, state,"
            " first_seen, verified_at, changed_at, atime, restore_state, tags, meta)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return index


@dataclass
class Outcome:
    plan: Plan | None
    refused: str | None  # the DeleteLimitExceeded message without force
    passed: list[str]  # keys the planner saw


def _plan(config: Config, index: Index, now: float, *, prefilter: bool, force: bool) -> Outcome:
    seen: list[str] = []

    def record(objects: Iterator[ObjectSnapshot]) -> Iterator[ObjectSnapshot]:
        for obj in objects:
            seen.append(obj.key)
            yield obj

    names = list(config.datasets)
    if prefilter:
        filt = Prefilter(index, config, now)
        objects = record(obj for name in names for obj in filt.unsettled(name))
        settled = filt.settled
    else:
        objects = record(obj for name in names for obj in index.objects(name))
        settled = None
    try:
        return Outcome(make_plan(config, objects, now, force=force, settled=settled), None, seen)
    except DeleteLimitExceeded as exc:
        return Outcome(None, str(exc), seen)


def _same_plans(config: Config, index: Index, now: float) -> tuple[Outcome, Outcome] | None:
    try:
        full = _plan(config, index, now, prefilter=False, force=True)
    except re.error as exc:
        message = str(exc)  # (and let go of the traceback, which holds a live cursor)
    else:
        message = ""
    if message:
        with pytest.raises(re.error, match=re.escape(message)):
            _plan(config, index, now, prefilter=True, force=True)
        return None
    fast = _plan(config, index, now, prefilter=True, force=True)
    assert full.plan is not None and fast.plan is not None
    assert fast.plan.actions == full.plan.actions
    assert fast.plan.objects_considered == full.plan.objects_considered
    assert _plan(config, index, now, prefilter=True, force=False).refused == (
        _plan(config, index, now, prefilter=False, force=False).refused
    )
    return full, fast


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=st.data(), datasets=st.sampled_from(LAYOUTS), shift=st.sampled_from((0.0, 3 * DAY, 400 * DAY)))
def test_prefiltered_plan_equals_the_python_plan(
    data: st.DataObject, datasets: dict[str, str], shift: float
) -> None:
    text, settle_sets = data.draw(policy_texts(datasets))
    config = parse_config(text, "/tmp/sqlfilter/policies.yaml")
    rows = data.draw(placement_rows(datasets, settle_sets))
    with tempfile.TemporaryDirectory() as tmp, _index(Path(tmp), rows) as index:
        _same_plans(config, index, NOW + shift)  # shift: plan --as-of later days


def _python_facts(config: Config, obj: ObjectSnapshot, now: float) -> Facts | None:
    """The facts the planner's rules see for ``obj`` (as planner.plan_object and
    evaluate.decide build them); None when it has no placement the policies look at."""
    if config.cache is not None:
        obj, _ = config.cache.split(obj)
    present = tuple(p for p in obj.placements if p.state == "present" and p.tier in config.tiers)
    if not present:
        return None
    version = current_version(present, {name: i for i, name in enumerate(config.tiers)})
    return facts_for(version, now, obj, relative_key(config, obj), config.tiers)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    data=st.data(),
    datasets=st.sampled_from(LAYOUTS),
    when=conditions,
    shift=st.sampled_from((0.0, 3 * DAY, 400 * DAY)),
)
def test_compiled_conditions_agree_with_python(
    data: st.DataObject, datasets: dict[str, str], when: str, shift: float
) -> None:
    """Per object: when the SQL says its facts are exact, every placement holds the current
    version on a tier the policies see; and a condition (and a policy's selection) the SQL
    calls surely true / surely false evaluates so in Python, without raising."""
    text, settle_sets = data.draw(policy_texts(datasets))
    config = parse_config(text, "/tmp/sqlfilter/policies.yaml")
    node = expr.parse(when, classes=config.classes, tiers=config.tiers)
    rows = data.draw(placement_rows(datasets, settle_sets))
    with tempfile.TemporaryDirectory() as tmp, _index(Path(tmp), rows) as index:
        _check_conditions(config, index, [node], NOW + shift)


def _check_conditions(config: Config, index: Index, nodes: list[expr.Node], now: float) -> int:
    """Compile ``nodes`` and every policy's selection; check them against Python on every
    object whose facts the SQL calls exact. Returns how many objects were exact."""
    index.conn.create_function("tierctl_glob", 2, glob_udf, deterministic=True)
    checked = 0
    for dataset in config.datasets:
        compiler = _Compiler(config, dataset, now, tier_bits(config))
        tests = [(node, compiler.condition(node)) for node in nodes]
        tests += [
            (Select(p.include, p.exclude), compiler.selection(p.include, p.exclude))
            for p in config.policies_for(dataset)
        ]
        columns = ", ".join(f"({c.true}), ({c.false})" for _, c in tests)
        sql = f"SELECT o.key, {compiler.exact()}, {columns} FROM ({compiler.objects()}) AS o"
        found = {row[0]: row[1:] for row in index.conn.execute(sql, compiler.params)}
        for obj in index.objects(dataset):
            exact, *verdicts = found.pop(obj.key)
            facts = _python_facts(config, obj, now)
            if not exact:
                continue
            checked += 1
            assert facts is not None and facts.copies == len(obj.placements), obj
            assert all(p.tier in config.tiers for p in obj.placements), obj
            assert config.cache is None or config.cache.tier not in obj.tiers, obj
            for (tested, compiled), surely_true, surely_false in zip(
                tests, verdicts[::2], verdicts[1::2], strict=True
            ):
                try:
                    value: bool | None = tested.evaluate(facts)
                except (UnknownFact, re.error):
                    value = None
                assert not (surely_true and value is not True), (obj, facts, tested)
                assert not (surely_false and value is not False), (obj, facts, tested)
                assert not compiled.exact or bool(surely_true) != bool(surely_false), tested
        assert not found
    return checked


def test_compiled_conditions_at_the_edges() -> None:
    """Copies whose mtimes differ inside the 1 ms window (the newest decides the age and
    the class), thresholds hit exactly, first sightings and reads that differ by copy."""
    config = parse_config(
        "version: 1\ntiers:\n  t0: {url: /tmp/sqlfilter/t0}\n  t1: {url: /tmp/sqlfilter/t1}\n"
        "  t3: {url: 's3://b/d'}\n  g3: {url: 's3://b/d', storage_class: GLACIER}\n"
        "datasets:\n  d: {prefix: d/}\npolicies: []\n",
        "/tmp/sqlfilter/policies.yaml",
    )
    week, month = NOW - 7 * DAY, NOW - 30 * DAY
    row = ("d", "d/x/7d.log", "t0", 10, week, "crc32c:1", None, None, "present", NOW - DAY, None, None, None)
    rows = [
        (*row, None, None, None),
        ("d", "d/x/7d.log", "t1", 10, week + 0.0004, None, "", None, "present", NOW - 3 * DAY, None, None,
         NOW - 6 * DAY, None, None, None),
        ("d", "d/a/b/c.log", "t3", 5, month + 0.0004, "md5:9", "STANDARD", None, "present", NOW, None, None,
         None, None, None, None),
        ("d", "d/a/b/c.log", "g3", 5, month, "crc32c:9", "GLACIER", None, "present", NOW, None, None,
         month - 5 * DAY, "archived", None, None),
        ("d", "d/a.log", "g3", 0, NOW - DAY, None, "GLACIER", None, "present", NOW, None, None, None, None,
         None, None),
    ]  # fmt: skip
    whens = [
        *(
            f"{f} {op} {v}"
            for f in ("age", "seen", "last_access")
            for op in OPS
            for v in ("1d", "3d", "6d", "7d", "30d")
        ),
        *(f'storage_class {op} "{c}"' for op in ("==", "!=") for c in ("STANDARD", "GLACIER", "")),
        *(f'{f} {op} "{g}"' for f in ("path", "name") for op in ("~", "!~") for g in GLOBS),
        *(f"copies {op} {n}" for op in OPS for n in (1, 2)),
        *(f"on({t})" for t in ("t0", "t1", "t3", "g3")),
        "size == 10 and not size > 5 or size < 1",
    ]
    nodes = [expr.parse(w, tiers=config.tiers) for w in whens]
    with tempfile.TemporaryDirectory() as tmp, _index(Path(tmp), rows) as index:
        assert _check_conditions(config, index, nodes, NOW) == 3


# -- objects really are settled in SQL ------------------------------------------------------
def _config(rules: str, *, extra: str = "", policy: str = "") -> Config:
    text = (
        "version: 1\n"
        "tiers:\n"
        "  hot: {url: 'file:///tmp/sqlfilter/hot'}\n"
        "  warm: {url: 'file:///tmp/sqlfilter/warm'}\n"
        "  cold: {url: 'file:///tmp/sqlfilter/cold'}\n"
        "datasets:\n"
        "  logs: {prefix: 'logs/'}\n"
        f"{extra}"
        "policies:\n"
        "  - name: lifecycle\n"
        "    dataset: logs\n"
        f"{policy}"
        "    rules:\n"
        f"{rules}"
    )
    return parse_config(text, "/tmp/sqlfilter/policies.yaml")


def _layout(
    count: int, tiers: tuple[str, ...], *, age_days: float = 10, size: int = 4096
) -> list[tuple[object, ...]]:
    """``count`` objects logs/NNNN/fNNNN.log, each on ``tiers`` with the same content."""
    return [
        (
            "logs",
            f"logs/{i // 10:04d}/f{i:04d}.log",
            tier,
            size,
            NOW - age_days * DAY,
            f"crc32c:{i:08x}",
            None,
            None,
            "present",
            NOW - 2 * DAY,
            NOW,
            None,
            None,
            None,
            None,
            None,
        )
        for i in range(count)
        for tier in tiers
    ]


def _rule_lines(*rules: tuple[str, str]) -> str:
    """YAML rule lines from (when, outcome) pairs; the outcome is one line or ``delete``."""
    lines = []
    for when, outcome in rules:
        lines.append(f"      - when: '{when}'\n")
        if outcome == "delete":
            lines.append("        delete: true\n        min_age: 1d\n")
        else:
            lines.append(f"        {outcome}\n")
    return "".join(lines)


HOT = ("true", "place: [hot]")
CASES = [
    # (rules, the tiers every object is on, how many objects the planner must still see)
    ([("true", "place: [hot, warm]")], ("hot", "warm"), 0),
    ([("true", "place: [hot, warm]")], ("hot",), 200),
    ([("age < 7d", "place: [hot]"), ("age >= 7d", "place: [warm]")], ("warm",), 0),
    ([("age < 7d", "place: [hot]"), ("age >= 7d", "place: [warm]")], ("hot",), 200),
    ([("size > 1MiB", "place: [cold]"), HOT], ("hot",), 0),
    ([("seen > 1d and last_access > 5d", "place: [cold]")], ("cold",), 0),
    ([('name ~ "f00[0-4]?.log"', "place: [cold]"), HOT], ("hot",), 50),
    ([('path ~ "001?/**"', "place: [cold]"), HOT], ("hot",), 100),
    (
        [('path ~ "0000/*" or not on(hot)', "place: [cold]"), ("copies >= 2", "place: [hot, warm]")],
        ("hot", "warm"),
        10,
    ),
    ([("true", "copies: {among: [hot, warm, cold], n: 2}")], ("warm", "cold"), 0),
    ([("true", "place: [hot]\n        copies: {among: [warm, cold], n: 1}")], ("hot", "cold"), 0),
    ([("true", "copies: {among: [hot, warm, cold], n: 2}")], ("cold",), 200),
    ([('storage_class == ""', "place: [hot]")], ("hot",), 0),
    # A tag test that decides first: every object goes to Python.
    ([('tag.team == "ml"', "place: [cold]"), HOT], ("hot",), 200),
    # A tag test Python never reaches for these objects (the `and` stops at the age).
    ([('age > 30d and tag.team == "ml"', "place: [cold]"), HOT], ("hot",), 0),
    ([("age >= 7d", "delete")], ("hot",), 200),
]


@pytest.mark.parametrize(("rules", "tiers", "unsettled"), CASES)
def test_settled_objects_never_reach_the_planner(
    tmp_path: Path, rules: list[tuple[str, str]], tiers: tuple[str, ...], unsettled: int
) -> None:
    config = _config(_rule_lines(*rules))
    with _index(tmp_path, _layout(200, tiers)) as index:
        outcomes = _same_plans(config, index, NOW)
    assert outcomes is not None and len(outcomes[1].passed) == unsettled


def test_the_policy_selection_and_excluded_paths_are_settled_in_sql(tmp_path: Path) -> None:
    config = _config(
        "      - when: 'true'\n        place: [hot]\n",
        policy="    include: ['**/*.log']\n    exclude: ['0001/**', '**/f000?.log']\n",
    )
    rows = _layout(200, ("warm",))  # every selected object must move to hot
    with _index(tmp_path, rows) as index:
        outcomes = _same_plans(config, index, NOW)
    assert outcomes is not None
    full, fast = outcomes
    assert len(fast.passed) == 180 and len(full.passed) == 200  # 20 excluded: left alone, in SQL


def test_max_delete_counts_settled_objects(tmp_path: Path) -> None:
    """A percentage limit is of every object the policy decides, settled ones included."""
    config = _config(
        "      - when: 'age >= 30d'\n        delete: true\n      - when: 'true'\n        place: [hot]\n",
        policy="    max_delete: 10%\n",
    )
    rows = _layout(95, ("hot",)) + [
        (
            "logs",
            f"logs/old/{i}.log",
            "hot",
            1,
            NOW - 90 * DAY,
            None,
            None,
            None,
            "present",
            NOW,
            None,
            None,
            None,
            None,
            None,
            None,
        )
        for i in range(10)
    ]
    with _index(tmp_path, rows) as index:
        allowed = _plan(config, index, NOW, prefilter=True, force=False)
        assert allowed.plan is not None and len(allowed.passed) == 10  # 10 of 105 objects: within 10%
        index.conn.execute("DELETE FROM placements WHERE key < 'logs/0005'")  # 50 settled objects fewer
        refused = _plan(config, index, NOW, prefilter=True, force=False)
    assert (
        refused.refused == "policy 'lifecycle' would delete 10 of 55 objects, more than its max_delete of 10%"
    )


def test_api_plan_prices_settled_placements_like_the_python_path(tmp_path: Path) -> None:
    """The cost report's storage before the plan counts every placement, settled or not,
    with each tier's minimum billable size and per-object fee."""
    policy = tmp_path / "policies.yaml"
    policy.write_text(
        "version: 1\n"
        "tiers:\n"
        f"  hot: {{url: '{tmp_path / 'hot'}', cost: {{storage_gb_month: 0.10, min_size: 64KiB}}}}\n"
        f"  warm: {{url: '{tmp_path / 'warm'}', cost: {{storage_gb_month: 0.02, per_object_month: 0.001}}}}\n"
        "datasets:\n"
        "  logs: {prefix: 'logs/'}\n"
        "policies:\n"
        "  - name: lifecycle\n"
        "    dataset: logs\n"
        "    rules:\n"
        "      - when: 'true'\n"
        "        place: [hot, warm]\n"
    )
    config = api.load(str(policy))
    small = _layout(30, ("hot", "warm"), size=1000)
    large = [("logs", f"logs/big/{r[1]}", *r[2:]) for r in _layout(970, ("hot", "warm"), size=3 << 20)]
    unsettled = [("logs", f"logs/new/{r[1]}", *r[2:]) for r in _layout(3, ("hot",), size=70_000)]
    with _index(Path(config.index_path).parent, small + large + unsettled) as index:
        reference = _cost_before(config, index)
    made = api.plan(config, now=NOW)
    assert made.cost is not None
    assert made.objects_considered == 1003
    assert [(a.op, a.target) for a in made.actions] == [("copy", "warm")] * 3
    assert set(reference) == {"hot", "warm"}
    for tier, expected in reference.items():
        assert made.cost["tiers"][tier]["monthly_before"] == pytest.approx(expected, rel=1e-9)


def _cost_before(config: Config, index: Index) -> dict[str, float]:
    from tierctl import cost

    tally = cost.StorageTally(cost.Prices(config))
    for _ in tally.observe(obj for name in config.datasets for obj in index.objects(name)):
        pass
    return tally.per_tier()


def test_unsettled_objects_come_back_as_the_index_gives_them(tmp_path: Path) -> None:
    """Snapshots of unsettled objects equal Index.objects' (every column, tags included)."""
    config = _config("      - when: 'true'\n        place: [hot, warm]\n")
    rows = _layout(50, ("hot",))
    rows = [(*r[:14], '{"team":"ml"}', '{"o":"p"}') if i % 2 else r for i, r in enumerate(rows)]
    with _index(tmp_path, rows) as index:
        expected = list(index.objects("logs"))
        got = list(Prefilter(index, config, NOW).unsettled("logs"))
    assert got == expected and len(got) == 50
