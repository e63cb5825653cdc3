#!/usr/bin/env python
"""Profile tierctl's hot commands (cProfile, all threads) on the benchmark's data.

    python bench/profile_tierctl.py [--quick] [--only NAME[,NAME]] [--cpu] [--top N] [--out DIR]

Writes OUT/<name>.prof (``python -m pstats``, snakeviz) and OUT/<name>.txt (top functions
by own and by cumulative time), and prints them. Each command is also run once without
the profiler, on an identical fresh setup, to show the profiler's overhead.
"""

from __future__ import annotations

import argparse
import io
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tierbench import data, proc
from tierbench.cases import Context
from tierbench.data import MiB, TreeSpec
from tierbench.servers import MotoServer, RcloneS3Server, S3Endpoint

PROFILED = str(Path(__file__).resolve().parent / "tierbench" / "profiled.py")
TARGETS = ("apply-small", "apply-large", "plan-1m", "scan-100k", "where", "apply-s3-moto", "apply-s3-rclone")

# A setup makes a fresh policy file (with its index) and returns it; called twice per target.
Setup = Callable[[], Path]


class Profiler:
    def __init__(self, ctx: Context, out: Path, cpu: bool, top: int) -> None:
        self.ctx, self.out, self.cpu, self.top = ctx, out, cpu, top

    def run(self, name: str, setup: Setup, args: list[str]) -> None:
        prof = self.out / f"{name}.prof"
        cpu = ["--cpu"] if self.cpu else []
        cfg = setup()
        profiled = proc.run(
            [sys.executable, PROFILED, str(prof), *cpu, "--", "-c", str(cfg), *args], timeout=self.ctx.timeout
        )
        plain = self.ctx.tierctl(setup(), *args)
        text = io.StringIO()
        stats = pstats.Stats(str(prof), stream=text)
        stats.strip_dirs()
        print(f"## {name}: tierctl {' '.join(args)}", file=text)
        print(f"wall {profiled.seconds:.2f} s under the profiler, {plain.seconds:.2f} s without", file=text)
        print(f"timer: {'per-thread CPU time' if self.cpu else 'wall time'}, all threads summed\n", file=text)
        for order in ("tottime", "cumulative"):
            print(f"### top {self.top} by {order}", file=text)
            stats.sort_stats(order).print_stats(self.top)
        (self.out / f"{name}.txt").write_text(text.getvalue())
        print(text.getvalue(), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller data")
    p.add_argument("--only", default="", help=", ".join(TARGETS))
    p.add_argument("--cpu", action="store_true", help="per-thread CPU time instead of wall time")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--out", default="profile-out", help="folder for the .prof and .txt files")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tierctl-profile-"))
    ctx = Context(work=work, repeats=1, jobs=args.jobs, quick=args.quick, timeout=900, log=print)
    profiler = Profiler(ctx, out, args.cpu, args.top)
    q = args.quick

    def copy_setup(name: str, spec: TreeSpec) -> Setup:
        def setup() -> Path:
            run = ctx.fresh_dir(name, "run")
            (run / "dst").mkdir()
            cfg = ctx.policy(run, {"src": {"url": str(ctx.tree(spec))}, "dst": {"url": str(run / "dst")}})
            ctx.tierctl(cfg, "scan")
            proc.flush_page_cache_writes()
            return cfg

        return setup

    def index_setup(name: str, placements: int) -> Setup:
        def setup() -> Path:
            run = ctx.fresh_dir(name, "run")
            cfg = ctx.policy(run, {"src": {"url": str(run / "src")}, "dst": {"url": str(run / "dst")}})
            data.synth_index(run / ".tierctl" / "index.db", placements, now=time.time())
            return cfg

        return setup

    def scan_setup(name: str, spec: TreeSpec) -> Setup:
        return lambda: ctx.policy(ctx.fresh_dir(name, "run"), {"src": {"url": str(ctx.tree(spec))}})

    def s3_setup(name: str, spec: TreeSpec, server: S3Endpoint) -> Setup:
        """local -> S3 on ``server``: a fresh bucket per setup, both tiers scanned."""
        buckets = iter(range(1_000_000))

        def setup() -> Path:
            run = ctx.fresh_dir(name, "run")
            bucket = f"prof-{next(buckets)}"
            server.create_bucket(bucket)
            dst = {"url": f"s3://{bucket}/bench", "options": server.tier_options()}
            cfg = ctx.policy(run, {"src": {"url": str(ctx.tree(spec))}, "dst": dst})
            ctx.tierctl(cfg, "scan")
            return cfg

        return setup

    apply_args = ["apply", "--yes", "--jobs", str(args.jobs), "--json"]
    s3_spec = TreeSpec(1_000 if q else 10_000, 4096)
    targets: dict[str, tuple[Setup, list[str]]] = {
        "apply-small": (copy_setup("apply-small", TreeSpec(2_000 if q else 10_000, 4096)), apply_args),
        "apply-large": (
            copy_setup("apply-large", TreeSpec(5, 16 * MiB) if q else TreeSpec(20, 64 * MiB)),
            apply_args,
        ),
        "plan-1m": (index_setup("plan-1m", 100_000 if q else 1_000_000), ["plan", "--summary"]),
        "scan-100k": (scan_setup("scan-100k", TreeSpec(10_000 if q else 100_000, 512)), ["scan"]),
        "where": (index_setup("where", 10_000), ["where", data.key_of(1234)]),
    }
    wanted = [name for name in TARGETS if not args.only or name in args.only.split(",")]
    try:
        for name, (setup, cmd) in targets.items():
            if name in wanted:
                profiler.run(name, setup, cmd)
                ctx.drop(name)
        # S3 targets: the server runs in this process (moto) or as a child (rclone serve s3).
        if "apply-s3-moto" in wanted:
            with MotoServer() as moto:
                profiler.run("apply-s3-moto", s3_setup("apply-s3-moto", s3_spec, moto), apply_args)
        if "apply-s3-rclone" in wanted:
            root = ctx.fresh_dir("apply-s3-rclone-server", "root")
            log = work / "rclone-serve-s3.log"
            with RcloneS3Server(ctx.rclone_bin, root, data.rclone_env(work), log) as served:
                profiler.run("apply-s3-rclone", s3_setup("apply-s3-rclone", s3_spec, served), apply_args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
