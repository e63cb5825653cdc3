"""Pre-filter a plan in SQL: objects already settled never reach the Python planner.

An object is *settled* when the planner would give it no action: its first matching rule
places it (``place`` / ``copies``) on exactly the tiers that hold it, and every placement
holds the same content. One ``GROUP BY key`` pass over the placements table computes, per
object, the facts a ``when`` condition looks at (age, seen, last access, size, copies,
path, name, storage class, the set of tiers), a ``CASE`` gives the first matching rule of
the first policy that selects the object, and only the objects that are not settled come
back, with their placements, for :func:`tierctl.planner.make_plan` to plan in Python.

Exactness rules (a test plans random indexes both ways and compares action for action):

- The SQL facts equal the planner's only when every placement holds the same content (same
  size, mtimes within ``MTIME_WINDOW``, no two checksums of one algorithm that differ) and
  every placement is on a declared, non-cache tier. Any other object goes to Python.
- Each condition is compiled to two predicates: *surely true* and *surely false*, both
  meaning "evaluates so without raising". ``tag.KEY`` / ``meta.KEY`` tests (which raise
  when an object's tags are unknown) and anything else not translated are neither, so an
  object that reaches such a rule goes to Python; a rule after it is never guessed.
- Globs compile exactly (:mod:`tierctl.policies.sqlglob`).

Settled objects are counted (``Settled``): the plan's ``objects_considered`` and each
policy's decided objects (for ``max_delete`` percentages) include them.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from tierctl.index.db import _PLACEMENT_COLUMNS, _placement
from tierctl.model import MTIME_WINDOW, ObjectSnapshot, Placement
from tierctl.policies.expr import And, ClassRef, Compare, Const, Match, Node, Not, OnTier, Or, Select
from tierctl.policies.model import Config, Policy, Rule
from tierctl.policies.sqlglob import GLOB_FUNCTION, glob_sql, glob_udf, last_segment, name_glob_sql

if TYPE_CHECKING:
    from tierctl.index.db import Index

MAX_TIERS = 48  # tiers get one bit each of a 64-bit integer; more and the dataset is planned in Python
FOREIGN = 1 << MAX_TIERS  # added for a placement on an undeclared or cache tier
MAX_COPIES_SETS = 256  # tier sets a `copies` rule may settle on before it is left to Python
_UNSETTLED = -1
_JOIN_COLUMNS = ", ".join(f"p.{c.strip()}" for c in _PLACEMENT_COLUMNS.split(","))
# The columns are Placement's fields in order (``meta`` is ``metadata``): a row without tags
# or metadata (nothing to decode) is then ``Placement(*row)``.
_ROW_COLUMNS = [c.strip() for c in _PLACEMENT_COLUMNS.split(",")]
_ROW_IS_FIELDS = [c.replace("meta", "metadata") for c in _ROW_COLUMNS] == [f.name for f in fields(Placement)]
_TAGS, _META = _ROW_COLUMNS.index("tags"), _ROW_COLUMNS.index("meta")


@dataclass
class Settled:
    """Objects the index found settled, which never reach the planner: how many, and how
    many of them each policy decided. Filled while :meth:`Prefilter.unsettled` streams."""

    objects: int = 0
    decided: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class TierTotal:
    """Settled placements of one dataset on one tier: how many, their bytes, and their
    bytes with each counted as at least the tier's minimum billable size (``billable``)."""

    dataset: str
    tier: str
    objects: int
    bytes: int
    billable: int


@dataclass(frozen=True)
class _Cond:
    """SQL for "holds, without raising" and "fails, without raising"; ``exact`` when one is
    the negation of the other (nothing untranslated inside)."""

    true: str
    false: str
    exact: bool

    @classmethod
    def of(cls, sql: str) -> _Cond:
        return cls(sql, f"NOT ({sql})", True)


_UNKNOWN = _Cond("0", "0", False)


