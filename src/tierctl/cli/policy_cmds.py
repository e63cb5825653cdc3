"""Policy commands: validate, explain, simulate. Each parses, calls tierctl.api, prints."""

from __future__ import annotations

import sys

import typer

from tierctl import api
from tierctl.cli.main import _console, _print_json, app
from tierctl.errors import EXIT_ERROR, EXIT_OK
from tierctl.policies.units import format_duration, format_size


@app.command()
def validate(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the problems (or the summary) as JSON."),
) -> int:
    """Check the policy file: every problem with file:line:column and a hint. Exit 0 if valid, 1 if not."""
    result = api.validate(ctx.obj.config)
    if as_json:
        _print_json(
            {
                "path": result.path,
                "ok": result.ok,
                "summary": result.summary(),
                "problems": [
                    {
                        "file": p.location.path if p.location else result.path,
                        "line": p.location.line if p.location else None,
                        "column": p.location.column if p.location else None,
                        "message": p.message,
                        "hint": p.hint,
                    }
                    for p in result.problems
                ],
            }
        )
    else:
        for problem in result.problems:
            sys.stdout.write(f"{problem}\n")
            if problem.hint:
                sys.stdout.write(f"  hint: {problem.hint}\n")
        sys.stdout.write(result.summary() + "\n")
    return EXIT_OK if result.ok else EXIT_ERROR


@app.command()
def explain(
    ctx: typer.Context,
    key: str = typer.Argument(..., metavar="KEY", help="The object's full key (with its dataset prefix)."),
    as_of: str | None = typer.Option(
        None, "--as-of", metavar="DATE", help="Explain as if now were DATE (2026-11-28, or +30d)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which policy and rule decide an object and why, why earlier rules did not, the desired
    placement against the current one, and when the next change falls due."""
    import time

    from tierctl.simulate import parse_instant

    config = ctx.obj.load()
    now = time.time()
    result = api.explain(config, key, now=parse_instant(as_of, now) if as_of else now)
    if as_json:
        _print_json(result.to_dict())
        return
    out = _console()
    facts = result.facts
    out.print(f"[bold]{result.key}[/] (dataset {result.dataset})", markup=True)
    if facts:
        access = format_duration(facts["last_access"]) + ("" if facts["last_access_known"] else " (= age)")
        out.print(
            f"  age {format_duration(facts['age'])}, seen {format_duration(facts['seen'])},"
            f" last access {access}, size {format_size(facts['size'])}, copies {facts['copies']}"
            + (f", storage class {facts['storage_class']}" if facts["storage_class"] else ""),
            markup=False,
        )
    for line in result.attribute_lines():
        out.print(f"  {line}", markup=False)
    for check in result.checks:
        if not check.selected:
            out.print(f"  policy {check.policy!r}: not selected by its include/exclude", markup=False)
            continue
        for rule in check.rules:
            mark = "matches" if rule.matched else "no: " + "; ".join(rule.why_not)
            out.print(f"  policy {check.policy!r} rule {rule.rule} `{rule.when}`: {mark}", markup=False)
    out.print(f"  decision: {result.outcome()}", markup=False)
    out.print(
        f"  current: [{', '.join(result.current)}]"
        + (f", stale: [{', '.join(result.stale)}]" if result.stale else "")
        + (f"; to add [{', '.join(result.to_add)}]" if result.to_add else "")
        + (f"; to remove [{', '.join(result.to_remove)}]" if result.to_remove else ""),
        markup=False,
    )
    out.print(f"  next: {result.next_change_text()}", markup=False)


@app.command()
def simulate(
    ctx: typer.Context,
    datasets: list[str] = typer.Argument(None, help="Datasets to simulate (default: all)."),
    days: int = typer.Option(90, "--days", min=0, max=36500, help="How many days to look ahead."),
    as_of: str | None = typer.Option(
        None, "--as-of", metavar="DATE", help="Start the simulation at DATE instead of now."
    ),
    every_day: bool = typer.Option(False, "--every-day", help="Show every day, not only days with changes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every day)."),
) -> None:
    """Objects and bytes per tier, day by day, if the policies run daily and every plan succeeds.
    Nothing is copied or deleted: the plans are applied to an in-memory copy of the index."""
    import time

    from rich.table import Table

    from tierctl.simulate import parse_instant

    config = ctx.obj.load()
    now = time.time()
    result = api.simulate(config, days, datasets or None, now=parse_instant(as_of, now) if as_of else now)
    if as_json:
        _print_json(result.to_dict())
        return
    tiers = list(config.tiers)
    table = Table(title=f"simulation: {days} days", show_edge=False)
    table.add_column("date")
    for tier in tiers:
        table.add_column(tier, justify="right")
    table.add_column("actions")

    def cells(load: dict[str, object]) -> list[str]:
        return [f"{load[t].objects} / {format_size(load[t].bytes)}" for t in tiers]  # type: ignore[attr-defined]

    table.add_row("now (before)", *cells(result.initial), "")
    shown = result.days if every_day else result.changed_days()
    for day in shown:
        acts = ", ".join(f"{n} {op}" for op, n in sorted(day.actions.items()))
        table.add_row(day.to_dict()["date"], *cells(day.tiers), acts)
    _console().print(table)
    if not every_day and not shown:
        print(f"no changes in the next {days} days")
