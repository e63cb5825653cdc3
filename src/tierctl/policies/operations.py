"""The policy file's operational sections: ``daemon``, ``retries``, ``alerts``, ``metrics``,
``executor``.

```yaml
daemon:  {timezone: Europe/Paris, error_budget: 0.2, jobs: 8}
retries: {attempts: 4, base_delay: 0.5, max_delay: 30}
alerts:  {on: [failure], command: "notify-send tierctl", webhook: "https://hooks.example/x"}
metrics: {textfile: /var/lib/node_exporter/textfile/tierctl.prom, listen: "127.0.0.1:9464"}
executor: dask://scheduler:8786   # where apply runs copies (docs/dask.md); default: local
```

They shape how runs go, never what a plan contains, so they are not part of the config
fingerprint. Problems are reported through the loader's validator, located.
"""

from __future__ import annotations

import os
from typing import Any, Protocol
from urllib.parse import urlsplit

from tierctl.policies.model import AlertSettings, DaemonSettings, MetricsSettings, RetrySettings

DAEMON_KEYS = ("timezone", "error_budget", "jobs")
RETRY_KEYS = ("attempts", "base_delay", "max_delay")
ALERT_KEYS = ("on", "command", "webhook", "timeout")
ALERT_EVENTS = ("failure", "success", "interrupted")
METRICS_KEYS = ("textfile", "listen")

Path = tuple[str | int, ...]


class Validator(Protocol):
    base_dir: str

    def problem(self, where: Path, message: str, hint: str = "", *, key: bool = False) -> None: ...
    def mapping(self, value: Any, where: Path, allowed: tuple[str, ...], what: str) -> dict[str, Any]: ...


def parse(v: Validator, top: dict[str, Any]) -> dict[str, Any]:
    """Config field name -> parsed settings, for the sections present."""
    out: dict[str, Any] = {}
    if top.get("daemon") is not None:
        out["daemon"] = daemon(v, top["daemon"])
    if top.get("retries") is not None:
        out["retries"] = retries(v, top["retries"])
    if top.get("alerts") is not None:
        out["alerts"] = alerts(v, top["alerts"])
    if top.get("metrics") is not None:
        out["metrics"] = metrics(v, top["metrics"])
    if top.get("executor") is not None:
        out["executor"] = executor(v, top["executor"])
    return out


def _number(
    v: Validator,
    spec: dict[str, Any],
    name: str,
    where: Path,
    default: float,
    *,
    low: float,
    high: float,
    integer: bool = False,
) -> Any:
    value = spec.get(name, default)
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "a whole number" if integer else "a number"
        v.problem((*where, name), f"{name} must be {kind} from {low:g} to {high:g}, got {value!r}")
        return default
    return value


def daemon(v: Validator, value: Any) -> DaemonSettings:
    where: Path = ("daemon",)
    spec = v.mapping(value, where, DAEMON_KEYS, "daemon")
    defaults = DaemonSettings()
    timezone = spec.get("timezone", defaults.timezone)
    from tierctl.schedule import zone

    try:
        zone(str(timezone))
    except ValueError:
        v.problem((*where, "timezone"), f"unknown time zone {timezone!r}", "an IANA name: UTC, Europe/Paris")
        timezone = defaults.timezone
    budget = spec.get("error_budget", defaults.error_budget)
    if budget is not None:
        budget = _number(v, spec, "error_budget", where, 0.2, low=0.0, high=1.0)
    jobs = _number(v, spec, "jobs", where, defaults.jobs, low=1, high=256, integer=True)
    return DaemonSettings(str(timezone), budget, jobs)


def retries(v: Validator, value: Any) -> RetrySettings:
    where: Path = ("retries",)
    spec = v.mapping(value, where, RETRY_KEYS, "retries")
    d = RetrySettings()
    attempts = _number(v, spec, "attempts", where, d.attempts, low=1, high=100, integer=True)
    base = _number(v, spec, "base_delay", where, d.base_delay, low=0.0, high=3600.0)
    cap = _number(v, spec, "max_delay", where, d.max_delay, low=0.0, high=86400.0)
    if cap < base:
        v.problem((*where, "max_delay"), "max_delay must be at least base_delay")
    return RetrySettings(attempts, float(base), float(cap))