class Prefilter:
    """The settled-object filter of one plan (one clock, one index connection).

    ``min_sizes``: per tier, the size below which a placement is billed as that size, for
    :meth:`settled_totals`."""

    def __init__(
        self, index: Index, config: Config, now: float, min_sizes: Mapping[str, int] | None = None
    ) -> None:
        self.index = index
        self.config = config
        self.now = now
        self.settled = Settled()
        self.bits = tier_bits(config)
        self.min_sizes = [(t, m) for t, m in (min_sizes or {}).items() if m > 0 and t in self.bits]
        # (dataset, tier set) -> [objects, bytes, billable bytes per tier of min_sizes...]
        self._placements: dict[tuple[str, int], list[int]] = {}
        # While a dataset streams: (verdict, tier set) -> the same counts.
        self._groups: dict[tuple[int, int], list[int]] = {}
        index.conn.create_function(
            "tierctl_settle", 3, _settler(self._groups, [m for _, m in self.min_sizes])
        )
        index.conn.create_function(GLOB_FUNCTION, 2, glob_udf, deterministic=True)

    def unsettled(self, dataset: str) -> Iterator[ObjectSnapshot]:
        """The objects of ``dataset`` the planner must see, as :meth:`Index.objects` gives
        them and in its order; the rest are counted in :attr:`settled` once the stream ends."""
        compiled = _Compiler(self.config, dataset, self.now, self.bits).query()
        if compiled is None:
            yield from self.index.objects(dataset)
            return
        sql, params, policies = compiled
        groups = self._groups
        groups.clear()
        rows = self.index.conn.execute(sql, params)
        # Rows come grouped by key (row[1]), in key order: one object per run of a key. (A
        # loop of its own, not itertools.groupby: this runs per placement of every object.)
        previous: str | None = None
        group: list[Placement] = []
        for row in rows:
            key = row[1]
            if key != previous:
                if group:
                    yield _snapshot(dataset, group)
                if previous is not None and key <= previous:
                    raise RuntimeError(f"sqlfilter: objects out of key order ({previous!r}, {key!r})")
                previous = key
                group = []
            # A row without tags or metadata is the Placement's fields in order (nothing to decode).
            plain = _ROW_IS_FIELDS and row[_TAGS] is None and row[_META] is None
            group.append(Placement(*row) if plain else _placement(row))
        if group:
            yield _snapshot(dataset, group)
        for (verdict, mask), counts in groups.items():
            self.settled.objects += counts[0]
            if verdict:
                self.settled.decided[policies[verdict - 1]] += counts[0]
            total = self._placements.setdefault((dataset, mask), [0] * len(counts))
            for i, count in enumerate(counts):
                total[i] += count

    def settled_totals(self) -> list[TierTotal]:
        """The settled objects' placements per (dataset, tier), once the streams are done
        (every placement of a settled object holds its one size)."""
        billable_slot = {tier: i for i, (tier, _) in enumerate(self.min_sizes, start=2)}
        totals: dict[tuple[str, str], list[int]] = {}
        for (dataset, mask), counts in self._placements.items():
            for tier, bit in self.bits.items():
                if mask & bit:
                    total = totals.setdefault((dataset, tier), [0, 0, 0])
                    total[0] += counts[0]
                    total[1] += counts[1]
                    total[2] += counts[billable_slot.get(tier, 1)]
        return [TierTotal(dataset, tier, *total) for (dataset, tier), total in sorted(totals.items())]


def _snapshot(dataset: str, group: list[Placement]) -> ObjectSnapshot:
    found = tuple(group)
    first_seen = found[0].first_seen if len(found) == 1 else min(p.first_seen for p in found)
    return ObjectSnapshot(dataset, found[0].key, found, first_seen)


def tier_bits(config: Config) -> dict[str, int]:
    """One bit per declared tier, in declaration order; the cache tier has none (its
    placements are not the policies'), so an object on it is never settled in SQL."""
    cache = config.cache.tier if config.cache is not None else None
    return {name: 1 << i for i, name in enumerate(t for t in config.tiers if t != cache)}


