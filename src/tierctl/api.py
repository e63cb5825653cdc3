"""The facade every entry point (CLI, daemon, tests) uses. No printing here."""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tierctl.errors import ConfigError, PlanFileError, UnknownName
from tierctl.index import Index
from tierctl.index import lock as index_lock
from tierctl.index.db import TierUsage
from tierctl.model import Entry, Placement, ScanReport
from tierctl.movers.base import Mover
from tierctl.movers.registry import TierTarget, open_mover
from tierctl.movers.retry import Backoff, RetryingMover
from tierctl.policies.loader import load_config
from tierctl.policies.model import Config
from tierctl.policies.operations import EXECUTOR_HINT, executor_address

# Planning, applying and the journal are imported by the functions that use them, so that
# `tierctl where`, `explain` and `--help` do not pay for them at start-up.
if TYPE_CHECKING:
    from distributed import Client

    from tierctl import cost
    from tierctl.executor import ApplyOptions, ApplyReport, Events
    from tierctl.explain import Explanation
    from tierctl.index import journal
    from tierctl.plan import Plan
    from tierctl.simulate import Simulation

DEFAULT_CONFIG = "policies.yaml"


def config_path(explicit: str | None) -> str:
    """-c/--config, else $TIERCTL_CONFIG, else ./policies.yaml."""
    return explicit or os.environ.get("TIERCTL_CONFIG") or DEFAULT_CONFIG


def load(path: str | None = None, *, index: str | None = None) -> Config:
    return load_config(config_path(path), index_override=index)


def open_index(config: Config, *, create: bool = True) -> Index:
    return Index.open(config.index_path, create=create)


@contextmanager
def movers_for(config: Config, tiers: set[str] | list[str] | None = None) -> Iterator[dict[str, Mover]]:
    names = list(config.tiers) if tiers is None else sorted(tiers)
    opened: dict[str, Mover] = {}
    try:
        for name in names:
            opened[name] = open_tier_mover(config, name)
        yield opened
    finally:
        for mover in opened.values():
            mover.close()


def open_tier_mover(config: Config, name: str) -> Mover:
    """The mover of tier ``name``, retrying as ``retries:`` says; the caller closes it."""
    tier = config.tiers[name]
    mover = open_mover(TierTarget(name, tier.url, tier.mover, tier.options))
    return RetryingMover(mover, retry_backoff(config))


def retry_backoff(config: Config) -> Backoff:
    r = config.retries
    return Backoff(r.attempts, r.base_delay, r.max_delay)


def lock_index(
    config: Config,
    *,
    wait: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
    on_wait: Callable[[index_lock.Holder | None], None] | None = None,
) -> AbstractContextManager[index_lock.Lock]:
    """The index's apply lock, held by every apply and daemon cycle (re-entrant in a process);
    raises IndexLocked naming the holder after ``wait`` seconds."""
    path = index_lock.lock_path(config.index_path)
    return index_lock.hold(path, wait=wait, should_stop=should_stop, on_wait=on_wait)


def _datasets(config: Config, names: list[str] | None) -> list[str]:
    if not names:
        return list(config.datasets)
    for name in names:
        if name not in config.datasets:
            raise UnknownName(
                f"unknown dataset {name!r}", hint=f"datasets: {', '.join(config.datasets) or 'none'}"
            )
    return names


