"""Commands for running unattended and looking back: daemon, runs, history, status.

Thin like the rest of the CLI: parse, call tierctl.api_ops / tierctl.daemon, print.
"""

from __future__ import annotations

from typing import Any

import typer

from tierctl.cli.main import _console, _print_json, app

runs_app = typer.Typer(
    help="Runs recorded in the index (every apply, manual or scheduled), newest first.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(runs_app, name="runs")


@app.command()
def daemon(
    ctx: typer.Context,
    once: bool = typer.Option(
        False,
        "--once",
        help="Run what is due now and exit (for cron or a systemd timer). Exit 0: nothing due or "
        "all ok; 3: some actions failed; 1: a run could not start; 4: index in use.",
    ),
    wait: float = typer.Option(
        0.0,
        "--wait",
        min=0,
        metavar="SECONDS",
        help="Wait this long for another daemon (and, with --once, another apply) to finish "
        "instead of refusing at once.",
    ),
    metrics_addr: str | None = typer.Option(
        None,
        "--metrics-addr",
        metavar="HOST:PORT",
        help="Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).",
    ),
    log_format: str = typer.Option(
        "text", "--log-format", help="Log lines as 'text' (default) or 'json' (one object per line)."
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> int:
    """Run each policy on its schedule: scan, plan and apply what is due, then sleep until the next.

    SIGHUP reloads the policy file (an invalid one is reported and the old one kept);
    SIGTERM or SIGINT finish in-flight copies, record the run as interrupted and exit 0.
    """
    from tierctl.daemon import DaemonOptions, run_daemon, setup_logging

    if log_format not in ("text", "json"):
        raise typer.BadParameter("use text or json", param_hint="--log-format")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise typer.BadParameter("use debug, info, warning or error", param_hint="--log-level")
    setup_logging(log_format, log_level)
    g = ctx.obj
    return run_daemon(DaemonOptions(g.config, g.index, once=once, wait=wait, metrics_addr=metrics_addr))


def _when(timestamp: float | None) -> str:
    from tierctl.cli.render import when

    return when(timestamp)


def _duration(start: float | None, end: float | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{end - start:.1f}s"


def _run_json(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "policy": r.policy,
        "trigger": r.trigger,
        "outcome": r.outcome,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "planned": r.planned,
        "done": r.done,
        "failed": r.failed,
        "skipped": r.skipped,
        "bytes": r.bytes,
        "error": r.error,
        "plan_file": r.plan_file,
        "pid": r.pid,
        "host": r.host,
    }


@runs_app.callback()
def runs(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    limit: int = typer.Option(30, "--limit", min=1, help="At most this many runs."),
    policy: str | None = typer.Option(None, "--policy", help="Only runs of this policy."),
) -> None:
    """List runs: policy, trigger, start, duration, outcome, actions and bytes. `runs show ID` details one."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from tierctl import api_ops
    from tierctl.policies.units import format_size

    records = api_ops.runs(ctx.obj.load(), limit=limit, policy=policy)
    if as_json:
        _print_json([_run_json(r) for r in records])
        return
    table = Table(title="runs", title_justify="left")
    for column in ("id", "policy", "trigger", "started", "took", "outcome", "planned", "done", "failed"):
        table.add_column(column, justify="right" if column in ("id", "planned", "done", "failed") else "left")
    table.add_column("skipped", justify="right")
    table.add_column("bytes", justify="right")
    for r in records:
        table.add_row(
            str(r.id),
            r.policy or "-",
            r.trigger,
            _when(r.started_at),
            _duration(r.started_at, r.finished_at),
            r.outcome or "-",
            str(r.planned),
            str(r.done),
            str(r.failed),
            str(r.skipped),
            format_size(r.bytes),
        )
    _console().print(table)


def _step_text(step: Any, start: float) -> str:
    """``verified (read-back) +0.012s``: the step, how (where the journal says), time since the first."""
    how = step.detail.get("by")
    return f"{step.step}{f' ({how})' if isinstance(how, str) else ''} +{step.at - start:.3f}s"


def _steps_json(a: Any) -> dict[str, Any]:
    return {
        "action": a.action_id,
        "op": a.op,
        "dataset": a.dataset,
        "key": a.key,
        "source": a.source,
        "target": a.target,
        "status": a.status,
        "steps": [
            {"step": s.step, "at": s.at, **({"detail": s.detail} if s.detail else {})} for s in a.steps
        ],
    }


@runs_app.command("show")
def runs_show(
    ctx: typer.Context,
    run_id: int = typer.Argument(..., metavar="ID", help="The run's id, as `tierctl runs` lists it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    steps: bool = typer.Option(
        False,
        "--steps",
        help="Also list each action that got past 'planned' with its journal steps (planned, copying,"
        " uploading, copied, verified, deleted; resumed or cleaned when a later run used or tidied up"
        " after it) and its outcome, or 'unfinished' if the run ended before recording one.",
    ),
    key: str = typer.Option(
        "", "--key", metavar="PREFIX", help="With --steps: only keys starting with PREFIX."
    ),
    all_actions: bool = typer.Option(
        False, "--all", help="With --steps: also the actions that never started (only 'planned')."
    ),
) -> None:
    """One run in detail, with each failed or skipped action and its error; --steps shows how far
    each action got (after a kill: which copies were verified, which deletes never ran)."""
    from rich.markup import escape

    from tierctl import api, api_ops
    from tierctl.policies.units import format_size

    config = ctx.obj.load()
    detail = api_ops.run_detail(config, run_id)
    r = detail.run
    journal = api.run_steps(config, run_id, key_prefix=key, everything=all_actions) if steps else None
    if as_json:
        _print_json(
            {
                **_run_json(r),
                **({} if journal is None else {"steps": [_steps_json(a) for a in journal]}),
                "actions": detail.counts,
                "not_started": detail.not_started,
                "problems": [
                    {
                        "action": p.action_id,
                        "op": p.op,
                        "dataset": p.dataset,
                        "key": p.key,
                        "source": p.source,
                        "target": p.target,
                        "status": p.status,
                        "reason": p.reason,
                        "error": p.error,
                    }
                    for p in detail.problems
                ],
            }
        )
        return
    console = _console()
    console.print(f"[bold]run {r.id}[/]: {r.outcome}", highlight=False)
    rows = [
        ("policy", r.policy or "-"),
        ("trigger", r.trigger),
        ("started", _when(r.started_at)),
        ("finished", _when(r.finished_at)),
        ("took", _duration(r.started_at, r.finished_at)),
        ("by", f"pid {r.pid} on {r.host}"),
        ("plan file", r.plan_file or "-"),
        ("actions", f"{r.planned} planned, {r.done} done, {r.failed} failed, {r.skipped} skipped"),
        ("not started", str(detail.not_started)),
        ("bytes", format_size(r.bytes)),
        ("error", r.error or "-"),
    ]
    for label, value in rows:
        console.print(f"  {label:<12} {escape(value)}", highlight=False)
    if detail.problems:
        console.print("[bold]failed and skipped actions[/]")
    for p in detail.problems:
        arrow = f"{p.source}->{p.target}" if p.source else p.target
        console.print(
            f"  [red]{p.status}[/] {p.op} {escape(p.key)} ({arrow}): {escape(p.error or '')}", highlight=False
        )
    if journal is not None:
        console.print(f"[bold]steps[/] ({len(journal)} actions)")
    for a in journal or ():
        arrow = f"{a.source}->{a.target}" if a.source else a.target
        start = a.steps[0].at if a.steps else 0.0
        timeline = ", ".join(_step_text(s, start) for s in a.steps)
        console.print(
            f"  #{a.action_id} {a.op} {escape(a.key)} ({arrow}) {a.status}: {timeline}", highlight=False
        )


@app.command()
def history(
    ctx: typer.Context,
    key: str = typer.Argument(..., metavar="KEY", help="An object's key, as `tierctl ls` prints it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """An object's whole life: where it was found, copied, verified and deleted, by which run, and why."""
    from rich.markup import escape

    from tierctl import api_ops

    events = api_ops.history(ctx.obj.load(), key)
    if as_json:
        _print_json(
            [
                {
                    "at": e.at,
                    "dataset": e.dataset,
                    "event": e.event,
                    "tier": e.tier,
                    "source": e.source,
                    "status": e.status,
                    "reason": e.reason,
                    "run": e.run_id,
                    "trigger": e.trigger,
                    "error": e.error,
                    "bytes": e.bytes,
                }
                for e in events
            ]
        )
        return
    console = _console()
    console.print(f"[bold]{escape(key)}[/]", highlight=False)
    for e in events:
        where = f"{e.source} -> {e.tier}" if e.source else e.tier
        by = f"run {e.run_id} ({e.trigger})" if e.run_id is not None else "scan"
        status = "" if e.status == "done" else f" [red]{e.status}[/]"
        error = f": {escape(e.error)}" if e.error else ""
        console.print(
            f"  {_when(e.at)}  {e.event:<7} {escape(where):<20} {by:<22}{status} {escape(e.reason)}{error}",
            highlight=False,
        )


@app.command()
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Is a daemon running; each policy's last run, outcome and next due time; objects and bytes per tier."""
    from tierctl import api_ops
    from tierctl.cli import render

    config = ctx.obj.load()
    st = api_ops.status(config)

    def holder(h: Any) -> dict[str, Any] | None:
        return None if h is None else {"pid": h.pid, "host": h.host, "since": h.since, "command": h.command}

    if as_json:
        _print_json(
            {
                "daemon": holder(st.daemon),
                "applying": holder(st.applying),
                "timezone": st.timezone,
                "policies": [
                    {
                        "name": p.name,
                        "dataset": p.dataset,
                        "schedule": p.schedule,
                        "last_run": _run_json(p.last_run) if p.last_run else None,
                        "next_due": p.next_due,
                        "due_now": p.due_now,
                    }
                    for p in st.policies
                ],
                "usage": render.usage_json(st.usage),
            }
        )
        return
    console = _console()
    if st.daemon:
        console.print(f"daemon: [green]running[/], {st.daemon.describe()}", highlight=False)
    else:
        console.print("daemon: [yellow]not running[/]", highlight=False)
    if st.applying:
        console.print(f"applying now: {st.applying.describe()}", highlight=False)
    from rich.table import Table

    table = Table(title=f"policies (schedules in {st.timezone})", title_justify="left")
    for column in ("policy", "dataset", "schedule", "last run", "outcome", "next due"):
        table.add_column(column)
    for p in st.policies:
        last = p.last_run
        next_due = _when(p.next_due)
        if p.due_now:
            next_due = f"now (slot {next_due})"
        table.add_row(
            p.name,
            p.dataset,
            p.schedule or "(manual only)",
            f"#{last.id} {_when(last.started_at)}" if last else "never",
            (last.outcome or "-") if last else "-",
            next_due,
        )
    console.print(table)
    if st.usage:
        console.print(render.usage_table(st.usage, title="objects and bytes per tier"))
    elif not st.indexed:
        console.print("no index yet: run `tierctl scan`")
