"""Where things are in a policy file: YAML with positions, and located problems.

YAML is composed to nodes (not loaded) so every value keeps its position:
:func:`read_document` returns plain data together with a :class:`LocatedDoc` that maps each
value's path (``("policies", 0, "rules", 1, "when")``) to its file:line:column. A
:class:`Checker` validates that plain data and records each problem at the position of
the value (or mapping key) it is about, so every section parser reports the same way.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any

import yaml

from tierctl.errors import ConfigError, ExpressionError, Location
from tierctl.policies import expr
from tierctl.policies.globs import glob_error
from tierctl.policies.model import Tier

Path = tuple[str | int, ...]
MAX_YAML_NODES = 1_000_000  # YAML aliases can expand a small file into a huge document


class LocatedDoc:
    """Plain data from YAML nodes plus the position of every value and mapping key."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.values: dict[Path, Location] = {}
        self.keys: dict[Path, Location] = {}
        self.lines: list[str] = []
        self.nodes = 0
        self._scalars = yaml.SafeLoader("")

    def loc(self, where: Path, *, key: bool = False) -> Location:
        """The position of the value at ``where`` (of its key with ``key``), else of its
        nearest located parent: a missing value is reported where it should have been."""
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


def read_document(text: str, path: str) -> tuple[LocatedDoc, Any]:
    """The policy file's text as plain data and its positions; a YAML problem (syntax, an
    empty file, an oversized expansion, an unreadable value) raises a located ConfigError."""
    doc = LocatedDoc(path)
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
    return doc, data


class Checker:
    """Collects located problems while the sections of a policy file are validated.

    Each check records its problem and returns a usable fallback (``{}``, ``None``, ``()``)
    so validation goes on and the user sees every problem of the file at once."""

    def __init__(self, doc: LocatedDoc) -> None:
        self.doc = doc
        self.problems: list[ConfigError] = []

    def problem(self, where: Path, message: str, hint: str = "", *, key: bool = False) -> None:
        self.problems.append(ConfigError(message, hint=hint, location=self.doc.loc(where, key=key)))

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
