"""The ``when`` language: tests on object facts, joined by and / or / not.

    age < 7d
    age >= 30d and size > 1MiB
    not (size < 4KiB or age < 1h)
    path ~ "**/*.tmp" and seen > 2d
    storage_class == "GLACIER" or tag.team == "ml"
    on(gcs) and copies < 2
    class(big_logs) and last_access > 90d

Grammar (keywords are case-insensitive)::

    expr    := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | primary
    primary := "(" expr ")" | "true" | "false" | call | field OP literal
    call    := "on" "(" TIER ")" | "class" "(" NAME ")"

A field has a kind that says how its literals parse: time fields (``age``, ``seen``,
``last_access``) take durations, ``size`` takes sizes, ``copies`` a count, string fields
(``path``, ``name``, ``storage_class``, ``tag.KEY``, ``meta.KEY``) a quoted or bare word
and also the glob operators ``~`` / ``!~``. Parse errors carry the 1-based column of
the offending character.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from functools import lru_cache
from typing import Any

from tierctl.errors import ExpressionError
from tierctl.policies.globs import glob_error, matches, selected
from tierctl.policies.units import DURATION_UNITS, SIZE_UNITS, parse_duration, parse_size


@dataclass(frozen=True)
class Facts:
    """What a condition can look at for one object (seconds and bytes).

    ``age``: since the content's mtime. ``seen``: since tierctl first saw the object.
    ``last_access``: since the last recorded read; None when no store records one, and
    then the content's age stands in (an object never read is as idle as it is old).
    ``tiers``: the tiers that hold the object's current version.
    ``tags`` / ``meta``: the object's tags and user metadata; None when they are not known
    (a store that cannot report them holds a copy, or no scan has read them yet). A
    condition that needs an unknown value raises :class:`UnknownFact` rather than guess.
    """

    age: float
    size: int
    seen: float = 0.0
    last_access: float | None = None
    path: str = ""  # the key below the dataset prefix
    storage_class: str = ""
    tiers: frozenset[str] = frozenset()
    tags: Mapping[str, str] | None = field(default_factory=dict, hash=False)
    meta: Mapping[str, str] | None = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]

    @property
    def copies(self) -> int:
        return len(self.tiers)

    def idle(self) -> float:
        return self.age if self.last_access is None else self.last_access

    def later(self, seconds: float) -> Facts:
        """These facts ``seconds`` from now, if nothing but the clock changes."""
        from dataclasses import replace

        return replace(
            self,
            age=self.age + seconds,
            seen=self.seen + seconds,
            last_access=None if self.last_access is None else self.last_access + seconds,
        )


class UnknownFact(Exception):
    """A condition needs ``tag.KEY`` / ``meta.KEY`` of an object whose tags or metadata are
    not known. Not a user error: evaluation stops, and the object is left alone."""

    def __init__(self, field: str, family: str) -> None:
        super().__init__(f"{field}: the object's {family} are not known")
        self.field = field
        self.family = family


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "duration" | "size" | "count" | "string"
    getter: Callable[[Facts], Any]
    example: str
    doc: str


FIELDS: dict[str, Field] = {
    "age": Field("age", "duration", lambda f: f.age, "age < 7d", "time since the content's mtime"),
    "seen": Field("seen", "duration", lambda f: f.seen, "seen > 2d", "time since tierctl first saw it"),
    "last_access": Field(
        "last_access", "duration", Facts.idle, "last_access > 90d", "time since the last recorded read"
    ),
    "size": Field("size", "size", lambda f: f.size, "size > 1MiB", "bytes"),
    "copies": Field("copies", "count", lambda f: f.copies, "copies < 2", "tiers holding the current version"),
    "path": Field("path", "string", lambda f: f.path, 'path ~ "**/*.tmp"', "key below the dataset prefix"),
    "name": Field("name", "string", lambda f: f.name, 'name ~ "*.log"', "last segment of the key"),
    "storage_class": Field(
        "storage_class",
        "string",
        lambda f: f.storage_class,
        'storage_class == "GLACIER"',
        "storage class of the current version",
    ),
}
TIME_FIELDS = ("age", "seen", "last_access")
NUMERIC_KINDS = ("duration", "size", "count")
MAPPING_FIELDS = {"tag": "tags", "meta": "meta"}  # tag.KEY, meta.KEY -> the Facts attribute

NUMERIC_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
STRING_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "~": matches,
    "!~": lambda value, pattern: not matches(value, pattern),
}
OPERATORS = NUMERIC_OPERATORS  # kept for callers that only compare numbers


@lru_cache(maxsize=256)
def field_for(name: str) -> Field | None:
    """The field called ``name``: a fixed one, or ``tag.KEY`` / ``meta.KEY``."""
    if name in FIELDS:
        return FIELDS[name]
    family, dot, key = name.partition(".")
    if dot and key and family in MAPPING_FIELDS:
        attribute = MAPPING_FIELDS[family]

        def getter(facts: Facts) -> str:
            values: Mapping[str, str] | None = getattr(facts, attribute)
            if values is None:
                raise UnknownFact(name, attribute)
            return values.get(key, "")

        return Field(
            name, "string", getter, f'{name} == "x"', f"the object's {family} {key!r} ('' when absent)"
        )
    return None


def metadata_families(node: Node) -> frozenset[str]:
    """The Facts mappings (``"tags"``, ``"meta"``) a condition reads, classes included."""
    out: set[str] = set()
    for n in walk(node):
        if isinstance(n, Match):
            family, dot, _ = n.field.partition(".")
            if dot and family in MAPPING_FIELDS:
                out.add(MAPPING_FIELDS[family])
        elif isinstance(n, ClassRef):
            out |= metadata_families(n.node)
    return frozenset(out)


# -- AST ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    """A numeric field against a number (seconds, bytes or a count)."""

    field: str
    op: str
    value: float
    text: str  # the source text, for reasons and explanations

    def evaluate(self, facts: Facts) -> bool:
        return NUMERIC_OPERATORS[self.op](FIELDS[self.field].getter(facts), self.value)


@dataclass(frozen=True)
class Match:
    """A string field against a string (``==``, ``!=``) or a glob (``~``, ``!~``)."""

    field: str
    op: str
    value: str
    text: str

    def evaluate(self, facts: Facts) -> bool:
        found = field_for(self.field)
        assert found is not None
        return STRING_OPERATORS[self.op](found.getter(facts), self.value)


@dataclass(frozen=True)
class OnTier:
    """The object's current version is on ``tier``."""

    tier: str
    text: str

    def evaluate(self, facts: Facts) -> bool:
        return self.tier in facts.tiers


