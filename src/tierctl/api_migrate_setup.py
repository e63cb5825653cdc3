"""Setting up ``tierctl migrate SRC DST``: which policy file, which index, which tier names.

When the policy file (``-c``, ``$TIERCTL_CONFIG`` or ``./policies.yaml``) declares tiers whose
URLs are SRC and DST, the migration is that file's dataset, index and tier names
(:func:`_from_policy_file`); otherwise it gets its own policy file and index under
:func:`state_dir` (or ``--index``'s folder), written only when the run is not a dry run. Either
way the migration is expressed as a policy file (:func:`_policy_yaml`) and parsed by the
ordinary loader, so the run is an ordinary policy run (:mod:`tierctl.api_migrate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any

from tierctl import api
from tierctl.errors import ConfigError, UnknownName
from tierctl.policies.loader import parse_config
from tierctl.policies.model import Config

SOURCE, DESTINATION = "source", "destination"


@dataclass(frozen=True)
class MigrateOptions:
    """Everything that shapes one migration run."""

    source: str
    destination: str
    dataset: str | None = None
    jobs: int = 8
    bandwidth: float | None = None  # bytes/s read from the source, all jobs together
    dry_run: bool = False
    delete_source: bool = False
    checksum: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    source_options: dict[str, Any] = field(default_factory=dict)
    destination_options: dict[str, Any] = field(default_factory=dict)
    config_path: str | None = None  # a policy file to look for matching tiers in
    index: str | None = None  # the migration's own index (standalone migrations)
    state_dir: str | None = None
    digest: str = "crc32c"
    preserve: tuple[str, ...] = ("mtime",)  # see tierctl.api_preserve.parse_preserve


@dataclass(frozen=True)
class Setup:
    config: Config
    dataset: str
    source: str  # tier names
    destination: str
    policy_path: str  # where the migration's policy lives (written for standalone runs)


def state_dir(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "tierctl")


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _dataset_name(opts: MigrateOptions) -> str:
    if opts.dataset:
        return opts.dataset
    tail = opts.source.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-.")
    return name or "migration"


def _policy_yaml(
    *,
    tiers: dict[str, dict[str, Any]],
    dataset: str,
    prefix: str,
    source: str,
    destination: str,
    opts: MigrateOptions,
    index: str | None,
) -> str:
    """The migration as a policy file (JSON is YAML): what runs now, and what a daemon runs."""
    place = [destination] if opts.delete_source else [source, destination]
    policy: dict[str, Any] = {
        "name": f"migrate-{dataset}",
        "dataset": dataset,
        "rules": [{"when": "true", "place": place}],
    }
    if opts.include:
        policy["include"] = list(opts.include)
    if opts.exclude:
        policy["exclude"] = list(opts.exclude)
    doc: dict[str, Any] = {
        "version": 1,
        "digest": opts.digest,
        "tiers": {name: {key: value for key, value in tier.items() if value} for name, tier in tiers.items()},
        "datasets": {dataset: {"prefix": prefix, "home": source}},
        "policies": [policy],
    }
    if index:
        doc["index"] = index
    return "# written by `tierctl migrate`; usable with -c for where, plan, apply and daemon\n" + json.dumps(
        doc, indent=2
    )


def as_url(location: str) -> str:
    """A URL as given, or a local path as an absolute ``file://`` URL."""
    if "://" in location:
        return location.rstrip("/")
    return "file://" + os.path.abspath(os.path.expanduser(location))


def prepare(opts: MigrateOptions) -> Setup:
    """The migration's config: inside the policy file whose tiers are SRC and DST, or its own."""
    opts = replace(opts, source=as_url(opts.source), destination=as_url(opts.destination))
    matched = _from_policy_file(opts)
    if matched is not None:
        return matched
    dataset = _dataset_name(opts)
    digest = hashlib.sha256(f"{opts.source}\n{opts.destination}".encode()).hexdigest()[:10]
    name = f"migrate-{dataset}-{digest}"
    if opts.index:
        index_path = os.path.abspath(opts.index)
        folder = os.path.dirname(index_path)
    else:
        folder = state_dir(opts.state_dir)
        index_path = os.path.join(folder, f"{name}.db")
    policy_path = os.path.join(folder, f"{name}.yaml")
    text = _policy_yaml(
        tiers={
            SOURCE: {"url": opts.source, "options": opts.source_options},
            DESTINATION: {"url": opts.destination, "options": opts.destination_options},
        },
        dataset=dataset,
        prefix="",
        source=SOURCE,
        destination=DESTINATION,
        opts=opts,
        index=os.path.basename(index_path),
    )
    config = parse_config(text, policy_path, index_override=index_path)
    if not opts.dry_run:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        _write_private(policy_path, text)
    return Setup(config, dataset, SOURCE, DESTINATION, policy_path)


def _from_policy_file(opts: MigrateOptions) -> Setup | None:
    path = api.config_path(opts.config_path)
    if not os.path.exists(path):
        if opts.config_path:
            raise ConfigError(f"policy file not found: {path}")
        return None
    config = api.load(path)
    source = next((t for t in config.tiers.values() if _same_url(t.url, opts.source)), None)
    destination = next((t for t in config.tiers.values() if _same_url(t.url, opts.destination)), None)
    if source is None or destination is None:
        return None
    if opts.index:
        raise ConfigError(
            f"{config.path} declares tiers {source.name!r} and {destination.name!r} for these URLs;"
            " the migration uses that file's index",
            hint="drop --index, or use -c to point at another policy file",
        )
    candidates = [d for d in config.datasets.values() if opts.dataset in (None, d.name)]
    if opts.dataset is None:
        candidates = [d for d in candidates if d.home == source.name] or candidates
    if len(candidates) != 1:
        names = ", ".join(config.datasets) or "none"
        raise UnknownName(
            f"{config.path}: say which dataset this migration is for"
            if opts.dataset is None
            else f"{config.path} has no dataset {opts.dataset!r}",
            hint=f"--dataset NAME; datasets: {names}",
        )
    dataset = candidates[0]
    text = _policy_yaml(
        # The tiers as declared (mover, storage class, options), so the run uses the same movers.
        tiers={
            t.name: {
                "url": t.url,
                "mover": t.mover if t.mover != "auto" else None,
                "storage_class": t.storage_class,
                "options": t.options,
            }
            for t in (source, destination)
        },
        dataset=dataset.name,
        prefix=dataset.prefix,
        source=source.name,
        destination=destination.name,
        opts=replace(opts, digest=config.digest_algorithm),
        index=None,
    )
    migration = parse_config(text, config.path, index_override=config.index_path)
    migration = replace(migration, retries=config.retries)
    return Setup(migration, dataset.name, source.name, destination.name, config.path)


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