# -- scan ---------------------------------------------------------------------------------
def scan(
    config: Config,
    datasets: list[str] | None = None,
    *,
    allow_empty: bool = False,
    now: float | None = None,
    refresh_metadata: bool = False,
) -> list[ScanReport]:
    """List every tier under each dataset's prefix and merge what is there into the index.

    Tags and user metadata are read only for datasets whose policies test ``tag.KEY`` /
    ``meta.KEY``, and (on S3) only for new or changed objects; ``refresh_metadata`` reads
    them for every object (S3 keeps an object's version when only its tags change)."""
    from tierctl import forked
    from tierctl.policies.evaluate import metadata_wanted

    now = time.time() if now is None else now
    reports: list[ScanReport] = []
    with open_index(config) as index, movers_for(config) as movers, contextlib.ExitStack() as walks:
        for name in _datasets(config, datasets):
            prefix = config.datasets[name].prefix
            wanted = metadata_wanted(config, name)
            # Plain files, no metadata wanted (local tiers): stat batches, no Entry per file.
            # Every such tier after the first is walked at once by a forked child, while
            # this process walks and merges the ones before it.
            plain = [
                tier
                for tier, mover in movers.items()
                if not wanted and len(config.store_group(tier)) == 1 and hasattr(mover, "stat_batches")
            ]
            local: dict[str, Any] = {tier: movers[tier] for tier in plain}  # LocalMover's own methods
            elsewhere = {
                tier: walks.enter_context(contextlib.closing(local[tier].stat_batches_elsewhere(prefix)))
                for tier in (plain[1:] if forked.AVAILABLE else [])
            }
            for tier, mover in movers.items():
                mover.want_metadata = wanted
                group = config.store_group(tier)
                if tier in plain:
                    batches = elsewhere[tier] if tier in elsewhere else local[tier].stat_batches(prefix)
                    report = index.scan_tier_stats(name, tier, prefix, batches, now, allow_empty=allow_empty)
                else:
                    known = functools.partial(index.known_entry, name, group)
                    if refresh_metadata and wanted:
                        known = functools.partial(_without_metadata, known)
                    entries = mover.list(prefix, known=known)
                    if len(group) > 1:
                        entries = (
                            e for e in entries if config.tier_for_class(group, e.storage_class) == tier
                        )
                    report = index.scan_tier(name, tier, prefix, entries, now, allow_empty=allow_empty)
                report.errors.extend(
                    f"skipped unsafe or non-regular key {k!r} on {tier}" for k in mover.skipped_keys()
                )
                reports.append(report)
    return reports


def _without_metadata(known: Callable[[str], Entry | None], key: str) -> Entry | None:
    entry = known(key)
    return None if entry is None else replace(entry, tags=None, metadata=None)


# -- plan and apply -------------------------------------------------------------------------
def plan(
    config: Config,
    datasets: list[str] | None = None,
    *,
    now: float | None = None,
    force: bool = False,
    allow_costly: bool = False,
) -> Plan:
    """Plan as of ``now`` (default: the clock); ``force`` lifts the policies' max_delete.
    The cost guard then drops copies and transitions that lose money (and the actions that
    wait for them) unless ``allow_costly``; ``plan.cost`` says what it costs (docs/cost.md)."""
    now = time.time() if now is None else now
    names = _datasets(config, datasets)
    from tierctl import cost  # not at import time: `tierctl where` and --help stay fast
    from tierctl.planner import make_plan
    from tierctl.policies.sqlfilter import Prefilter

    prices = cost.Prices(config)
    before = cost.StorageTally(prices)
    with open_index(config) as index:
        # Objects the index finds settled (SQL) never reach the planner; their placements
        # still count in the storage before the plan.
        prefilter = Prefilter(index, config, now, {tier: prices[tier].min_size for tier in config.tiers})
        objects = (obj for name in names for obj in prefilter.unsettled(name))
        made = make_plan(config, before.observe(objects), now, force=force, settled=prefilter.settled)
        before.add_totals(prefilter.settled_totals())
        history = {
            (dataset, key): obj
            for dataset, key in sorted(cost.needs_history(made, prices, guard=not allow_costly))
            for obj in index.objects(dataset, key)
            if obj.key == key
        }
    assessed = cost.assess(made, config, prices, before, history, now, guard=not allow_costly)
    made.cost = assessed.to_dict()
    made.index_path = os.path.abspath(config.index_path)
    made.written_at = time.time()
    return made


# A saved plan describes the stores as they were; past this age it is refused (the live
# preconditions would skip most of it anyway, and a reviewer approved another world).
PLAN_MAX_AGE = 7 * 86400.0


