"""tierctl's commands. Each parses, calls tierctl.api, prints; none holds storage or SQL code."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn

import typer

try:  # typer >= 0.24 ships its own copy of click; earlier versions use click itself
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException

from tierctl import __version__, api
from tierctl.errors import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_SOFTWARE,
    TierctlError,
)

app = typer.Typer(
    name="tierctl",
    help="Data sync and tiering with a policy engine: declare tiers, datasets and policies in one "
    "YAML file; tierctl indexes where every object lives, plans what must change, and applies it "
    "with parallel, verified copies.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class Globals:
    config: str | None
    index: str | None

    def load(self) -> Any:
        return api.load(self.config, index=self.index)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


@app.callback()
def main(
    ctx: typer.Context,
    config: str | None = typer.Option(
        None,
        "-c",
        "--config",
        metavar="PATH",
        help="Policy file. Default: $TIERCTL_CONFIG, else ./policies.yaml.",
    ),
    index: str | None = typer.Option(
        None,
        "--index",
        metavar="PATH",
        help="SQLite index. Default: .tierctl/index.db beside the policy file.",
    ),
) -> None:
    """Global options come before the command: tierctl -c policies.yaml plan."""
    ctx.obj = Globals(config, index)


@app.command()
def version() -> None:
    """Print tierctl's version."""
    print(f"tierctl {__version__}")


