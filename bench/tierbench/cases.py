"""The benchmark cases of issue 8. Each appends its rows as it goes (partial results survive
an error) and runs tierctl and rclone alternately on the same data with the same parallelism,
every run into a fresh destination folder (see DESIGN.md, "Known traps")."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tierbench import data, proc
from tierbench.data import MiB, TreeSpec
from tierbench.report import Goal, Row
from tierbench.servers import MotoServer, RcloneS3Server, S3Endpoint


@dataclass
class Context:
    work: Path
    repeats: int
    jobs: int
    quick: bool
    timeout: float
    log: Callable[[str], None]
    s3_baseline: bool = False  # time rclone's side of the S3 cases even without an s3 mover
    scan_1m: bool = False  # add a scan of a 1M-file tree to the growth table
    plan_10m: bool = False  # add a plan over a 10M-placement index to the growth table
    mtime: float = field(default_factory=data.default_mtime)  # every file's mtime
    # Python bytecode caching for tierctl's processes: pip compiles .pyc files at install, but
    # this environment sets PYTHONDONTWRITEBYTECODE and the venv has none, which adds ~0.1 s
    # of compiling to every command. By default the harness lets Python cache bytecode in a
    # folder of its own (PYTHONPYCACHEPREFIX), as an installed tierctl would have it.
    bytecode_cache: bool = True
    tierctl_bin: str = field(default_factory=lambda: proc.tool("tierctl"))
    rclone_bin: str = field(default_factory=lambda: proc.tool("rclone"))
    _trees: dict[tuple[str, TreeSpec], Path] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    # -- data and folders ----------------------------------------------------------------
    def tree(self, spec: TreeSpec, copy: str = "a") -> Path:
        """A tier root holding ``data/...`` per ``spec``, built once per run of the harness.
        Copies with the same spec and different ``copy`` names hold identical files."""
        key = (copy, spec)
        if key not in self._trees:
            root = self.work / "trees" / f"{spec.count}x{spec.size}-{copy}"
            self.log(f"  building {spec.label} ({spec.total_bytes / MiB:,.0f} MiB) in {root.name}")
            started = time.perf_counter()
            data.build_tree(root, spec, self.mtime)
            self.log(f"  built in {time.perf_counter() - started:.1f} s")
            self._trees[key] = root
        return self._trees[key]

    def fresh_dir(self, case: str, what: str) -> Path:
        """A folder that never existed before (never an emptied one)."""
        path = self.work / "runs" / case / f"{what}-{next(self._serial):04d}"
        path.mkdir(parents=True)
        return path

    def drop(self, case: str) -> None:
        """Delete a case's run folders (its copies), outside any timed region."""
        shutil.rmtree(self.work / "runs" / case, ignore_errors=True)

    # -- commands ------------------------------------------------------------------------
    def policy(self, run: Path, tiers: dict[str, dict[str, Any]], place: list[str] | None = None) -> Path:
        """A policy file in ``run`` (its index goes to ``run/.tierctl/``) whose one rule
        places every object of dataset ``data`` on ``place`` (default: every tier)."""
        doc = {
            "version": 1,
            "tiers": tiers,
            "datasets": {data.DATASET: {"prefix": data.PREFIX, "home": next(iter(tiers))}},
            "policies": [
                {
                    "name": "bench",
                    "dataset": data.DATASET,
                    "schedule": "0 * * * *",
                    "rules": [{"when": "true", "place": place or list(tiers)}],
                }
            ],
        }
        cfg = run / "policies.yaml"
        cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
        return cfg

    def python_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(self.work / "pycache")
        return env

    def tierctl(self, cfg: Path | None, *args: str, ok_codes: tuple[int, ...] = (0,)) -> proc.Measured:
        argv = [self.tierctl_bin, *(["-c", str(cfg)] if cfg else []), *args]
        return proc.run(argv, timeout=self.timeout, cwd=self.work, env=self.python_env(), ok_codes=ok_codes)

    def warm_up(self) -> None:
        """One small scan / plan / apply / where cycle (untimed): fills the bytecode cache."""
        spec = TreeSpec(10, 1024, seed=1)
        src = self.work / "warm-up" / "src"
        data.build_tree(src, spec, self.mtime)
        run = self.fresh_dir("warm-up", "run")
        cfg = self.policy(run, {"src": {"url": str(src)}, "dst": {"url": str(run / "dst")}})
        self.tierctl(None, "--help")
        self.tierctl(cfg, "scan", "--json")
        self.tierctl(cfg, "plan")
        self.tierctl(cfg, "apply", "--yes", "--json")
        self.tierctl(cfg, "where", data.key_of(1))
        self.drop("warm-up")
        shutil.rmtree(self.work / "warm-up", ignore_errors=True)

    def rclone(self, *args: str, env: dict[str, str] | None = None) -> proc.Measured:
        return proc.run(
            [self.rclone_bin, *args], timeout=self.timeout, cwd=self.work, env=data.rclone_env(self.work, env)
        )

    def alternate(self, *runs: Callable[[int], None]) -> None:
        """Run ``repeats`` rounds of every function in ``runs``, reversing the order every
        other round; dirty pages of the previous run are written back before each run."""
        for i in range(self.repeats):
            for fn in runs if i % 2 == 0 else runs[::-1]:
                proc.flush_page_cache_writes()
                fn(i)