def load_plan(
    config: Config, path: str, *, max_age: float | None = PLAN_MAX_AGE, now: float | None = None
) -> Plan:
    """A saved plan, refused (:class:`PlanFileError`) if altered, of another format, made for
    another policy file or index, or written more than ``max_age`` seconds ago."""
    from tierctl.plan import Plan

    saved = Plan.load(path)
    fresh = "make a fresh plan with `tierctl plan -o FILE`"
    if saved.config_fingerprint != config.fingerprint():
        raise PlanFileError(
            f"{path} was made for a different policy file ({saved.config_path}) or an earlier version of it",
            hint=fresh,
        )
    if saved.index_path is not None and saved.index_path != os.path.abspath(config.index_path):
        raise PlanFileError(
            f"{path} was made from another index ({saved.index_path}),"
            f" not {os.path.abspath(config.index_path)}",
            hint=fresh,
        )
    now = time.time() if now is None else now
    if max_age is not None and saved.written_at is not None and now - saved.written_at > max_age:
        days = (now - saved.written_at) / 86400
        raise PlanFileError(
            f"{path} was written {days:.1f} days ago; plans older than {max_age / 86400:g} days are refused",
            hint=fresh,
        )
    return saved


def apply(
    config: Config,
    plan_: Plan,
    *,
    options: ApplyOptions | None = None,
    events: Events | None = None,
    wait: float = 0.0,
    executor: str | Client | None = None,
) -> ApplyReport:
    """Apply under the index's apply lock (waiting up to ``wait`` s for another apply).
    ``executor`` says where units run: ``local`` (threads here), a Dask scheduler address
    (``dask://HOST:8786``, ``tcp://``, ``tls://``) or a connected ``distributed.Client``;
    default: the policy file's ``executor:``."""
    from tierctl.executor import ApplyOptions, execute
    from tierctl.index import journal

    options = options or ApplyOptions(digest=config.digest_algorithm)
    if options.retry is None:
        options = replace(options, retry=retry_backoff(config))
    tiers = {a.target for a in plan_.actions} | {a.source for a in plan_.actions if a.source}
    tiers |= {t for a in plan_.actions for t in a.keep}
    unknown = tiers - set(config.tiers)
    if unknown:
        raise PlanFileError(f"the plan names tiers the policy file does not: {', '.join(sorted(unknown))}")
    where = resolve_executor(config.executor if executor is None else executor)
    if where == "local" or plan_.empty:
        with lock_index(config, wait=wait), open_index(config) as index:
            journal.close_abandoned_runs(index)
            # Tiers where interrupted runs left partial uploads are opened too: execute aborts them.
            tiers |= journal.partial_upload_tiers(index) & set(config.tiers)
            with movers_for(config, tiers) as movers:
                return execute(plan_, movers, index, options, events)
    from tierctl.executor_dask import dask_runner

    targets = {n: TierTarget(n, t.url, t.mover, t.options) for n, t in config.tiers.items() if n in tiers}
    with (
        dask_runner(where, targets, mover_retry=retry_backoff(config)) as runner,
        lock_index(config, wait=wait),
        open_index(config) as index,
    ):
        journal.close_abandoned_runs(index)
        # Units run on the cluster; this process opens only the tiers where interrupted runs
        # left partial uploads, for execute to abort them.
        with movers_for(config, journal.partial_upload_tiers(index) & set(config.tiers)) as cleanup:
            return execute(plan_, cleanup, index, options, events, runner=runner)


def run_steps(
    config: Config, run_id: int, *, key_prefix: str = "", everything: bool = False
) -> list[journal.ActionSteps]:
    """The actions of run ``run_id`` that got past "planned" (all with ``everything``), each
    with its steps from the journal, oldest first."""
    from tierctl.index import journal

    with open_index(config, create=False) as index:
        return journal.run_steps(index, run_id, key_prefix=key_prefix, everything=everything)


def resolve_executor(executor: str | Client) -> str | Client:
    """``local``, a normalized Dask scheduler address, or the given Client."""
    if not isinstance(executor, str):
        return executor
    try:
        return executor_address(executor)
    except ValueError as exc:
        raise ConfigError(str(exc), hint=EXECUTOR_HINT) from None


# -- where / ls / du --------------------------------------------------------------------------
@dataclass
class WhereResult:
    query: str
    kind: str  # object | prefix | dataset
    placements: list[Placement] = field(default_factory=list)
    usage: list[TierUsage] = field(default_factory=list)
    objects: int = 0


