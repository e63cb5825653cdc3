#!/usr/bin/env python
"""tierctl vs rclone, side by side on the same data (issue 8). See bench/README.md.

python bench/run.py [--quick] [--only NAME[,NAME]] [--repeats N] [--jobs N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tierbench import proc
from tierbench.cases import CASES, Context
from tierbench.report import FAIL, Row, growth_table, table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [c.name for c in CASES]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small data, 1 repeat: a smoke run of every case")
    p.add_argument("--only", default="", help=f"comma-separated cases to run: {', '.join(names)}")
    p.add_argument(
        "--repeats",
        "-n",
        type=int,
        default=None,
        help="runs per case; the median is reported (default 3, --quick 1)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=4,
        help="parallelism: tierctl --jobs = rclone --transfers = --checkers",
    )
    p.add_argument(
        "--json", metavar="FILE", help="write every sample, the environment and the results as JSON"
    )
    p.add_argument("--markdown", metavar="FILE", help="write the tables as Markdown")
    p.add_argument("--workdir", help="parent of the temporary data folder (default: the system temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the data folder (for debugging)")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds any one command may run (default 600, --quick 120)",
    )
    p.add_argument(
        "--s3-baseline",
        action="store_true",
        help="time rclone's side of the S3 cases even when tierctl has no s3 mover",
    )
    p.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run tierctl with the environment as is (here: PYTHONDONTWRITEBYTECODE, no .pyc files)",
    )
    p.add_argument("--scan-1m", action="store_true", help="also scan a 1M-file tree (adds a few minutes)")
    p.add_argument(
        "--plan-10m", action="store_true", help="also plan over a 10M-placement index (~1.5 GB on disk)"
    )
    args = p.parse_args(argv)
    unknown = [n for n in args.only.split(",") if n and n not in names]
    if unknown:
        p.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(names)}")
    return args


def environment() -> dict[str, Any]:
    def out(*argv: str) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    main = Path(__file__).resolve().parent.parent
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "tierctl": out(proc.tool("tierctl"), "version"),
        "rclone": out(proc.tool("rclone"), "version").splitlines()[:1],
        "git_commit": out("git", "-C", str(main), "rev-parse", "--short", "HEAD"),
        "git_dirty": bool(out("git", "-C", str(main), "status", "--porcelain", "--", "src")),
        "load_average_start": proc.load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    timeout = args.timeout or (120.0 if args.quick else 600.0)
    selected = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    env = environment()
    env["bytecode_cache"] = not args.no_bytecode_cache
    print(f"tierctl bench: {len(selected)} case(s), median of {repeats}, jobs {args.jobs}", flush=True)
    print(
        f"  {env['tierctl']}; {' '.join(env['rclone'])}; python {env['python']}; {env['cpus']} CPUs;"
        f" load average {env['load_average_start'][0]:.2f}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="tierctl-bench-", dir=args.workdir))
    rows: list[Row] = []
    started = time.monotonic()
    try:
        ctx = Context(
            work=work, repeats=repeats, jobs=args.jobs, quick=args.quick, timeout=timeout,
            log=lambda line: print(line, flush=True), s3_baseline=args.s3_baseline, scan_1m=args.scan_1m,
            plan_10m=args.plan_10m, bytecode_cache=not args.no_bytecode_cache,
        )  # fmt: skip
        ctx.warm_up()
        for case in selected:
            print(f"\n{case.title}", flush=True)
            case_rows: list[Row] = []
            load = proc.load_average()[0]
            try:
                case.fn(ctx, case_rows)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one case failing must not lose the others
                message = f"{type(exc).__name__}: {exc}"
                print(f"  ERROR {message}", flush=True)
                if os.environ.get("TIERBENCH_TRACEBACK"):
                    traceback.print_exc()
                broken = [r for r in case_rows if not r.done and not r.unavailable]
                if not broken:
                    broken = [Row(case.name, case.title)]
                    case_rows.extend(broken)
                for row in broken:
                    row.error = message
            for row in case_rows:
                row.figures["load_average"] = max(load, proc.load_average()[0])
            rows.extend(case_rows)
    finally:
        if args.keep:
            print(f"\ndata kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    env["load_average_end"] = proc.load_average()
    text = report_text(rows, env, repeats, args.jobs, elapsed)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        doc = {"environment": env, "repeats": repeats, "jobs": args.jobs, "seconds": elapsed,
               "rows": [r.to_json() for r in rows]}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 1 if any(r.result in (FAIL, "error") for r in rows) else 0


def report_text(rows: list[Row], env: dict[str, Any], repeats: int, jobs: int, elapsed: float) -> str:
    dirty = " + uncommitted src changes" if env["git_dirty"] else ""
    loads = f"{env['load_average_start'][0]:.2f} → {env['load_average_end'][0]:.2f}"
    parts = [
        f"Median of {repeats} whole-process runs; tierctl --jobs {jobs} = rclone --transfers/--checkers"
        f" {jobs}; fresh destination folders every run. {env['cpus']} CPUs, load average {loads};"
        f" git {env['git_commit']}{dirty}; {elapsed:.0f} s."
        f" Python bytecode cache for tierctl: {'on (as installed)' if env['bytecode_cache'] else 'off'}.",
        "",
        table(rows),
        "",
        "ratio = tierctl s / rclone s. Goals marked * and the last-but-one column are absolute figures:"
        " machine-dependent.",
    ]
    growth = growth_table(rows)
    if growth:
        parts += ["", "Growth (tierctl, whole process):", "", growth]
    return "\n".join(parts)


if __name__ == "__main__":
    sys.exit(main())