CaseFn = Callable[[Context, list[Row]], None]


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    fn: CaseFn


CASES: list[Case] = []


def case(name: str, title: str) -> Callable[[CaseFn], CaseFn]:
    def register(fn: CaseFn) -> CaseFn:
        CASES.append(Case(name, title, fn))
        return fn

    return register


def _apply_json(m: proc.Measured) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(m.stdout)
    return doc


def _require_done(m: proc.Measured, expected: int) -> None:
    doc = _apply_json(m)
    if doc.get("done") != expected or doc.get("failed") or doc.get("skipped"):
        raise proc.CommandFailed(
            f"tierctl apply: expected {expected} done, got done={doc.get('done')} failed={doc.get('failed')}"
            f" skipped={doc.get('skipped')}: {json.dumps(doc.get('problems', [])[:3])}"
        )


_RCLONE_FILES = re.compile(r"^Transferred:\s+(\d+) / \d+,", re.MULTILINE)


def _require_rclone_noop(m: proc.Measured) -> None:
    match = _RCLONE_FILES.search(m.stderr)
    if match and int(match.group(1)):
        raise proc.CommandFailed(f"rclone was expected to do nothing but transferred {match.group(1)} files")


# -- 1 and 2: local -> local copies ------------------------------------------------------------
def _local_copy(ctx: Context, out: list[Row], name: str, spec: TreeSpec, ratio: float) -> None:
    src = ctx.tree(spec)
    flags = f"--checksum --transfers {ctx.jobs} --checkers {ctx.jobs}"
    what = f"local→local {spec.label}"
    apply_row = Row(name, f"{what}: apply only", goals=[Goal("ratio", ratio)], notes=f"rclone copy {flags}")
    total_row = Row(
        name,
        f"{what}: scan+apply",
        goals=[Goal("ratio", ratio)],
        notes="tierctl scan + tierctl apply (2 processes)",
    )
    out += [apply_row, total_row]
    rss: list[float] = []
    rclone_rss: list[float] = []
    cp_seconds: list[float] = []

    def run_tierctl(_: int) -> None:
        run = ctx.fresh_dir(name, "tierctl")
        (run / "dst").mkdir()
        cfg = ctx.policy(run, {"src": {"url": str(src)}, "dst": {"url": str(run / "dst")}})
        scan = ctx.tierctl(cfg, "scan", "--json")
        applied = ctx.tierctl(cfg, "apply", "--yes", "--jobs", str(ctx.jobs), "--json")
        _require_done(applied, spec.count)
        apply_row.tierctl.append(applied.seconds)
        total_row.tierctl.append(scan.seconds + applied.seconds)
        rss.append(applied.max_rss_mib)
        ctx.log(f"    tierctl scan {scan.seconds:.3f} s + apply {applied.seconds:.3f} s")

    def run_rclone(_: int) -> None:
        dst = ctx.fresh_dir(name, "rclone") / "dst"
        m = ctx.rclone("copy", str(src), str(dst), *flags.split())
        apply_row.rclone.append(m.seconds)
        total_row.rclone.append(m.seconds)
        rclone_rss.append(m.max_rss_mib)
        ctx.log(f"    rclone copy {m.seconds:.3f} s")

    def run_cp(_: int) -> None:
        # The file system's own floor: an unverified `cp -r` (GNU cp copies in the kernel
        # with copy_file_range where it can), timed the same way.
        dst = ctx.fresh_dir(name, "cp") / "dst"
        m = proc.run(["cp", "-r", str(src), str(dst)], timeout=ctx.timeout, cwd=ctx.work)
        cp_seconds.append(m.seconds)
        ctx.log(f"    cp -r {m.seconds:.3f} s")

    try:
        ctx.alternate(run_tierctl, run_rclone, run_cp)
    finally:
        ctx.drop(name)
    for row in (apply_row, total_row):
        row.done = True
        row.figures["rss_mib"] = max(rss, default=0)
        row.figures["rclone_rss_mib"] = max(rclone_rss, default=0)
        if cp_seconds and row.tierctl_s:
            row.figures["cp_ratio"] = row.tierctl_s / statistics.median(cp_seconds)
        if spec.size >= MiB and row.tierctl_s and row.rclone_s:
            row.figures["gbps"] = spec.total_bytes / row.tierctl_s / 1e9
            row.figures["rclone_gbps"] = spec.total_bytes / row.rclone_s / 1e9


