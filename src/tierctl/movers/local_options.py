"""The options of a local (``file://``) tier, checked as :class:`~.local.LocalMover` checks
them, without building the mover (the policy loader's offline check, see the registry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tierctl.movers.local import KNOWN_OPTIONS
from tierctl.movers.options import boolean_option, reject_unknown


def parse(options: Mapping[str, Any], *, url: str) -> None:
    reject_unknown(options, KNOWN_OPTIONS, url=url)
    if options.get("read_back") is not None:
        boolean_option(options["read_back"], "read_back", url)