def alerts(v: Validator, value: Any) -> AlertSettings:
    where: Path = ("alerts",)
    spec = v.mapping(value, where, ALERT_KEYS, "alerts")
    d = AlertSettings()
    on = spec.get("on", list(d.on))
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not all(isinstance(e, str) and e in ALERT_EVENTS for e in on):
        v.problem(
            (*where, "on"), f"on must list events among: {', '.join(ALERT_EVENTS)}", "e.g. on: [failure]"
        )
        on = list(d.on)
    command, webhook = spec.get("command"), spec.get("webhook")
    if command is not None and (not isinstance(command, str) or not command.strip()):
        v.problem((*where, "command"), "command must be a non-empty string (run by /bin/sh)")
    if webhook is not None:
        parts = urlsplit(str(webhook))
        if not isinstance(webhook, str) or parts.scheme not in ("http", "https") or not parts.netloc:
            v.problem((*where, "webhook"), f"webhook must be an http(s) URL, got {webhook!r}")
    if command is None and webhook is None:
        v.problem(
            where, "alerts needs a command or a webhook", 'e.g. webhook: "https://hooks.example/tierctl"'
        )
    timeout = _number(v, spec, "timeout", where, d.timeout, low=0.1, high=600.0)
    return AlertSettings(tuple(dict.fromkeys(on)), command, webhook, float(timeout))


def metrics(v: Validator, value: Any) -> MetricsSettings:
    where: Path = ("metrics",)
    spec = v.mapping(value, where, METRICS_KEYS, "metrics")
    textfile = spec.get("textfile")
    if textfile is not None:
        if not isinstance(textfile, str) or not textfile.strip():
            v.problem((*where, "textfile"), "textfile must be a path")
            textfile = None
        else:
            textfile = os.path.join(v.base_dir, os.path.expanduser(textfile))
    listen = spec.get("listen")
    if listen is not None:
        try:
            parse_address(str(listen))
        except ValueError as exc:
            v.problem((*where, "listen"), str(exc), 'e.g. listen: "127.0.0.1:9464"')
            listen = None
    return MetricsSettings(textfile, None if listen is None else str(listen))


EXECUTOR_HINT = "use `local`, or a Dask scheduler: dask://HOST:8786 (also tcp://HOST:PORT, tls://HOST:PORT)"
DASK_SCHEDULER_PORT = 8786
_DASK_SCHEMES = {"dask": "tcp", "tcp": "tcp", "tls": "tls"}


def executor(v: Validator, value: Any) -> str:
    """``executor: dask://scheduler:8786``: where apply (and the daemon) run units."""
    try:
        if not isinstance(value, str):
            raise ValueError(f"executor must be a string, got {value!r}")
        return executor_address(value)
    except ValueError as exc:
        v.problem(("executor",), str(exc), EXECUTOR_HINT)
        return "local"


def executor_address(text: str) -> str:
    """``local``, or a Dask scheduler address as dask's Client takes it: ``dask://HOST[:PORT]``
    and ``tcp://`` become ``tcp://HOST:PORT`` (port 8786 by default), ``tls://`` stays TLS.
    ValueError says what is wrong."""
    text = text.strip()
    if text.lower() == "local":
        return "local"
    parts = urlsplit(text)
    scheme = _DASK_SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"unknown executor {text!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"executor {text!r}: a scheduler address is only HOST:PORT")
    try:
        port = parts.port or DASK_SCHEDULER_PORT
    except ValueError:
        raise ValueError(f"executor {text!r}: bad port") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"executor {text!r}: no host")
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def parse_address(text: str) -> tuple[str, int]:
    """``host:port`` or ``:port`` (loopback) -> (host, port); ValueError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address must be HOST:PORT, got {text!r}")
    return (host.strip("[]") or "127.0.0.1"), int(port)
