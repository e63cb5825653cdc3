"""``tierctl migrate SRC DST``: a one-dataset policy run by the ordinary engine.

A migration is a policy, not a second engine: two tiers (``source``, ``destination``), one
dataset homed on the source, one rule ``place: [source, destination]`` (``[destination]``
with ``delete_source``). Each run scans both tiers into the index (streamed merge), plans
with the pure planner and applies with the executor, which verifies every copy with a
stream digest, skips objects that changed since planning, makes copies durable before a
source is deleted, and after a kill finds and verifies copies it made but did not record.

Where the index lives
    When the policy file (``-c``, ``$TIERCTL_CONFIG`` or ``./policies.yaml``) declares
    tiers whose URLs are SRC and DST, the migration uses that file's index and tier names,
    so ``tierctl where`` and the daemon see it like any policy. Otherwise it writes its own
    policy file and index to ``$XDG_STATE_HOME/tierctl/`` (``~/.local/state/tierctl/``),
    named ``migrate-<dataset>-<hash of SRC and DST>``, or to ``--index``'s folder;
    ``tierctl -c <that file> where KEY`` answers for it, and ``tierctl -c <that file>
    daemon`` would keep it in sync.

Migration-only rules, applied to what the planner sees (the planner stays general):
    the source is the truth. Objects only on the destination are left alone, never copied
    back; an object whose destination copy is newer than the source is a conflict,
    reported and not touched on either side. A destination copy that matches the source
    by size and mtime but that tierctl never verified (a run killed between upload and
    record, or data copied by another tool) is verified by hashing both sides before it
    counts as migrated; ``checksum`` re-verifies every matching copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tierctl import api
from tierctl.api_preserve import AttributeOutcome, Preservation, PreservingMover, plan_preservation, reapply
from tierctl.errors import ConfigError, UnknownName
from tierctl.executor import ActionResult, ApplyOptions, Events, NoEvents, execute
from tierctl.index import Index, journal
from tierctl.model import ObjectSnapshot, Placement
from tierctl.movers.base import Mover
from tierctl.plan import Action, Plan
from tierctl.planner import make_plan
from tierctl.policies.evaluate import current_version
from tierctl.policies.globs import selected
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


@dataclass
class Tally:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class MigrateReport:
    source: str
    destination: str
    dataset: str
    index_path: str
    policy_path: str
    dry_run: bool = False
    listed: Tally = field(default_factory=Tally)  # selected source files
    copied: Tally = field(default_factory=Tally)
    verified: Tally = field(default_factory=Tally)  # existing destination copies proven equal
    up_to_date: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    skipped: Tally = field(default_factory=Tally)  # changed since planned, or a conflict at the target
    deleted_from_source: Tally = field(default_factory=Tally)
    planned_copies: Tally = field(default_factory=Tally)
    conflicts: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (key, status, why)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: int | None = None
    interrupted: bool = False
    plan: Plan | None = None  # kept for a dry run, to be shown
    preservation: Preservation | None = None
    attributes: AttributeOutcome = field(default_factory=AttributeOutcome)

    @property
    def throughput(self) -> float:
        return self.copied.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.failed.files
            or self.skipped.files
            or self.conflicts
            or self.interrupted
            or self.attributes.not_preserved
        )

    def to_dict(self) -> dict[str, Any]:
        tallies = (
            "listed",
            "planned_copies",
            "copied",
            "verified",
            "up_to_date",
            "failed",
            "skipped",
            "deleted_from_source",
        )
        return {
            "source": self.source,
            "destination": self.destination,
            "dataset": self.dataset,
            "index": self.index_path,
            "policy_file": self.policy_path,
            "dry_run": self.dry_run,
            "run": self.run_id,
            **{name: {"files": t.files, "bytes": t.bytes} for name in tallies if (t := getattr(self, name))},
            "conflicts": self.conflicts,
            "problems": [{"key": k, "status": s, "error": e} for k, s, e in self.problems],
            "warnings": self.warnings,
            **({"preserve": self.preservation.to_dict(self.attributes)} if self.preservation else {}),
            "seconds": round(self.seconds, 3),
            "bytes_per_second": round(self.throughput),
            "interrupted": self.interrupted,
            "ok": self.ok,
        }


# -- setting up: which config, which index ------------------------------------------------------
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


# -- one run ------------------------------------------------------------------------------------
class _Selection:
    """Streams the index's objects to the planner, applying the migration-only rules and
    counting what the report needs (memory: the conflicts and verifications only)."""

    def __init__(self, setup: Setup, opts: MigrateOptions, report: MigrateReport) -> None:
        self.setup = setup
        self.opts = opts
        self.report = report
        self.prefix = setup.config.datasets[setup.dataset].prefix
        policy = setup.config.policies[0]
        self.include, self.exclude = policy.include, policy.exclude
        self.tier_order = {setup.source: 0, setup.destination: 1}
        self.to_verify: list[tuple[ObjectSnapshot, Placement]] = []

    def __call__(self, objects: Iterable[ObjectSnapshot]) -> Iterator[ObjectSnapshot]:
        for obj in objects:
            by_tier = {p.tier: p for p in obj.placements}
            source = by_tier.get(self.setup.source)
            if source is None:
                continue  # only on the destination: left alone
            if not selected(obj.key[len(self.prefix) :], self.include, self.exclude):
                continue
            self.report.listed.add(source.size)
            target = by_tier.get(self.setup.destination)
            if target is not None and not target.same_content(source):
                version = current_version((source, target), self.tier_order)
                if version.tier == self.setup.destination:
                    self.report.conflicts.append(obj.key)
                    continue  # the destination is newer: not ours to overwrite, nor to delete
            elif target is not None and not self.opts.delete_source:
                if target.verified_at is None or self.opts.checksum:
                    self.to_verify.append((obj, source))
                else:
                    self.report.up_to_date.add(source.size)
            yield obj


class _Tallying:
    """Counts finished actions by kind for the report, then passes them on."""

    def __init__(self, report: MigrateReport, inner: Events, source: str) -> None:
        self.report = report
        self.inner = inner
        self.source = source

    def started(self, objects: int, total_bytes: int) -> None:
        self.inner.started(objects, total_bytes)

    def advanced(self, nbytes: int) -> None:
        self.inner.advanced(nbytes)

    def finished_object(self, results: list[ActionResult]) -> None:
        r = self.report
        for result in results:
            a = result.action
            if result.status == "done":
                if a.op == "copy":
                    r.copied.add(result.bytes)
                elif a.op == "verify":
                    r.verified.add(a.size)
                elif a.op == "delete" and a.target == self.source:
                    r.deleted_from_source.add(a.size)
            else:
                (r.failed if result.status == "failed" else r.skipped).add(a.size)
                r.problems.append((a.key, f"{a.op} {result.status}", result.error or ""))
        self.inner.finished_object(results)


def migrate(opts: MigrateOptions, *, events: Events | None = None, now: float | None = None) -> MigrateReport:
    """Scan, plan and (unless ``dry_run``) apply one migration run; see the module docs."""
    setup = prepare(opts)
    config = setup.config
    report = MigrateReport(
        as_url(opts.source),
        as_url(opts.destination),
        setup.dataset,
        config.index_path,
        setup.policy_path,
        opts.dry_run,
    )
    started = time.monotonic()
    now = time.time() if now is None else now
    tiers = [setup.source, setup.destination]
    with api.lock_index(config), api.open_index(config) as index, api.movers_for(config, tiers) as movers:
        report.preservation = plan_preservation(
            opts.preserve, movers[setup.source], movers[setup.destination], report.warnings
        )
        journal.close_abandoned_runs(index)
        _scan(index, setup, movers, report, now)
        plan = _plan(index, setup, opts, report, now)
        if opts.dry_run:
            report.plan = plan
            _reapply(setup, movers, report, dry_run=True)
            report.seconds = time.monotonic() - started
            return report
        if report.preservation.attributes:
            movers = {
                **movers,
                setup.destination: PreservingMover(
                    movers[setup.destination], movers[setup.source], report.preservation, report.attributes
                ),
            }
        if opts.bandwidth:
            from tierctl.movers.ratelimit import RateLimitedMover

            movers = {**movers, setup.source: RateLimitedMover(movers[setup.source], opts.bandwidth)}
        apply_options = ApplyOptions(
            jobs=opts.jobs,
            digest=config.digest_algorithm,
            trigger="migrate",
            policy=config.policies[0].name,
            retry=api.retry_backoff(config),
        )
        tally = _Tallying(report, events or NoEvents(), setup.source)
        try:
            applied = execute(plan, movers, index, apply_options, tally)
            report.run_id = applied.run_id
            report.interrupted = applied.interrupted
            if not report.interrupted:
                _reapply(setup, movers, report, dry_run=False)
        finally:
            report.seconds = time.monotonic() - started
    return report


def _reapply(setup: Setup, movers: dict[str, Mover], report: MigrateReport, *, dry_run: bool) -> None:
    """Attributes changed on the source of objects whose content is up to date (see
    tierctl.api_preserve.reapply); objects in conflict, failed or skipped are left alone."""
    if report.preservation is None or not report.preservation.native_attributes:
        return
    prefix = setup.config.datasets[setup.dataset].prefix
    policy = setup.config.policies[0]
    left_alone = set(report.conflicts) | {key for key, _, _ in report.problems}
    if dry_run and report.plan is not None:  # copied in this run: their attributes come along
        left_alone.update(a.key for a in report.plan.actions if a.op == "copy")

    def wanted(key: str) -> bool:
        return key not in left_alone and selected(key[len(prefix) :], policy.include, policy.exclude)

    source, destination = movers[setup.source], movers[setup.destination]
    outcome, warnings = report.attributes, report.warnings
    reapply(source, destination, prefix, report.preservation, outcome, warnings, wanted, dry_run=dry_run)


def _scan(index: Index, setup: Setup, movers: dict[str, Mover], report: MigrateReport, now: float) -> None:
    prefix = setup.config.datasets[setup.dataset].prefix
    for tier in (setup.source, setup.destination):
        mover = movers[tier]

        def known(key: str, tier: str = tier) -> Any:
            return index.known_entry(setup.dataset, tier, key)

        scanned = index.scan_tier(setup.dataset, tier, prefix, mover.list(prefix, known=known), now)
        report.warnings.extend(scanned.errors)
        report.warnings.extend(
            f"skipped unsafe or non-regular key {k!r} on {tier}" for k in mover.skipped_keys()
        )


def _plan(index: Index, setup: Setup, opts: MigrateOptions, report: MigrateReport, now: float) -> Plan:
    selection = _Selection(setup, opts, report)
    plan = make_plan(setup.config, selection(index.objects(setup.dataset)), now)
    next_id = max((a.id for a in plan.actions), default=0) + 1
    reason = "migration: a destination copy tierctl has not verified" + (
        " (--checksum)" if opts.checksum else ""
    )
    for obj, source in selection.to_verify:
        plan.actions.append(
            Action(
                id=next_id,
                op="verify",
                dataset=obj.dataset,
                key=obj.key,
                source=setup.source,
                target=setup.destination,
                size=source.size,
                mtime=source.mtime,
                checksum=source.checksum,
                reason=reason,
                policy=setup.config.policies[0].name,
            )
        )
        next_id += 1
    for action in plan.actions:
        if action.op == "copy":
            report.planned_copies.add(action.size)
    return plan
