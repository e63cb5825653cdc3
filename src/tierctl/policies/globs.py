"""Path globs over keys: ``*`` and ``?`` stay inside one segment, ``**`` spans segments."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache


@lru_cache(maxsize=512)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(ch))
                i += 1
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable glob (a character class such as ``[z-a]``), or None."""
    try:
        glob_to_regex(pattern)
    except re.error as exc:
        return f"bad glob {pattern!r}: {exc.msg}"
    return None


def matches(path: str, pattern: str) -> bool:
    return glob_to_regex(pattern).match(path) is not None


def selected(path: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True if ``path`` matches some include (or there are none) and no exclude."""
    if include and not any(matches(path, p) for p in include):
        return False
    return not any(matches(path, p) for p in exclude)
