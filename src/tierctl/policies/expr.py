"""The ``when`` language: comparisons over object facts, joined by and / or / not.

    age < 7d
    age >= 30d and size > 1MiB
    not (size < 4KiB or age < 1h)

A field has a kind that says how its literals parse: ``age`` takes durations, ``size``
takes sizes. Parse errors carry the 1-based column of the offending character.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tierctl.errors import ExpressionError
from tierctl.policies.units import DURATION_UNITS, SIZE_UNITS, parse_duration, parse_size


@dataclass(frozen=True)
class Facts:
    """What a condition can look at for one object (seconds and bytes)."""

    age: float
    size: int


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "duration" | "size"
    getter: Callable[[Facts], Any]
    example: str


FIELDS: dict[str, Field] = {
    "age": Field("age", "duration", lambda f: f.age, "age < 7d"),
    "size": Field("size", "size", lambda f: f.size, "size > 1MiB"),
}

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


# -- AST ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    field: str
    op: str
    value: float
    text: str  # the source text, for reasons and explanations

    def evaluate(self, facts: Facts) -> bool:
        return OPERATORS[self.op](FIELDS[self.field].getter(facts), self.value)


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


Node = Compare | And | Or | Not | Const


# -- tokens -------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<op><=|>=|==|!=|<|>|=)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<literal>\d+(?:\.\d+)?[A-Za-z]*)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)


_SPACED_UNIT = re.compile(r"\s+([A-Za-z]+)\b")
_UNITS = {u.lower() for u in (*DURATION_UNITS, *SIZE_UNITS)}


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
            raise ExpressionError(
                f"unexpected character {source[pos]!r}",
                column=pos + 1,
                expression=source,
                hint="conditions look like `age < 7d and size > 1MiB`",
            )
        kind = match.lastgroup or ""
        end = match.end()
        if kind == "literal" and match.group()[-1].isdigit():
            # "1 MiB", "30 d": a unit may follow after spaces when the word is a known unit.
            unit = _SPACED_UNIT.match(source, end)
            if unit and unit.group(1).lower() in _UNITS:
                end = unit.end()
        if kind != "space":
            tokens.append(_Token(kind, source[pos:end].replace(" ", ""), pos + 1))
        pos = end
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = _tokenize(source)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def error(self, message: str, token: _Token, hint: str = "") -> ExpressionError:
        return ExpressionError(message, column=token.column, expression=self.source, hint=hint)

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
        parts = [self.parse_and()]
        while self.peek().kind == "word" and self.peek().text.lower() == "or":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def parse_and(self) -> Node:
        parts = [self.parse_not()]
        while self.peek().kind == "word" and self.peek().text.lower() == "and":
            self.take()
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def parse_not(self) -> Node:
        if self.peek().kind == "word" and self.peek().text.lower() == "not":
            self.take()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind == "lparen":
            node = self.parse_or()
            if self.peek().kind != "rparen":
                raise self.error("missing ')'", self.peek(), hint=f"close the '(' at column {token.column}")
            self.take()
            return node
        if token.kind == "word" and token.text.lower() in ("true", "always"):
            return Const(True)
        if token.kind == "word" and token.text.lower() == "false":
            return Const(False)
        if token.kind != "word":
            raise self.error(
                f"expected a field name, found {token.text or 'the end'!r}",
                token,
                hint=f"fields: {', '.join(FIELDS)}",
            )
        return self.parse_compare(token)

    def parse_compare(self, name: _Token) -> Node:
        field = FIELDS.get(name.text)
        if field is None:
            from difflib import get_close_matches

            close = get_close_matches(name.text, FIELDS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"fields: {', '.join(FIELDS)}"
            raise self.error(f"unknown field {name.text!r}", name, hint=hint)
        op = self.take()
        if op.kind != "op":
            raise self.error(
                f"expected a comparison (<, <=, >, >=, ==, !=) after {name.text!r}",
                op,
                hint=f"e.g. `{field.example}`",
            )
        op_text = "==" if op.text == "=" else op.text
        literal = self.take()
        if literal.kind != "literal":
            raise self.error(
                f"expected a {field.kind} after {op.text!r}", literal, hint=f"e.g. `{field.example}`"
            )
        try:
            value: float = (
                parse_duration(literal.text) if field.kind == "duration" else parse_size(literal.text)
            )
        except ValueError as exc:
            raise self.error(str(exc), literal, hint=f"e.g. `{field.example}`") from None
        text = self.source[name.column - 1 : literal.column - 1 + len(literal.text)]
        return Compare(field.name, op_text, value, text)


def parse(source: str) -> Node:
    """Parse a ``when`` expression; :class:`ExpressionError` (with a column) if malformed."""
    return _Parser(source).parse()