def where(config: Config, query: str) -> WhereResult:
    """An object's placements, or object/byte counts per tier for a dataset or prefix."""
    with open_index(config, create=False) as index:
        placements = index.placements(query)
        if placements:
            return WhereResult(query, "object", placements=placements, objects=1)
        if query in config.datasets:
            dataset = config.datasets[query]
            usage = index.usage(dataset.prefix, dataset=query)
            return WhereResult(
                query, "dataset", usage=usage, objects=index.object_count(dataset.prefix, query)
            )
        usage = index.usage(query)
        if usage:
            return WhereResult(query, "prefix", usage=usage, objects=index.object_count(query))
    raise UnknownName(
        f"nothing in the index matches {query!r}",
        hint="give a key, a key prefix or a dataset name; run `tierctl scan` if the index is stale",
    )


def du(config: Config) -> list[TierUsage]:
    with open_index(config, create=False) as index:
        return index.usage()


def du_cost(config: Config) -> cost.StorageTally:
    """Objects, bytes and monthly storage cost per dataset and tier, each tier priced by its
    cost model (every placement is read: minimum sizes and overheads are per object)."""
    from tierctl import cost

    tally = cost.StorageTally(cost.Prices(config))
    with open_index(config, create=False) as index:
        datasets = sorted({u.dataset for u in index.usage()})
        collections.deque(tally.observe(obj for d in datasets for obj in index.objects(d)), maxlen=0)
    return tally


def ls(
    config: Config, prefix: str = "", limit: int | None = None
) -> list[tuple[str, str, int, float, list[str]]]:
    if prefix in config.datasets:
        prefix = config.datasets[prefix].prefix
    with open_index(config, create=False) as index:
        return list(index.listing(prefix, limit))


# -- init ----------------------------------------------------------------------------------------
def init(path: str, *, force: bool = False) -> str:
    """Write the commented starter policy file; refuse to overwrite unless ``force``."""
    from importlib.resources import files

    if os.path.exists(path) and not force:
        raise ConfigError(
            f"{path} already exists", hint="pass --force to overwrite it, or -c to choose another path"
        )
    text = files("tierctl").joinpath("templates/starter.yaml").read_text(encoding="utf-8")
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return os.path.abspath(path)


# -- policies: validate, explain, simulate ------------------------------------------------------
@dataclass
class Validation:
    path: str
    problems: list[ConfigError]
    config: Config | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.config is None:
            return f"{self.path}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        c = self.config
        rules = sum(len(p.rules) for p in c.policies)
        return (
            f"{self.path}: OK ({len(c.tiers)} tiers, {len(c.datasets)} datasets, {len(c.classes)} classes,"
            f" {len(c.policies)} policies, {rules} rules)"
        )


def validate(path: str | None = None) -> Validation:
    """Every problem in the policy file (located, with a hint), or the valid config."""
    from tierctl.errors import ConfigErrors

    resolved = os.path.abspath(config_path(path))
    try:
        return Validation(resolved, [], load_config(resolved, lint=True))
    except ConfigErrors as exc:
        return Validation(resolved, list(exc.problems))
    except ConfigError as exc:
        return Validation(resolved, [exc])


def explain(config: Config, key: str, *, now: float | None = None) -> Explanation:
    """Which policy and rule decide ``key`` and why, and when that next changes."""
    from tierctl.explain import explain as explain_object
    from tierctl.model import ObjectSnapshot

    now = time.time() if now is None else now
    with open_index(config, create=False) as index:
        placements = index.placements(key)
    if not placements:
        raise UnknownName(
            f"no object {key!r} in the index",
            hint="give the full key (with the dataset prefix; see `tierctl ls`); run `tierctl scan` if the"
            " index is stale",
        )
    dataset = placements[0].dataset
    if dataset not in config.datasets:
        raise UnknownName(f"{key!r} belongs to dataset {dataset!r}, which the policy file does not declare")
    mine = tuple(p for p in placements if p.dataset == dataset)
    return explain_object(config, ObjectSnapshot(dataset, key, mine, min(p.first_seen for p in mine)), now)


def simulate(
    config: Config, days: int, datasets: list[str] | None = None, *, now: float | None = None
) -> Simulation:
    """The layout day by day for ``days`` days if every plan is applied (nothing is touched)."""
    from tierctl.simulate import simulate as run_simulation

    now = time.time() if now is None else now
    names = _datasets(config, datasets)
    with open_index(config, create=False) as index:
        objects = [obj for name in names for obj in index.objects(name)]
    return run_simulation(config, objects, now, days)
