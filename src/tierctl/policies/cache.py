"""The policy file's ``cache:`` section: the read-through cache of ``tier://`` reads.

```yaml
cache:
  tier: nvme-cache        # a local tier (file:// or a path), used by nothing else
  max_size: 200GiB        # least recently read objects are evicted beyond this
  from: [gcs, glacier]    # reads from these tiers are cached (default: every remote tier)
```

Problems are reported through the loader's validator, located. See docs/tierfs.md.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Any, Protocol

from tierctl.policies.model import CacheSettings, Policy, Tier
from tierctl.policies.units import parse_size

CACHE_KEYS = ("tier", "max_size", "from", "description")

Path = tuple[str | int, ...]


class Validator(Protocol):
    def problem(self, where: Path, message: str, hint: str = "", *, key: bool = False) -> None: ...
    def mapping(self, value: Any, where: Path, allowed: tuple[str, ...], what: str) -> dict[str, Any]: ...


def is_local(tier: Tier) -> bool:
    return tier.url.startswith("file://")


def parse(
    v: Validator, value: Any, tiers: dict[str, Tier], policies: tuple[Policy, ...]
) -> CacheSettings | None:
    where: Path = ("cache",)
    if not isinstance(value, dict):
        v.problem(where, "cache must be a mapping", "e.g. cache: {tier: nvme-cache, max_size: 100GiB}")
        return None
    spec = v.mapping(value, where, CACHE_KEYS, "cache")
    name = _tier_name(v, spec.get("tier"), (*where, "tier"), tiers)
    max_size = _max_size(v, spec.get("max_size"), (*where, "max_size"))
    if name is None or max_size is None:
        return None
    sources = _sources(v, spec.get("from"), (*where, "from"), tiers, name)
    if sources is None:
        return None
    for i, policy in enumerate(policies):
        for rule in policy.rules:
            among = rule.copies.among if rule.copies is not None else ()
            if name in (rule.place or ()) or name in among:
                v.problem(
                    ("policies", i, "rules", rule.index - 1),
                    f"policy {policy.name!r} {rule.describe()} places objects on {name!r}, the cache tier",
                    "the cache fills itself from tier:// reads; place objects on another tier",
                )
    return CacheSettings(name, max_size, sources)


def _tier_name(v: Validator, value: Any, where: Path, tiers: dict[str, Tier]) -> str | None:
    if not isinstance(value, str) or not value:
        v.problem(where, "cache needs `tier: NAME`, a local tier to keep read copies on")
        return None
    if value not in tiers:
        close = get_close_matches(value, list(tiers), n=1)
        v.problem(where, f"unknown tier {value!r}", f"did you mean {close[0]!r}?" if close else "")
        return None
    if not is_local(tiers[value]):
        v.problem(
            where,
            f"the cache tier {value!r} must be a local tier, not {tiers[value].url}",
            "a cached read is served from this process's disk; use a file:// URL or a path",
        )
        return None
    return value


def _max_size(v: Validator, value: Any, where: Path) -> int | None:
    if value is None:
        v.problem(where, "cache needs `max_size`", "e.g. max_size: 100GiB")
        return None
    try:
        size = value if isinstance(value, int) and not isinstance(value, bool) else parse_size(str(value))
    except ValueError as exc:
        v.problem(where, str(exc))
        return None
    if size <= 0:
        v.problem(where, f"max_size must be more than 0 bytes, got {value!r}")
        return None
    return size


def _sources(
    v: Validator, value: Any, where: Path, tiers: dict[str, Tier], cache_tier: str
) -> tuple[str, ...] | None:
    if value is None:
        return tuple(n for n, t in tiers.items() if n != cache_tier and not is_local(t))
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        v.problem(where, "from must be a list of tier names", "e.g. from: [gcs, glacier]")
        return None
    ok = True
    for name in names:
        if name == cache_tier:
            v.problem(where, f"the cache tier {name!r} cannot be one of the tiers it caches")
            ok = False
        elif name not in tiers:
            close = get_close_matches(name, list(tiers), n=1)
            v.problem(where, f"unknown tier {name!r}", f"did you mean {close[0]!r}?" if close else "")
            ok = False
    return tuple(dict.fromkeys(names)) if ok else None