@case("local-small", "1. local→local, many small files (verified copies)")
def local_small(ctx: Context, out: list[Row]) -> None:
    _local_copy(ctx, out, "local-small", TreeSpec(2_000 if ctx.quick else 10_000, 4096), 0.8)


@case("local-large", "2. local→local, large files (verified copies)")
def local_large(ctx: Context, out: list[Row]) -> None:
    spec = TreeSpec(5, 16 * MiB) if ctx.quick else TreeSpec(20, 64 * MiB)
    _local_copy(ctx, out, "local-large", spec, 0.5)


# -- 3: no-op re-run ---------------------------------------------------------------------------------
def _noop_spec(ctx: Context) -> TreeSpec:
    return TreeSpec(10_000 if ctx.quick else 100_000, 512)


@case("noop-local", "3. no-op re-run on local trees already in sync")
def noop_local(ctx: Context, out: list[Row]) -> None:
    spec = _noop_spec(ctx)
    src, dst = ctx.tree(spec, "a"), ctx.tree(spec, "b")
    flags = f"--transfers {ctx.jobs} --checkers {ctx.jobs}"
    row = Row(
        "noop-local",
        f"no-op re-run, {spec.label} local files",
        goals=[Goal("ratio", 1.0)],
        notes=f"tierctl apply --refresh (scan+plan, nothing to do) vs rclone sync {flags} (size+modtime)",
    )
    out.append(row)
    run = ctx.fresh_dir("noop-local", "tierctl")
    cfg = ctx.policy(run, {"src": {"url": str(src)}, "dst": {"url": str(dst)}})
    first = ctx.tierctl(cfg, "scan", "--json")
    ctx.log(f"  initial tierctl scan (untimed) {first.seconds:.3f} s")
    rss: list[float] = []

    def run_tierctl(_: int) -> None:
        m = ctx.tierctl(cfg, "apply", "--refresh", "--yes", "--jobs", str(ctx.jobs), "--json")
        _require_done(m, 0)
        row.tierctl.append(m.seconds)
        rss.append(m.max_rss_mib)
        ctx.log(f"    tierctl apply --refresh {m.seconds:.3f} s")

    def run_rclone(_: int) -> None:
        m = ctx.rclone("sync", str(src), str(dst), *flags.split(), "-v")
        _require_rclone_noop(m)
        row.rclone.append(m.seconds)
        ctx.log(f"    rclone sync {m.seconds:.3f} s")

    try:
        ctx.alternate(run_tierctl, run_rclone)
    finally:
        ctx.drop("noop-local")
    row.figures["rss_mib"] = max(rss, default=0)
    row.done = True