@app.command()
def init(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented starter policy file (to -c PATH, default ./policies.yaml)."""
    path = api.init(api.config_path(ctx.obj.config), force=force)
    print(f"wrote {path}\nnext: edit it, then `tierctl scan` and `tierctl plan`")


@app.command()
def demo(
    folder: str = typer.Option(
        "tierctl-demo", "--dir", help="Sandbox folder to create (must not exist or be empty)."
    ),
    files: int = typer.Option(
        300, "--files", min=1, max=100_000, metavar="N", help="How many files to generate."
    ),
    jobs: int = typer.Option(8, "--jobs", "-j", min=1, max=256, metavar="N", help="Parallel copies."),
) -> None:
    """Build a sandbox (tiers hot, warm, cold; a year of log files) and run scan, plan, apply, where."""
    from tierctl.demo import build_sandbox
    from tierctl.errors import ConfigError

    if os.path.exists(folder) and os.listdir(folder):
        raise ConfigError(f"{folder} exists and is not empty", hint="pass --dir NEW_FOLDER or remove it")
    console = _console()
    now = time.time()
    config_path = build_sandbox(folder, files=files, now=now)
    console.rule(f"[bold]1. A sandbox in {folder}: {files} log files on tier 'hot', up to a year old")
    with open(config_path, encoding="utf-8") as f:
        console.print(f.read(), highlight=False, markup=False)
    g = Globals(config_path, None)
    console.rule("[bold]2. tierctl scan: record every placement in the index")
    _scan(g, [], allow_empty=False, as_json=False)
    console.rule("[bold]3. tierctl plan: what must change, and why")
    config = g.load()
    plan = api.plan(config, now=now)
    from tierctl.cli import render

    render.print_plan(console, plan, detail=False)
    console.rule("[bold]4. tierctl apply: verified, parallel copies; sources deleted only after")
    _run_apply(config, plan, jobs=jobs, as_json=False, plan_file=None)
    console.rule("[bold]5. tierctl where logs: where the dataset lives now")
    render.print_where(console, api.where(config, "logs"), config)
    console.rule("[bold]6. tierctl plan again: applying twice changes nothing")
    render.print_plan(console, api.plan(config), detail=False)
    console.print(f"\nTry: tierctl -c {config_path} where <key>   |   tierctl -c {config_path} ls logs/")


def _scan(
    g: Globals, datasets: list[str], *, allow_empty: bool, as_json: bool, refresh_metadata: bool = False
) -> int:
    from tierctl.cli import render

    config = g.load()
    reports = api.scan(config, datasets or None, allow_empty=allow_empty, refresh_metadata=refresh_metadata)
    errors = [e for r in reports for e in r.errors]
    if as_json:
        _print_json(render.scan_json(reports))
    else:
        _console().print(render.scan_table(reports))
        for error in errors:
            _console(stderr=True).print(f"[yellow]warning:[/] {error}")
    refused = any("--allow-empty" in e for e in errors)
    return EXIT_ERROR if refused else EXIT_OK


@app.command()
def scan(
    ctx: typer.Context,
    datasets: list[str] = typer.Argument(None, help="Datasets to scan (default: all)."),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="Accept a tier that lists empty where the index knows objects."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    refresh_metadata: bool = typer.Option(
        False,
        "--refresh-metadata",
        help="Read tags and user metadata again for every object of datasets whose policies test"
        " tag.KEY / meta.KEY (by default only new or changed objects: S3 keeps an object's"
        " version when only its tags change). One request or two per S3 object.",
    ),
) -> int:
    """List every tier under each dataset's prefix and record placements in the index."""
    return _scan(
        ctx.obj, datasets or [], allow_empty=allow_empty, as_json=as_json, refresh_metadata=refresh_metadata
    )


@app.command()
def plan(
    ctx: typer.Context,
    datasets: list[str] = typer.Argument(None, help="Datasets to plan (default: all)."),
    out: str | None = typer.Option(
        None, "-o", "--out", metavar="FILE", help="Save the plan for `tierctl apply FILE`."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    detailed_exitcode: bool = typer.Option(
        False,
        "--detailed-exitcode",
        help="Exit 0 when nothing would change, 2 when changes are pending, 1 on error.",
    ),
    refresh: bool = typer.Option(False, "--refresh", help="Scan the tiers first."),
    summary: bool = typer.Option(False, "--summary", help="Only the totals, not every action."),
    as_of: str | None = typer.Option(
        None, "--as-of", metavar="DATE", help="Plan as if now were DATE (2026-11-28, or +30d)."
    ),
    force: bool = typer.Option(False, "--force", help="Plan even past a policy's max_delete."),
    allow_costly: bool = typer.Option(
        False,
        "--allow-costly",
        help="Keep copies and transitions that lose money (objects under a class's minimum billable"
        " size, or moved again before its minimum storage duration), which are otherwise skipped"
        " and listed.",
    ),
) -> int:
    """Show every action that would bring the tiers to what the policies declare, with its reason,
    the monthly storage cost before and after, and the plan's one-time cost (docs/cost.md)."""
    from tierctl.cli import render
    from tierctl.simulate import parse_instant

    config = ctx.obj.load()
    if refresh:
        api.scan(config, datasets or None)
    now = parse_instant(as_of, time.time()) if as_of else None
    result = api.plan(config, datasets or None, now=now, force=force, allow_costly=allow_costly)
    if out:
        result.save(out)
    if as_json:
        _print_json({**result.to_dict(), "summary": result.summary()})
    else:
        render.print_plan(_console(), result, detail=not summary)
        if out:
            print(f"saved to {out}; apply it with `tierctl apply {out}`")
    if detailed_exitcode and not result.empty:
        return EXIT_CHANGES
    return EXIT_OK


def _run_apply(
    config: Any,
    plan_: Any,
    *,
    jobs: int,
    as_json: bool,
    plan_file: str | None,
    wait: float = 0.0,
    executor: str | None = None,
) -> int:
    from tierctl.cli import render
    from tierctl.executor import ApplyOptions

    options = ApplyOptions(jobs=jobs, digest=config.digest_algorithm, plan_file=plan_file)
    if as_json or plan_.empty:
        report = api.apply(config, plan_, options=options, wait=wait, executor=executor)
    else:
        from tierctl.cli.progress import ProgressBar

        with ProgressBar(_console(stderr=True)) as bar:
            report = api.apply(config, plan_, options=options, events=bar, wait=wait, executor=executor)
    if as_json:
        _print_json(render.apply_json(report))
    else:
        render.print_apply(_console(), report)
    return EXIT_OK if report.outcome == "ok" else EXIT_PARTIAL


@app.command()
def apply(
    ctx: typer.Context,
    plan_file: str | None = typer.Argument(
        None, metavar="[PLAN_FILE]", help="A plan saved by `tierctl plan -o`."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    jobs: int = typer.Option(
        8, "--jobs", "-j", min=1, max=256, metavar="N", help="Objects worked on in parallel."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (implies no progress bar)."),
    refresh: bool = typer.Option(False, "--refresh", help="Scan the tiers before planning."),
    force: bool = typer.Option(False, "--force", help="Apply even past a policy's max_delete."),
    allow_costly: bool = typer.Option(
        False,
        "--allow-costly",
        help="When planning here (no PLAN_FILE), keep copies and transitions that lose money, which"
        " are otherwise skipped and listed.",
    ),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0,
        metavar="SECONDS",
        help="If another apply or the daemon holds the index, wait this long instead of refusing.",
    ),
    executor: str | None = typer.Option(
        None,
        "--executor",
        metavar="WHERE",
        help="Where the copies run: 'local' (threads in this process) or a Dask cluster,"
        " dask://SCHEDULER:8786 (also tcp://, tls://), which runs them on its workers' threads"
        " (--jobs then does not apply) while this process keeps the index (docs/dask.md)."
        " Default: the policy file's executor: key, else local.",
    ),
) -> int:
    """Apply a saved plan exactly, or plan now, show it and ask before applying."""
    from tierctl.cli import render

    if executor is not None:
        api.resolve_executor(executor)  # a typo fails before anything is planned
    config = ctx.obj.load()
    if plan_file:
        the_plan = api.load_plan(config, plan_file)
    else:
        if refresh:
            api.scan(config)
        the_plan = api.plan(config, force=force, allow_costly=allow_costly)
        if the_plan.empty:
            if as_json:
                _print_json(
                    {
                        "run": None,
                        "outcome": "ok",
                        "done": 0,
                        "failed": 0,
                        "skipped": 0,
                        "bytes": 0,
                        "problems": [],
                    }
                )
            else:
                render.print_plan(_console(), the_plan)
            return EXIT_OK
        if not as_json:
            render.print_plan(_console(), the_plan)
        if not yes:
            if not sys.stdin.isatty():
                raise TierctlError(
                    "refusing to apply without confirmation", hint="pass --yes, or save a plan and apply it"
                )
            if not typer.confirm("Apply this plan?", default=False):
                print("nothing applied")
                return EXIT_ERROR
    return _run_apply(
        config, the_plan, jobs=jobs, as_json=as_json, plan_file=plan_file, wait=wait, executor=executor
    )


@app.command()
def where(
    ctx: typer.Context,
    query: str = typer.Argument(
        ..., metavar="KEY_OR_PREFIX", help="An object key, a key prefix or a dataset name."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Where an object lives (every placement), or objects and bytes per tier for a prefix or dataset."""
    from tierctl.cli import render

    config = ctx.obj.load()
    result = api.where(config, query)
    if as_json:
        _print_json(render.where_json(result, config))
    else:
        render.print_where(_console(), result, config)


@app.command()
def ls(
    ctx: typer.Context,
    prefix: str = typer.Argument("", help="A key prefix or a dataset name (default: everything)."),
    limit: int | None = typer.Option(None, "--limit", min=1, metavar="N", help="At most this many objects."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines, one object each."),
) -> None:
    """List objects with their size, newest mtime and tiers."""
    from tierctl.cli.render import when
    from tierctl.policies.units import format_size

    config = ctx.obj.load()
    for dataset, key, size, mtime, tiers in api.ls(config, prefix, limit):
        if as_json:
            sys.stdout.write(
                json.dumps({"dataset": dataset, "key": key, "size": size, "mtime": mtime, "tiers": tiers})
                + "\n"
            )
        else:
            sys.stdout.write(f"{when(mtime)}  {format_size(size):>10}  {','.join(tiers):<16} {key}\n")


@app.command()
def du(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    with_cost: bool = typer.Option(
        False,
        "--cost",
        help="Also the monthly storage cost (USD) per dataset and tier, from each tier's cost model:"
        " default list prices for S3 and GCS classes, `cost:` in the policy file (docs/cost.md).",
    ),
) -> None:
    """Objects and bytes per dataset and tier; with --cost, what storing them costs a month."""
    from tierctl.cli import render

    config = ctx.obj.load()
    if with_cost:
        tally = api.du_cost(config)
        if as_json:
            _print_json(render.usage_cost_json(tally))
        else:
            render.print_usage_cost(_console(), tally)
        return
    usage = api.du(config)
    if as_json:
        _print_json(render.usage_json(usage))
    else:
        _console().print(render.usage_table(usage, title="usage"))


def _print_error(exc: TierctlError) -> None:
    problems = getattr(exc, "problems", [exc])
    for problem in problems:
        sys.stderr.write(f"error: {problem}\n")
        if problem.hint:
            sys.stderr.write(f"  hint: {problem.hint}\n")


INTERRUPTED = "interrupted: finished work is recorded; run the same command again to continue\n"


def run(argv: list[str] | None = None) -> NoReturn:
    """Entry point: user errors print a message and a hint; bugs keep their traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="tierctl", standalone_mode=False)
        code = result if isinstance(result, int) else EXIT_OK
        if code == EXIT_INTERRUPTED:  # typer returns Ctrl-C as this code, having said nothing
            sys.stderr.write(INTERRUPTED)
    except typer.Exit as exc:
        code = exc.exit_code
    except ClickException as exc:
        exc.show()
        code = EXIT_ERROR
    except typer.Abort:
        sys.stderr.write("aborted\n")
        code = EXIT_ERROR
    except TierctlError as exc:
        _print_error(exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(INTERRUPTED)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_OK
    except Exception:
        import traceback

        traceback.print_exc()
        sys.stderr.write("tierctl hit a bug (the traceback is above); please report it\n")
        code = EXIT_SOFTWARE
    sys.exit(code)


from tierctl.cli import daemon_cmds as _daemon_cmds  # noqa: E402,F401  (registers its commands)
from tierctl.cli import migrate_cmds as _migrate_cmds  # noqa: E402,F401  (registers its commands)
from tierctl.cli import policy_cmds as _policy_cmds  # noqa: E402,F401  (registers its commands)