@dataclass(frozen=True)
class Select:
    """A class's include/exclude globs over the path."""

    include: tuple[str, ...]
    exclude: tuple[str, ...]

    def evaluate(self, facts: Facts) -> bool:
        return selected(facts.path, self.include, self.exclude)


@dataclass(frozen=True)
class ClassRef:
    """A named selector from the ``classes:`` section, resolved at parse time."""

    name: str
    node: Node
    text: str

    def evaluate(self, facts: Facts) -> bool:
        return self.node.evaluate(facts)


@dataclass(frozen=True)
class And:
    parts: tuple[Node, ...]

    def evaluate(self, facts: Facts) -> bool:
        return all(p.evaluate(facts) for p in self.parts)


@dataclass(frozen=True)
class Or:
    parts: tuple[Node, ...]

    def evaluate(self, facts: Facts) -> bool:
        return any(p.evaluate(facts) for p in self.parts)


@dataclass(frozen=True)
class Not:
    part: Node

    def evaluate(self, facts: Facts) -> bool:
        return not self.part.evaluate(facts)


@dataclass(frozen=True)
class Const:
    value: bool

    def evaluate(self, facts: Facts) -> bool:
        return self.value


Node = Compare | Match | OnTier | Select | ClassRef | And | Or | Not | Const


def walk(node: Node) -> list[Node]:
    """``node`` and every node below it (class references are not entered)."""
    out: list[Node] = [node]
    if isinstance(node, (And, Or)):
        for part in node.parts:
            out.extend(walk(part))
    elif isinstance(node, Not):
        out.extend(walk(node.part))
    return out