# -- 4: plan over a big index ---------------------------------------------------------------------
@case("index-scale", "4. tierctl plan over 10k / 100k / 1M placements (synthesized index)")
def index_scale(ctx: Context, out: list[Row]) -> None:
    sizes = [10_000, 100_000] if ctx.quick else [10_000, 100_000, 1_000_000]
    if ctx.plan_10m:
        sizes.append(10_000_000)
    for size in sizes:
        goals = [Goal("seconds", 2.0), Goal("rss_mib", 1024.0)] if size == 1_000_000 else []
        row = Row("index-scale", f"plan, {data.human_count(size)} placements", goals=goals)
        out.append(row)
        run = ctx.fresh_dir("index-scale", f"plan-{size}")
        for tier in ("src", "dst"):
            (run / tier).mkdir()
        cfg = ctx.policy(run, {"src": {"url": str(run / "src")}, "dst": {"url": str(run / "dst")}})
        started = time.perf_counter()
        objects, rows = data.synth_index(run / ".tierctl" / "index.db", size, now=time.time())
        took = time.perf_counter() - started
        row.notes = (
            f"{objects:,} objects, 1% only on src (plan has {objects // 100:,} copies); `plan --summary`;"
            f" index synthesized at {rows / took:,.0f} rows/s"
        )
        row.figures["placements"] = rows
        rss: list[float] = []
        for _ in range(ctx.repeats):
            m = ctx.tierctl(cfg, "plan", "--summary")
            row.tierctl.append(m.seconds)
            rss.append(m.max_rss_mib)
            ctx.log(f"    plan {size:,}: {m.seconds:.3f} s, {m.max_rss_mib:.0f} MiB")
        row.figures["rss_mib"] = max(rss)
        row.done = True
        ctx.drop("index-scale")


# -- 5: scan ingest rate ----------------------------------------------------------------------------
@case("scan-rate", "5. scan ingest rate: fresh index, one local tier")
def scan_rate(ctx: Context, out: list[Row]) -> None:
    specs = [TreeSpec(2_000 if ctx.quick else 10_000, 4096), _noop_spec(ctx)]  # the trees of cases 1 and 3
    if ctx.scan_1m:
        specs.append(TreeSpec(1_000_000, 0))
    for spec in specs:
        src = ctx.tree(spec)
        goal = [Goal("rate", 100_000.0, at_least=True)] if spec.count >= 100_000 else []
        row = Row("scan-rate", f"scan {data.human_count(spec.count)} files (fresh index)", goals=goal)
        row.notes = "whole process incl. start-up; rate = files / seconds"
        row.figures.update(placements=spec.count, kind=1)
        out.append(row)
        rss: list[float] = []
        for _ in range(ctx.repeats):
            run = ctx.fresh_dir("scan-rate", "scan")
            cfg = ctx.policy(run, {"src": {"url": str(src)}})
            m = ctx.tierctl(cfg, "scan", "--json")
            row.tierctl.append(m.seconds)
            rss.append(m.max_rss_mib)
            ctx.log(f"    scan {spec.count:,}: {m.seconds:.3f} s")
        row.figures["rss_mib"] = max(rss)
        row.figures["rate"] = spec.count / (row.tierctl_s or 1)
        row.done = True
        ctx.drop("scan-rate")


