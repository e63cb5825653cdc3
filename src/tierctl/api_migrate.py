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

The setting up (which policy file and index, the migration's policy) is
:mod:`tierctl.api_migrate_setup`; the report and its tallying are :mod:`tierctl.api_migrate_report`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from tierctl import api
from tierctl.api_migrate_report import MigrateReport, Tally, Tallying
from tierctl.api_migrate_setup import (
    DESTINATION,
    SOURCE,
    MigrateOptions,
    Setup,
    as_url,
    prepare,
    state_dir,
)
from tierctl.api_preserve import PreservingMover, plan_preservation, reapply
from tierctl.executor import ApplyOptions, Events, NoEvents, execute
from tierctl.index import Index, journal
from tierctl.model import ObjectSnapshot, Placement
from tierctl.movers.base import Mover
from tierctl.plan import Action, Plan
from tierctl.planner import make_plan
from tierctl.policies.evaluate import current_version
from tierctl.policies.globs import selected

# The public API of `tierctl migrate`: callers import it from here, whichever module defines it.
__all__ = [
    "DESTINATION",
    "SOURCE",
    "MigrateOptions",
    "MigrateReport",
    "Setup",
    "Tally",
    "as_url",
    "migrate",
    "prepare",
    "state_dir",
]


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
        tally = Tallying(report, events or NoEvents(), setup.source)
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