def _settler(groups: dict[tuple[int, int], list[int]], minimums: list[int]) -> Callable[[int, int, int], int]:
    """``tierctl_settle(verdict, tier set, size)``: 1 keeps the object for the planner; a
    settled one is counted in ``groups[(verdict, tier set)]``: objects, bytes, and bytes
    counted as at least each of ``minimums``. (Called once per object: kept lean.)"""
    width = 2 + len(minimums)
    if not minimums:

        def settle(verdict: int, mask: int, size: int) -> int:
            if verdict < 0:
                return 1
            counts = groups.get((verdict, mask))
            if counts is None:
                counts = groups[(verdict, mask)] = [0, 0]
            counts[0] += 1
            counts[1] += size
            return 0

        return settle

    def settle_billable(verdict: int, mask: int, size: int) -> int:
        if verdict < 0:
            return 1
        counts = groups.get((verdict, mask))
        if counts is None:
            counts = groups[(verdict, mask)] = [0] * width
        counts[0] += 1
        counts[1] += size
        for i, minimum in enumerate(minimums, start=2):
            counts[i] += max(size, minimum)
        return 0

    return settle_billable


class _Compiler:
    """The SQL of one dataset's pre-filter: per-object facts, then the verdict per object
    (-1: plan it in Python; 0: no rule matches; k: settled, decided by the k-th policy)."""

    def __init__(self, config: Config, dataset: str, now: float, bits: dict[str, int]) -> None:
        self.config = config
        self.dataset = dataset
        self.params: dict[str, Any] = {"dataset": dataset, "now": now, "window": MTIME_WINDOW}
        self.bits = bits
        self.needs: set[str] = set()  # optional per-object columns: first_seen, atime, storage_class

    def param(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    # -- the query ----------------------------------------------------------------------
    def query(self) -> tuple[str, dict[str, Any], list[str]] | None:
        """The pre-filter's SQL and parameters, and the policy names verdicts number."""
        if len(self.bits) > MAX_TIERS:
            return None
        policies = list(self.config.policies_for(self.dataset))
        verdict = self.verdict(policies)
        # CROSS JOIN keeps the objects as the outer loop: rows come grouped by object, in key
        # order, without sorting (an ORDER BY would sort every unsettled row first).
        sql = (
            f"SELECT {_JOIN_COLUMNS} FROM (SELECT key FROM ({self.objects()}) AS o"
            f" WHERE tierctl_settle({verdict}, o.mask, o.size_hi)) AS c"
            " CROSS JOIN placements AS p ON p.dataset = :dataset AND p.key = c.key AND p.state = 'present'"
        )
        return sql, self.params, [p.name for p in policies]

    def objects(self) -> str:
        """One row ``o`` per object: the aggregates its facts come from (call it after the
        conditions are compiled: they say which optional columns are needed)."""
        mask = " ".join(f"WHEN {self.param(t)} THEN {bit}" for t, bit in self.bits.items())
        columns = [
            "key",
            "count(*) AS n",
            "min(size) AS size_lo",
            "max(size) AS size_hi",
            "min(mtime) AS mtime_lo",
            "max(mtime) AS mtime_hi",
            "min(checksum) AS cs_lo",
            "max(checksum) AS cs_hi",
            f"sum(CASE tier {mask} ELSE {FOREIGN} END) AS mask",
        ]
        if "first_seen" in self.needs:
            columns.append("min(first_seen) AS first_seen")
        if "atime" in self.needs:
            columns.append("max(atime) AS atime_hi")
        if "storage_class" in self.needs:
            columns += [
                "min(coalesce(storage_class, '')) AS sc_lo",
                "max(coalesce(storage_class, '')) AS sc_hi",
            ]
        return (
            f"SELECT {', '.join(columns)} FROM placements"
            " WHERE dataset = :dataset AND state = 'present' GROUP BY key"
        )

    @staticmethod
    def exact() -> str:
        """SQL: the object's facts are what the planner would see. Every placement holds the
        same content (sizes equal, mtimes within the window, and no two checksums of one
        algorithm differ: all equal, or two copies of different algorithms) and is on a
        declared, non-cache tier. (Min and max ignore NULLs; an empty checksum counts as
        one of algorithm '' here, which can only send more objects to Python.)"""
        checksum_algos_differ = f"{_algo('o.cs_lo')} IS NOT {_algo('o.cs_hi')}"
        return (
            f"o.size_lo = o.size_hi AND o.mtime_hi - o.mtime_lo <= :window AND o.mask < {FOREIGN}"
            f" AND (o.cs_lo IS o.cs_hi OR (o.n = 2 AND {checksum_algos_differ}))"
        )

    def verdict(self, policies: list[Policy]) -> str:
        """SQL for the object's verdict. Each policy gives its first matching rule's verdict,
        or NULL when it does not select the object or no rule matches (coalesce moves on to
        the next policy, evaluating each policy's selection once)."""
        decided = [self.policy_verdict(policy, number) for number, policy in enumerate(policies, start=1)]
        first = f"coalesce({', '.join([*decided, '0'])})" if decided else "0"
        return f"CASE WHEN NOT ({self.exact()}) THEN {_UNSETTLED} ELSE {first} END"

    def policy_verdict(self, policy: Policy, number: int) -> str:
        whens = []
        for rule in policy.rules:
            condition = self.condition(rule.condition)
            whens.append(f"WHEN {condition.true} THEN {self.outcome(rule, number)}")
            if not condition.exact:  # unless the rule surely fails (and raises nothing), ask Python
                whens.append(f"WHEN NOT ({condition.false}) THEN {_UNSETTLED}")
        rules = f"CASE {' '.join(whens)} ELSE NULL END"
        selected = self.selection(policy.include, policy.exclude)
        if selected.true == "1":
            return rules
        unknown = "" if selected.exact else f" WHEN NOT ({selected.false}) THEN {_UNSETTLED}"
        return f"CASE WHEN {selected.true} THEN {rules}{unknown} ELSE NULL END"

    def outcome(self, rule: Rule, policy_number: int) -> str:
        """The verdict when ``rule`` decides: settled if the object's tiers are the rule's."""
        if rule.delete:
            return str(_UNSETTLED)
        masks = self.settled_masks(rule)
        if masks is None or not masks:
            return str(_UNSETTLED)
        listed = ", ".join(str(m) for m in sorted(masks))
        return f"CASE WHEN o.mask IN ({listed}) THEN {policy_number} ELSE {_UNSETTLED} END"

    def settled_masks(self, rule: Rule) -> set[int] | None:
        """The tier sets (as masks) an object may be on for ``rule`` to want no change:
        ``place`` and, for ``copies``, the tiers :func:`evaluate.choose_copies` keeps, which
        are the holding tiers of the group when exactly enough of them hold the object."""
        place = rule.place or ()
        if any(t not in self.bits for t in place):
            return None
        place_mask = sum(self.bits[t] for t in set(place))
        if rule.copies is None:
            return {place_mask}
        among = rule.copies.among
        if any(t not in self.bits for t in among):
            return None
        already = sum(1 for t in among if t in place)
        extra = [t for t in among if t not in place]
        wanted = min(max(0, rule.copies.n - already), len(extra))
        combos = list(itertools.islice(itertools.combinations(extra, wanted), MAX_COPIES_SETS + 1))
        if len(combos) > MAX_COPIES_SETS:
            return None
        return {place_mask | sum(self.bits[t] for t in combo) for combo in combos}

    # -- conditions ---------------------------------------------------------------------
    def condition(self, node: Node) -> _Cond:
        if isinstance(node, Const):
            return _Cond.of("1" if node.value else "0")
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Match):
            return self.match(node)
        if isinstance(node, OnTier):
            bit = self.bits.get(node.tier)
            return _Cond.of(f"(o.mask & {bit}) != 0" if bit is not None else "0")
        if isinstance(node, Select):
            return self.selection(node.include, node.exclude)
        if isinstance(node, ClassRef):
            return self.condition(node.node)
        if isinstance(node, Not):
            part = self.condition(node.part)
            return _Cond(part.false, part.true, part.exact)
        if isinstance(node, (And, Or)):
            return self.junction(node)
        return _UNKNOWN

    def junction(self, node: And | Or) -> _Cond:
        parts = [self.condition(p) for p in node.parts]
        joiner = " AND " if isinstance(node, And) else " OR "
        if all(p.exact for p in parts):
            return _Cond.of(joiner.join(f"({p.true})" for p in parts))
        # Python evaluates left to right and stops at the first part that decides; a part
        # after it is never evaluated (so never raises).
        decides = [p.false if isinstance(node, And) else p.true for p in parts]
        passes = [p.true if isinstance(node, And) else p.false for p in parts]
        stops = " OR ".join(
            "(" + " AND ".join([*(f"({s})" for s in passes[:i]), f"({decides[i]})"]) + ")"
            for i in range(len(parts))
        )
        through = " AND ".join(f"({s})" for s in passes)
        if isinstance(node, And):
            return _Cond(through, stops, False)
        return _Cond(stops, through, False)

    def compare(self, node: Compare) -> _Cond:
        value = self.fact(node.field)
        if value is None:
            return _UNKNOWN
        op = {"==": "=", "!=": "<>"}.get(node.op, node.op)
        return _Cond.of(f"{value} {op} {self.param(node.value)}")

    def match(self, node: Match) -> _Cond:
        value = self.fact(node.field)
        if value is None:
            return _UNKNOWN
        if node.op in ("==", "!="):
            op = "=" if node.op == "==" else "<>"
            return _Cond.of(f"{value} {op} {self.param(node.value)}")
        if node.field == "name":
            found = name_glob_sql(self.path(), node.value, self.param)
        else:
            found = glob_sql(value, node.value, self.param)
        if found is None:
            return _UNKNOWN
        return _Cond.of(found if node.op == "~" else f"NOT ({found})")

    def fact(self, name: str) -> str | None:
        """SQL for a fact of an object whose placements all hold one content."""
        age = "max(0.0, :now - o.mtime_hi)"
        if name == "age":
            return age
        if name == "size":
            return "o.size_hi"
        if name == "copies":
            return "o.n"
        if name == "seen":
            self.needs.add("first_seen")
            return "max(0.0, :now - o.first_seen)"
        if name == "last_access":  # the age when no store records reads
            self.needs.add("atime")
            read = "max(0.0, :now - max(o.atime_hi, o.mtime_hi))"
            return f"CASE WHEN o.atime_hi IS NULL THEN {age} ELSE {read} END"
        if name == "path":
            return self.path()
        if name == "name":
            return last_segment(self.path())
        if name == "storage_class":
            return self.storage_class()
        return None  # tag.KEY, meta.KEY, or a field this module does not know

    def path(self) -> str:
        prefix = self.config.datasets[self.dataset].prefix
        return f"substr(o.key, {len(prefix) + 1})"

    def storage_class(self) -> str:
        """The current version's class: the placements' common one, else that of the
        placement :func:`evaluate.current_version` picks (sizes agree: latest mtime, then
        the tier declared first)."""
        self.needs.add("storage_class")
        order = " ".join(f"WHEN {self.param(t)} THEN {i}" for i, t in enumerate(self.config.tiers))
        version = (
            "SELECT coalesce(v.storage_class, '') FROM placements AS v"
            " WHERE v.dataset = :dataset AND v.key = o.key AND v.state = 'present'"
            f" ORDER BY v.mtime DESC, v.size DESC, CASE v.tier {order} ELSE {1 << 30} END LIMIT 1"
        )
        return f"(CASE WHEN o.sc_lo = o.sc_hi THEN o.sc_lo ELSE ({version}) END)"

    # -- globs --------------------------------------------------------------------------
    def selection(self, include: tuple[str, ...], exclude: tuple[str, ...]) -> _Cond:
        """:func:`globs.selected` over the object's path."""
        path = self.path()
        included = [glob_sql(path, g, self.param) for g in include]
        excluded = [glob_sql(path, g, self.param) for g in exclude]
        if any(g is None for g in (*included, *excluded)):
            return _UNKNOWN
        parts = []
        if included:
            parts.append("(" + " OR ".join(f"({g})" for g in included) + ")")
        if excluded:
            parts.append("NOT (" + " OR ".join(f"({g})" for g in excluded) + ")")
        return _Cond.of(" AND ".join(parts) or "1")


def _algo(checksum: str) -> str:
    """SQL for ``checksum.partition(":")[0]``."""
    colon = f"instr({checksum}, ':')"
    return f"CASE WHEN {colon} > 0 THEN substr({checksum}, 1, {colon} - 1) ELSE {checksum} END"
