"""Tell someone about a run: a shell command and/or a JSON POST to a webhook.

An alert that fails (command exits non-zero or times out, webhook unreachable) is logged
and never fails the run it is about.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import urllib.request
from typing import Any

from tierctl.policies.model import AlertSettings

log = logging.getLogger("tierctl.alerts")


def event_of(outcome: str) -> str:
    """The alert event an outcome belongs to: success, failure or interrupted."""
    if outcome == "ok":
        return "success"
    if outcome == "interrupted":
        return "interrupted"
    return "failure"


def send(settings: AlertSettings, payload: dict[str, Any]) -> list[str]:
    """Send ``payload`` if its event is wanted; returns what failed (also logged)."""
    event = payload.get("event") or event_of(str(payload.get("outcome")))
    if event not in settings.on:
        return []
    body = json.dumps({**payload, "event": event}, sort_keys=True).encode()
    failures: list[str] = []
    if settings.command:
        failure = _run_command(settings, payload, body, event)
        if failure:
            failures.append(failure)
    if settings.webhook:
        failure = _post(settings, body)
        if failure:
            failures.append(failure)
    for failure in failures:
        log.warning("alert failed: %s", failure)
    return failures


def _run_command(settings: AlertSettings, payload: dict[str, Any], body: bytes, event: str) -> str | None:
    assert settings.command is not None
    env = {
        **os.environ,
        "TIERCTL_EVENT": event,
        "TIERCTL_OUTCOME": str(payload.get("outcome", "")),
        "TIERCTL_POLICY": str(payload.get("policy", "")),
        "TIERCTL_RUN_ID": str(payload.get("run") or ""),
    }
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", settings.command],
            input=body,
            env=env,
            capture_output=True,
            timeout=settings.timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"command {settings.command!r}: {exc}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip()[-300:]
        return f"command {settings.command!r} exited {done.returncode}: {tail}"
    return None


def _post(settings: AlertSettings, body: bytes) -> str | None:
    assert settings.webhook is not None
    request = urllib.request.Request(
        settings.webhook,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "tierctl"},
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout) as response:
            response.read(1024)
    except Exception as exc:  # any failure of the alert path is logged, never raised
        reason = str(exc).replace(settings.webhook, redact_url(settings.webhook))
        return f"webhook {redact_url(settings.webhook)}: {reason}"
    return None


def redact_url(url: str) -> str:
    """``scheme://host[:port]/...``: webhook URLs often carry a token in their path or
    query (Slack, Teams), so logs and messages name only where they point."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."