# -- 6: start-up ----------------------------------------------------------------------------------------
@case("startup", "6. start-up: whole-process time of quick commands")
def startup(ctx: Context, out: list[Row]) -> None:
    run = ctx.fresh_dir("startup", "where")
    cfg = ctx.policy(run, {"src": {"url": str(run / "src")}, "dst": {"url": str(run / "dst")}})
    data.synth_index(run / ".tierctl" / "index.db", 10_000, now=time.time())
    key = data.key_of(1234)
    repeats = max(5, ctx.repeats)
    commands: list[tuple[str, list[str], Path | None, list[Goal]]] = [
        ("python -c pass (interpreter floor)", [], None, []),
        ("tierctl --help", ["--help"], None, [Goal("seconds", 0.3)]),
        ("tierctl where KEY (10k-placement index)", ["where", key], cfg, [Goal("seconds", 0.3)]),
    ]
    try:
        for label, args, config, goals in commands:
            row = Row("startup", label, goals=goals, notes=f"median of {repeats}")
            out.append(row)
            for _ in range(repeats):
                if args:
                    m = ctx.tierctl(config, *args)
                else:
                    m = proc.run(
                        [proc.tool("python"), "-c", "pass"], timeout=ctx.timeout, env=ctx.python_env()
                    )
                row.tierctl.append(m.seconds)
                row.figures["rss_mib"] = m.max_rss_mib
            row.done = True
            ctx.log(f"    {label}: {row.tierctl_s:.3f} s")
    finally:
        ctx.drop("startup")


# -- 7: S3 ---------------------------------------------------------------------------------------------------
_S3_PROBE = """
import tierctl.movers.s3
from tierctl.movers.registry import known_schemes
assert "s3" in known_schemes(), "tierctl.movers.s3 exists but the registry has no s3:// scheme"
"""


@functools.cache
def s3_mover_missing() -> str:
    """'' when tierctl has an s3:// mover, else why the S3 cases cannot run. Asked in a fresh
    interpreter: the module must import and the registry must map s3:// to a mover."""
    try:
        proc.run([sys.executable, "-c", _S3_PROBE], timeout=60)
    except proc.CommandFailed as exc:
        last = str(exc).strip().splitlines()[-1].strip()
        return f"not available: no s3 mover yet ({last})"
    return ""


def _s3_spec(ctx: Context) -> TreeSpec:
    return TreeSpec(1_000 if ctx.quick else 10_000, 4096)


