"""Per-tier options of object-store movers, with credentials kept out of sight.

A tier's ``options:`` mapping (policy file) reaches the mover constructor as keyword
arguments. Strings may hold ``${NAME}`` references, expanded from the environment when the
mover is built, so a policy file (and a plan made from it) never holds a secret.
Credential values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show them;
nothing in tierctl formats a :class:`StoreOptions` into a message except through its
``repr``, which names which credentials are set, not their values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tierctl.errors import ConfigError

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# option name -> what it is; ``key``/``secret``/``token`` are credentials.
KNOWN_OPTIONS = {
    "endpoint_url": "the store's API endpoint (S3-compatible stores, emulators)",
    "region": "the bucket's region",
    "profile": "a named profile (AWS shared config / credentials files)",
    "requester_pays": "charge requests to the caller's account",
    "max_connections": "concurrent connections to the store",
    "key": "access key id (S3)",
    "secret": "secret access key (S3)",
    "session_token": "session token (S3 temporary credentials)",
    "token": "GCS credentials: a service-account JSON path, 'anon', 'google_default', ...",
    "project": "GCS project",
    "part_size": "multipart upload part size in bytes (S3 minimum 5 MiB)",
    "connect_timeout": "seconds to wait for a connection to the store (S3)",
    "read_timeout": "seconds to wait for the store's answer before retrying (S3)",
    "provider": "rclone S3 provider name (AWS, Minio, Other, ...)",
    "remote": "rclone: an existing remote name from rclone's config instead of tier options",
}
CREDENTIALS = ("key", "secret", "session_token", "token")


class Secret:
    """A credential value; never shown by ``repr``/``str``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def expand_references(value: str, *, option: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace ``${NAME}`` with the environment variable NAME (``$$`` is a literal ``$``).

    A missing variable is a :class:`ConfigError` naming the variable, never its neighbours'
    values.
    """
    env = os.environ if environ is None else environ

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        if name not in env:
            raise ConfigError(
                f"option {option!r} refers to ${{{name}}}, which is not set in the environment",
                hint=f"export {name}=... before running tierctl",
            )
        return env[name]

    return _REFERENCE.sub(substitute, value)


@dataclass(frozen=True, repr=False)
class StoreOptions:
    """Validated options of one object-store tier."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    requester_pays: bool = False
    max_connections: int = 16
    key: Secret | None = None
    secret: Secret | None = None
    session_token: Secret | None = None
    token: Secret | None = None
    project: str | None = None
    part_size: int | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    provider: str | None = None
    remote: str | None = None

    @classmethod
    def parse(cls, options: Mapping[str, Any], *, url: str) -> StoreOptions:
        reject_unknown(options, KNOWN_OPTIONS, url=url)
        values: dict[str, Any] = {}
        for name, raw in options.items():
            value = expand_references(raw, option=name) if isinstance(raw, str) else raw
            if name in CREDENTIALS:
                if value is None or value == "":
                    continue
                if not isinstance(value, str):
                    raise ConfigError(
                        f"{url}: option {name!r} must be a string",
                        hint=f'quote it, or refer to an environment variable: {name}: "${{NAME}}"',
                    )
                values[name] = Secret(value)
            elif name == "requester_pays":
                values[name] = boolean_option(value, name, url)
            elif name in ("max_connections", "part_size"):
                values[name] = positive_int_option(value, name, url)
            elif name in ("connect_timeout", "read_timeout"):
                values[name] = positive_number_option(value, name, url)
            elif value is not None:
                values[name] = str(value)
        return cls(**values)

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value is False or (f.name == "max_connections" and value == 16):
                continue
            shown.append(f"{f.name}=***" if f.name in CREDENTIALS else f"{f.name}={value!r}")
        return f"StoreOptions({', '.join(shown)})"

    def reveal(self, name: str) -> str | None:
        value = getattr(self, name)
        return value.reveal() if isinstance(value, Secret) else value


def reject_unknown(options: Mapping[str, Any], known: Iterable[str], *, url: str) -> None:
    """A tier's options must all be ones its mover knows (a typo is not silently ignored)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(
            f"{url}: unknown option(s) {', '.join(unknown)}",
            hint=f"known options: {', '.join(sorted(known))}",
        )


BOOLEAN_WORDS = ("true", "yes", "1", "false", "no", "0")


def boolean_option(value: Any, name: str, url: str) -> bool:
    """A tier option that is true or false (YAML booleans, or yes/no/1/0 in a string)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in BOOLEAN_WORDS:
        return value.lower() in ("true", "yes", "1")
    raise ConfigError(
        f"{url}: option {name!r} must be true or false", hint=f"got {value!r}; write {name}: true or false"
    )


def positive_int_option(value: Any, name: str, url: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0 or isinstance(value, bool):
        raise ConfigError(f"{url}: option {name!r} must be a positive whole number", hint=f"got {value!r}")
    return number


def positive_number_option(value: Any, name: str, url: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0 or number == float("inf") or isinstance(value, bool):
        raise ConfigError(
            f"{url}: option {name!r} must be a positive number of seconds",
            hint=f"got {value!r}, e.g. {name}: 30",
        )
    return number