def time_thresholds(node: Node) -> list[tuple[str, float]]:
    """(time field, value) of every comparison on a clock-driven field, classes included."""
    out: list[tuple[str, float]] = []
    for n in walk(node):
        if isinstance(n, Compare) and n.field in TIME_FIELDS:
            out.append((n.field, n.value))
        elif isinstance(n, ClassRef):
            out.extend(time_thresholds(n.node))
    return out


# -- tokens -------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<op><=|>=|==|!=|!~|<|>|=|~)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<string>"[^"\n]*"|'[^'\n]*')
  | (?P<literal>\d+(?:\.\d+)?[A-Za-z]*)
  | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-:]+)*)
    """,
    re.VERBOSE,
)
_EXAMPLE = "conditions look like `age < 7d and size > 1MiB`"
_KEYWORDS = ("and", "or", "not", "true", "false", "always")
_UNITS = {"duration": tuple(DURATION_UNITS), "size": tuple(SIZE_UNITS)}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    column: int  # 1-based


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            ch = source[pos]
            if ch in "\"'":
                raise ExpressionError(
                    "unterminated string",
                    column=pos + 1,
                    expression=source,
                    hint=f"close it with {ch}",
                )
            raise ExpressionError(
                f"unexpected character {ch!r}", column=pos + 1, expression=source, hint=_EXAMPLE
            )
        kind = match.lastgroup or ""
        if kind != "space":
            text = match.group()
            tokens.append(_Token(kind, text[1:-1] if kind == "string" else text, pos + 1))
        pos = match.end()
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


class _Parser:
    def __init__(
        self,
        source: str,
        classes: Mapping[str, Node] | None,
        tiers: Mapping[str, object] | None,
    ) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.pos = 0
        self.classes = classes
        self.tiers = tiers
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != "end":
            self.pos += 1
        return token

    def is_keyword(self, word: str) -> bool:
        token = self.peek()
        return token.kind == "word" and token.text.lower() == word

    def error(self, message: str, token: _Token, hint: str = "") -> ExpressionError:
        return ExpressionError(message, column=token.column, expression=self.source, hint=hint)

    def source_from(self, first: _Token) -> str:
        last = self.tokens[self.pos - 1]
        end = last.column - 1 + len(last.text) + (2 if last.kind == "string" else 0)
        return self.source[first.column - 1 : end]

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise self.error("empty condition", self.peek(), hint="write e.g. `age < 7d`")
        node = self.parse_or()
        if self.peek().kind != "end":
            raise self.error(
                f"unexpected {self.peek().text!r}", self.peek(), hint="join conditions with and / or"
            )
        return node

    def parse_or(self) -> Node:
        self.depth += 1
        if self.depth > 100:
            raise self.error("condition nested too deeply", self.peek(), hint="simplify it")
        parts = [self.parse_and()]
        while self.is_keyword("or"):
            self.take()
            parts.append(self.parse_and())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Node:
        parts = [self.parse_not()]
        while self.is_keyword("and"):
            self.take()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_not(self) -> Node:
        negations = 0
        while self.is_keyword("not"):
            self.take()
            negations += 1
        node = self.parse_primary()
        for _ in range(negations):
            node = Not(node)
        return node

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind == "lparen":
            node = self.parse_or()
            if self.peek().kind != "rparen":
                raise self.error("missing ')'", self.peek(), hint=f"close the '(' at column {token.column}")
            self.take()
            return node
        lowered = token.text.lower() if token.kind == "word" else ""
        if lowered in ("true", "always"):
            return Const(True)
        if lowered == "false":
            return Const(False)
        if token.kind != "word" or lowered in _KEYWORDS:
            raise self.error(
                f"expected a field name, found {token.text or 'the end'!r}",
                token,
                hint=f"fields: {', '.join(FIELDS)}, tag.KEY, meta.KEY; tests: on(TIER), class(NAME)",
            )
        if lowered in ("on", "class") and self.peek().kind == "lparen":
            return self.parse_call(token, lowered)
        return self.parse_compare(token)

    def parse_call(self, name: _Token, function: str) -> Node:
        self.take()  # (
        argument = self.take()
        if argument.kind not in ("word", "string"):
            what = "a tier name" if function == "on" else "a class name"
            raise self.error(f"expected {what} in {function}(...)", argument, hint=f"e.g. {function}(gcs)")
        if self.peek().kind != "rparen":
            raise self.error(
                f"{function}(...) takes one name", self.peek(), hint=f"write {function}(a) or {function}(b)"
            )
        self.take()
        text = self.source_from(name)
        if function == "on":
            if self.tiers is not None and argument.text not in self.tiers:
                raise self.error(
                    f"unknown tier {argument.text!r}",
                    argument,
                    hint=_suggest(argument.text, self.tiers, "tiers"),
                )
            return OnTier(argument.text, text)
        known = self.classes or {}
        if argument.text not in known:
            raise self.error(
                f"unknown class {argument.text!r}",
                argument,
                hint=_suggest(argument.text, known, "classes (declared earlier in `classes:`)"),
            )
        return ClassRef(argument.text, known[argument.text], text)

    def parse_compare(self, name: _Token) -> Node:
        found = field_for(name.text)
        if found is None:
            raise self.error(
                f"unknown field {name.text!r}",
                name,
                hint=_suggest(name.text, [*FIELDS, "tag.KEY", "meta.KEY", "on", "class"], "fields"),
            )
        op = self.take()
        allowed = NUMERIC_OPERATORS if found.kind in NUMERIC_KINDS else STRING_OPERATORS
        op_text = "==" if op.text == "=" else op.text
        if op.kind != "op" or op_text not in allowed:
            raise self.error(
                f"expected a comparison ({', '.join(allowed)}) after {name.text!r}",
                op,
                hint=f"e.g. `{found.example}`",
            )
        literal = self.take()
        unit = self.peek()
        apart = literal.kind == "literal" and literal.text.isdigit() and unit.kind == "word"
        if apart and unit.text.lower() in _UNITS.get(found.kind, ()):
            # "10 GB": a number and its unit written apart
            self.take()
            text = self.source[literal.column - 1 : unit.column - 1 + len(unit.text)]
            literal = _Token("literal", text, literal.column)
        if found.kind == "string":
            if literal.kind not in ("string", "word", "literal"):
                raise self.error(
                    f"expected a string after {op.text!r}", literal, hint=f"e.g. `{found.example}`"
                )
            problem = glob_error(literal.text) if op_text in ("~", "!~") else None
            if problem is not None:
                raise self.error(problem, literal, hint="a class like [a-z] must run from low to high")
            return Match(found.name, op_text, literal.text, self.source_from(name))
        if literal.kind != "literal":
            raise self.error(
                f"expected a {found.kind} after {op.text!r}", literal, hint=f"e.g. `{found.example}`"
            )
        try:
            value = _number(found.kind, literal.text)
        except ValueError as exc:
            raise self.error(str(exc), literal, hint=f"e.g. `{found.example}`") from None
        return Compare(found.name, op_text, value, self.source_from(name))


def _number(kind: str, text: str) -> float:
    if kind == "duration":
        return parse_duration(text)
    if kind == "size":
        return parse_size(text)
    if not text.isdigit():
        raise ValueError(f"bad count {text!r}: expected a whole number, e.g. 2")
    return int(text)


def _suggest(name: str, known: Any, what: str) -> str:
    close = get_close_matches(name, list(known), n=1)
    return f"did you mean {close[0]!r}?" if close else f"known {what}: {', '.join(known) or 'none'}"


def parse(
    source: str,
    *,
    classes: Mapping[str, Node] | None = None,
    tiers: Mapping[str, object] | None = None,
) -> Node:
    """Parse a ``when`` expression; :class:`ExpressionError` (with a column) if malformed.

    ``classes`` resolves ``class(NAME)``; ``tiers``, when given, checks ``on(TIER)``.
    """
    return _Parser(source, classes, tiers).parse()
