"""Path globs (:mod:`tierctl.policies.globs`) as SQLite expressions that match exactly.

Our ``*`` and ``?`` stay inside one '/'-separated segment and ``**`` spans segments;
SQLite's ``GLOB`` lets ``*`` and ``?`` match '/' too. So a pattern without ``**`` becomes
``GLOB`` plus an equal count of '/' in value and pattern (every '/' of the value is then
matched by a literal one), ``**/*.log`` and ``name ~ "*.log"`` a suffix test, ``2025/**``
a prefix test, and anything else a call of :func:`matches` from SQL (``tierctl_glob``,
registered by whoever runs the query: see :func:`glob_udf`).

``param`` binds a value and returns its placeholder; values never go into the SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from tierctl.policies.globs import glob_to_regex, matches

Param = Callable[[object], str]
GLOB_FUNCTION = "tierctl_glob"
_SPECIAL = re.compile(r"[*?\[]")
_CLASS_BODY = re.compile(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*")  # plain characters and ranges


def glob_udf(value: str, pattern: str) -> int:
    """The SQL function ``tierctl_glob(value, pattern)``: :func:`globs.matches`."""
    return 1 if matches(value, pattern) else 0


def glob_sql(value: str, pattern: str, param: Param, *, one_segment: bool = False) -> str | None:
    """SQL true exactly when ``matches(value, pattern)``; None if the pattern does not
    compile (the Python planner then reports it as it always did). ``one_segment``: the
    value holds no '/' (a key's last segment)."""
    try:
        glob_to_regex(pattern)
    except re.error:
        return None
    if not _SPECIAL.search(pattern):
        return f"{value} = {param(pattern)}"
    if pattern == "**":
        return "1"
    head, stars, rest = pattern.partition("**")
    if not stars:
        found = _segments_glob(value, pattern, param, one_segment=one_segment)
        if found is not None:
            return found
    elif not head and rest.startswith("/") and "**" not in rest and "/" not in rest[1:]:
        # **/LAST: the value's last segment matches LAST (LAST's wildcards cannot cross '/')
        last = rest[1:]
        if last.startswith("*") and last[1:] and not _SPECIAL.search(last[1:]):
            return ends_with(value, last[1:], param)
        found = _segments_glob(last_segment(value), last, param, one_segment=True)
        if found is not None:
            return found
    elif not rest and not _SPECIAL.search(head):
        # LITERAL** (e.g. 2025/**): a prefix
        return f"substr({value}, 1, {len(head)}) = {param(head)}"
    return f"{GLOB_FUNCTION}({value}, {param(pattern)})"


def name_glob_sql(path: str, pattern: str, param: Param) -> str | None:
    """SQL for ``name ~ pattern``, ``name`` being the last segment of ``path``. ``*.log``
    (a suffix without wildcards) is a test of the path's end, without cutting out the name."""
    suffix = pattern[1:]
    if pattern.startswith("*") and not _SPECIAL.search(suffix):
        return "0" if "/" in suffix else ends_with(path, suffix, param)
    return glob_sql(last_segment(path), pattern, param, one_segment=True)


def ends_with(value: str, suffix: str, param: Param) -> str:
    return f"substr({value}, -{len(suffix)}) = {param(suffix)}" if suffix else "1"


def last_segment(value: str) -> str:
    """SQL for ``value.rpartition("/")[2]``: rtrim strips the trailing characters that are
    not '/', leaving the folder part."""
    return f"substr({value}, length(rtrim({value}, replace({value}, '/', ''))) + 1)"


def _segments_glob(value: str, pattern: str, param: Param, *, one_segment: bool) -> str | None:
    """A pattern without ``**``: SQLite's GLOB, plus an equal count of '/'. None for
    character classes other than plain characters and ranges (a negated class may match
    '/', and regex and GLOB read other class syntax differently)."""
    translated: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            end = pattern.find("]", i + 1)
            body = pattern[i + 1 : end] if end != -1 else ""
            if end == -1 or not _CLASS_BODY.fullmatch(body) or not _ranges_ordered(body):
                return None
            translated.append(f"[{body}]")
            i = end + 1
            continue
        translated.append(ch)
        i += 1
    glob = f"{value} GLOB {param(''.join(translated))}"
    if one_segment:
        return glob if "/" not in pattern else "0"  # a literal '/' never matches a name
    slashes = pattern.count("/")
    return f"({glob} AND length({value}) - length(replace({value}, '/', '')) = {slashes})"


def _ranges_ordered(body: str) -> bool:
    return all(body[i - 1] <= body[i + 1] for i, ch in enumerate(body) if ch == "-")