def _s3_copy(ctx: Context, out: list[Row], name: str, server: S3Endpoint, *, with_noop: bool) -> None:
    spec = _s3_spec(ctx)
    missing = s3_mover_missing()
    flags = f"--checksum --transfers {ctx.jobs} --checkers {ctx.jobs}"
    what = f"local→S3 ({server.name}) {spec.label}"
    # Issue 8: <= 0.7 on moto; on the fast `rclone serve s3`, >= 50% of rclone's upload
    # rate (ratio <= 2.0); a no-op re-run <= 0.2 of rclone's default no-op copy.
    ratio = 0.7 if server.name == "moto" else 2.0
    apply_row = Row(name, f"{what}: apply only", goals=[Goal("ratio", ratio)], notes=f"rclone copy {flags}")
    total_row = Row(name, f"{what}: scan+apply", goals=[Goal("ratio", ratio)], notes="tierctl scan + apply")
    noop_row = Row(
        name,
        f"no-op re-run, {spec.label} on S3 ({server.name})",
        goals=[Goal("ratio", 0.2)],
        notes=f"tierctl apply --refresh vs rclone copy --transfers {ctx.jobs} --checkers {ctx.jobs}"
        " (default: size+modtime, a HEAD per object)",
    )
    rows = [apply_row, total_row, *([noop_row] if with_noop else [])]
    out += rows
    if missing:
        reason, _, detail = missing.partition(" (")
        for row in rows:
            row.unavailable = reason
            row.notes = f"{row.notes}; probe: {detail.rstrip(')')}"
        if not ctx.s3_baseline:
            return
    src = ctx.tree(spec)
    env = server.rclone_env()
    serial = itertools.count()
    last_tierctl: Path | None = None
    last_rclone: str | None = None

    def run_tierctl(_: int) -> None:
        nonlocal last_tierctl
        run = ctx.fresh_dir(name, "tierctl")
        bucket = f"bench-tc-{next(serial)}"
        server.create_bucket(bucket)
        dst = {"url": f"s3://{bucket}/bench", "options": server.tier_options()}
        cfg = ctx.policy(run, {"src": {"url": str(src)}, "dst": dst})
        scan = ctx.tierctl(cfg, "scan", "--json")
        applied = ctx.tierctl(cfg, "apply", "--yes", "--jobs", str(ctx.jobs), "--json")
        _require_done(applied, spec.count)
        apply_row.tierctl.append(applied.seconds)
        total_row.tierctl.append(scan.seconds + applied.seconds)
        last_tierctl = cfg
        ctx.log(f"    tierctl scan {scan.seconds:.3f} s + apply {applied.seconds:.3f} s")

    def run_rclone(_: int) -> None:
        nonlocal last_rclone
        bucket = f"bench-rc-{next(serial)}"
        server.create_bucket(bucket)
        m = ctx.rclone("copy", str(src), f"BENCHS3:{bucket}/bench", *flags.split(), env=env)
        apply_row.rclone.append(m.seconds)
        total_row.rclone.append(m.seconds)
        last_rclone = f"BENCHS3:{bucket}/bench"
        ctx.log(f"    rclone copy {m.seconds:.3f} s")

    def noop_tierctl(_: int) -> None:
        assert last_tierctl is not None
        m = ctx.tierctl(last_tierctl, "apply", "--refresh", "--yes", "--jobs", str(ctx.jobs), "--json")
        _require_done(m, 0)
        noop_row.tierctl.append(m.seconds)
        ctx.log(f"    tierctl no-op apply --refresh {m.seconds:.3f} s")

    def noop_rclone(_: int) -> None:
        assert last_rclone is not None
        args = ["--transfers", str(ctx.jobs), "--checkers", str(ctx.jobs), "-v"]
        m = ctx.rclone("copy", str(src), last_rclone, *args, env=env)
        _require_rclone_noop(m)
        noop_row.rclone.append(m.seconds)
        ctx.log(f"    rclone no-op copy {m.seconds:.3f} s")

    try:
        ctx.alternate(*([] if missing else [run_tierctl]), run_rclone)
        apply_row.done = total_row.done = True
        if with_noop:
            # Each tool re-runs against the destination it populated itself in its last round.
            ctx.alternate(*([] if missing else [noop_tierctl]), noop_rclone)
            noop_row.done = True
    finally:
        ctx.drop(name)


@case("s3-moto", "7a/7c. local→S3 on moto, and the no-op re-run against it")
def s3_moto(ctx: Context, out: list[Row]) -> None:
    if s3_mover_missing() and not ctx.s3_baseline:
        _s3_copy(ctx, out, "s3-moto", S3Endpoint("moto"), with_noop=True)
        return
    with MotoServer() as server:
        _s3_copy(ctx, out, "s3-moto", server, with_noop=True)


@case("s3-rclone", "7b. local→S3 on `rclone serve s3` (a fast server: shows the client's own cost)")
def s3_rclone(ctx: Context, out: list[Row]) -> None:
    if s3_mover_missing() and not ctx.s3_baseline:
        _s3_copy(ctx, out, "s3-rclone", S3Endpoint("rclone-serve-s3"), with_noop=False)
        return
    root = ctx.fresh_dir("s3-rclone-server", "root")
    try:
        with RcloneS3Server(
            ctx.rclone_bin, root, data.rclone_env(ctx.work), ctx.work / "rclone-serve-s3.log"
        ) as server:
            _s3_copy(ctx, out, "s3-rclone", server, with_noop=False)
    finally:
        ctx.drop("s3-rclone-server")
