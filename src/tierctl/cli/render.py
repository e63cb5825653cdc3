"""How results look on a terminal (rich) and in --json (plain dicts)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tierctl.api import WhereResult
from tierctl.index.db import TierUsage
from tierctl.model import Placement, ScanReport
from tierctl.policies.model import Config
from tierctl.policies.units import format_size

# The cost model, the plan and the executor are imported where a plan or a cost is printed:
# `tierctl where` renders through this module and starts without them.
if TYPE_CHECKING:
    from tierctl.cost import StorageTally
    from tierctl.executor import ApplyReport
    from tierctl.plan import Plan

SYMBOL = {
    "copy": "[green]+[/]",
    "move": "[yellow]~[/]",
    "transition": "[yellow]>[/]",
    "restore": "[blue]^[/]",
    "verify": "[cyan]?[/]",
    "delete": "[red]-[/]",
}


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


# -- scan ---------------------------------------------------------------------------------
def scan_table(reports: list[ScanReport]) -> Table:
    table = Table(title="scan", show_edge=False)
    for column in ("dataset", "tier", "listed", "new", "changed", "gone", "unchanged", "bytes"):
        table.add_column(column, justify="right" if column not in ("dataset", "tier") else "left")
    for r in reports:
        table.add_row(
            r.dataset,
            r.tier,
            str(r.listed),
            str(r.new),
            str(r.changed),
            str(r.gone),
            str(r.unchanged),
            format_size(r.bytes_listed),
        )
    return table


def scan_json(reports: list[ScanReport]) -> list[dict[str, Any]]:
    return [
        {
            "dataset": r.dataset,
            "tier": r.tier,
            "listed": r.listed,
            "new": r.new,
            "changed": r.changed,
            "gone": r.gone,
            "unchanged": r.unchanged,
            "bytes": r.bytes_listed,
            "errors": r.errors,
        }
        for r in reports
    ]


# -- plan ---------------------------------------------------------------------------------
def plan_rows(plan: Plan) -> list[tuple[str, str, str, str, int]]:
    """(reason, kind, key, route, bytes) per line, a copy + delete of its source shown as one move."""
    move_deletes = plan.moves()
    moved = {(a.dataset, a.key, a.target) for a in plan.actions if a.id in move_deletes}
    rows = []
    for a in plan.actions:
        if a.id in move_deletes:
            continue
        if a.op == "copy" and (a.dataset, a.key, a.source) in moved:
            rows.append((a.reason, "move", a.key, f"{a.source} -> {a.target}", a.size))
        elif a.op in ("copy", "verify", "transition"):
            rows.append((a.reason, a.op, a.key, f"{a.source} -> {a.target}", a.size))
        else:
            rows.append((a.reason, a.op, a.key, a.target, a.size))
    return rows


def print_plan(console: Console, plan: Plan, *, detail: bool = True) -> None:
    if plan.empty:
        held = len((plan.cost or {}).get("skipped", []))
        if held:  # not "no changes": the guard holds every change there is
            console.print(
                f"[bold yellow]Nothing to apply:[/] the cost guard holds all {held} changes "
                f"of {plan.objects_considered} objects."
            )
        else:
            console.print(
                f"[bold green]No changes.[/] {plan.objects_considered} objects already where the "
                "policies want them."
            )
        print_plan_cost(console, plan.cost, empty=True)
        return
    if detail:
        by_reason: dict[str, list[tuple[str, str, str, int]]] = defaultdict(list)
        for reason, kind, key, route, size in plan_rows(plan):
            by_reason[reason].append((kind, key, route, size))
        for reason, rows in by_reason.items():
            console.print(f"[bold]{escape(reason)}[/]  ({len(rows)} objects)", highlight=False)
            for kind, key, route, size in rows:
                console.print(
                    f"  {SYMBOL[kind]} {kind:<6} {escape(key)}  {escape(route)}  [dim]{format_size(size)}[/]",
                    highlight=False,
                )
        console.print()
    table = Table(title="plan summary", show_edge=False)
    for column, justify in (
        ("action", "left"),
        ("from", "left"),
        ("to", "left"),
        ("objects", "right"),
        ("bytes", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in plan.summary():
        table.add_row(
            f"{SYMBOL[row['action']]} {row['action']}",
            row["source"] or "",
            row["target"],
            str(row["objects"]),
            format_size(row["bytes"]),
        )
    console.print(table)
    objects = len({(a.dataset, a.key) for a in plan.actions})
    console.print(f"Plan: {len(plan.actions)} actions on {objects} of {plan.objects_considered} objects.")
    print_plan_cost(console, plan.cost)


def print_plan_cost(console: Console, doc: dict[str, Any] | None, *, empty: bool = False) -> None:
    """What the cost guard skipped, then monthly storage before -> after and the one-time cost."""
    from tierctl.cost import ONE_TIME_KINDS, format_usd

    if not doc:
        return
    skipped = doc.get("skipped", [])
    if skipped:
        console.print(f"[bold yellow]Skipped for cost[/] ({len(skipped)}; `--allow-costly` keeps them):")
        for s in skipped[:50]:
            route = f"{s['source']} -> {s['target']}" if s["source"] else s["target"]
            n = len(s["dropped"])
            waiting = f" [dim](and {n} action{'s' if n != 1 else ''} waiting for it)[/]" if n else ""
            line = f"{s['op']:<6} {escape(s['key'])}  {escape(route)}: {escape(s['reason'])}"
            console.print(f"  [yellow]![/] {line}{waiting}", highlight=False, soft_wrap=True)
        if len(skipped) > 50:
            console.print(f"  ... and {len(skipped) - 50} more (see `--json`)")
    before, after = doc["monthly_before"], doc["monthly_after"]
    one_time = doc["one_time"]
    if empty or not (before or after or one_time["total"] or doc.get("unpriced_tiers")):
        return  # nothing priced (local tiers without `cost:`): no line of zeros
    parts = ", ".join(
        f"{kind.replace('_', ' ')} {format_usd(one_time[kind])}"
        for kind in ONE_TIME_KINDS
        if one_time.get(kind)
    )
    console.print(
        f"Cost: storage {format_usd(before)}/month -> {format_usd(after)}/month"
        f" ({'+' if after >= before else ''}{format_usd(after - before)});"
        f" one-time {format_usd(one_time['total'])}" + (f" ({parts})" if parts else ""),
        highlight=False,
        soft_wrap=True,
    )
    for tier, row in doc.get("tiers", {}).items():
        if abs(row["monthly_after"] - row["monthly_before"]) > 1e-9:
            console.print(
                f"  {escape(tier)}: {format_usd(row['monthly_before'])} -> {format_usd(row['monthly_after'])}"
                " a month",
                highlight=False,
            )
    if doc.get("unpriced_tiers"):
        console.print(
            f"[dim]  no prices for {', '.join(doc['unpriced_tiers'])} (storage class without a cost model):"
            " counted as free; set `cost:` on the tier[/]"
        )


# -- apply --------------------------------------------------------------------------------
def print_apply(console: Console, report: ApplyReport) -> None:
    colour = {"ok": "green", "partial": "yellow", "failed": "red", "interrupted": "yellow"}[report.outcome]
    rate = report.bytes / report.seconds if report.seconds else 0
    console.print(
        f"[bold {colour}]Apply {report.outcome}[/]: {report.done} done, {report.failed} failed, "
        f"{report.skipped} skipped; {format_size(report.bytes)} copied in {report.seconds:.1f}s "
        f"({format_size(rate)}/s). Run #{report.run_id}.",
        highlight=False,
    )
    for r in report.problems[:50]:
        a = r.action
        console.print(
            f"  [red]{r.status}[/] {a.op} {escape(a.key)} ({a.source or ''}->{a.target}): "
            f"{escape(r.error or '')}",
            highlight=False,
        )
    if len(report.problems) > 50:
        console.print(f"  ... and {len(report.problems) - 50} more (see `--json`)")


def apply_json(report: ApplyReport) -> dict[str, Any]:
    return {
        "run": report.run_id,
        "outcome": report.outcome,
        "done": report.done,
        "failed": report.failed,
        "skipped": report.skipped,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "problems": [
            {
                "id": r.action.id,
                "op": r.action.op,
                "key": r.action.key,
                "source": r.action.source,
                "target": r.action.target,
                "status": r.status,
                "error": r.error,
            }
            for r in report.problems
        ],
    }


# -- where / ls / du ---------------------------------------------------------------------------
def placement_json(p: Placement, config: Config) -> dict[str, Any]:
    tier = config.tiers.get(p.tier)
    return {
        "tier": p.tier,
        "url": f"{tier.url.rstrip('/')}/{p.key}" if tier else None,
        "size": p.size,
        "mtime": p.mtime,
        "checksum": p.checksum,
        "storage_class": p.storage_class or (tier.storage_class if tier else None),
        "state": p.state,
        "restore_state": p.restore_state,
        "first_seen": p.first_seen,
        "verified_at": p.verified_at,
    }


def where_json(result: WhereResult, config: Config) -> dict[str, Any]:
    doc: dict[str, Any] = {"query": result.query, "kind": result.kind}
    if result.kind == "object":
        by_object: dict[tuple[str, str], list[Placement]] = defaultdict(list)
        for p in result.placements:
            by_object[(p.dataset, p.key)].append(p)
        doc["objects"] = [
            {"dataset": d, "key": k, "placements": [placement_json(p, config) for p in ps]}
            for (d, k), ps in by_object.items()
        ]
    else:
        doc["objects"] = result.objects
        doc["tiers"] = usage_json(result.usage)
    return doc


def usage_json(usage: list[TierUsage]) -> list[dict[str, Any]]:
    return [{"dataset": u.dataset, "tier": u.tier, "objects": u.objects, "bytes": u.bytes} for u in usage]


def print_where(console: Console, result: WhereResult, config: Config) -> None:
    if result.kind == "object":
        table = Table(title=result.query, show_edge=False)
        for column in ("tier", "url", "size", "mtime", "checksum", "class", "verified"):
            table.add_column(column)
        for p in result.placements:
            doc = placement_json(p, config)
            table.add_row(
                p.tier,
                doc["url"],
                format_size(p.size),
                when(p.mtime),
                p.checksum or "-",
                (doc["storage_class"] or "-") + (f" ({p.restore_state})" if p.restore_state else ""),
                when(p.verified_at),
            )
        console.print(table)
        return
    console.print(
        usage_table(result.usage, title=f"{result.query} ({result.kind}, {result.objects} objects)")
    )


def usage_cost_json(tally: StorageTally) -> dict[str, Any]:
    from tierctl.cost import PRICES_NOTE

    rows = [
        {
            "dataset": dataset,
            "tier": tier,
            "objects": tally.objects[(dataset, tier)],
            "bytes": tally.bytes[(dataset, tier)],
            "monthly_usd": round(tally.monthly[(dataset, tier)], 10),
            "priced_by": tally.prices[tier].source,
        }
        for dataset, tier in sorted(tally.objects)
    ]
    total = round(sum(tally.monthly.values()), 10)
    return {"currency": "USD", "usage": rows, "monthly_total_usd": total, "prices": PRICES_NOTE}


def print_usage_cost(console: Console, tally: StorageTally) -> None:
    from tierctl.cost import PRICES_NOTE, format_usd

    doc = usage_cost_json(tally)
    table = Table(title="monthly storage cost", show_edge=False)
    for column in ("dataset", "tier", "objects", "bytes", "USD/month", "priced by"):
        table.add_column(column, justify="right" if column in ("objects", "bytes", "USD/month") else "left")
    for row in doc["usage"]:
        table.add_row(
            row["dataset"],
            row["tier"],
            str(row["objects"]),
            format_size(row["bytes"]),
            format_usd(row["monthly_usd"]),
            row["priced_by"],
        )
    table.add_section()
    table.add_row("total", "", "", "", format_usd(doc["monthly_total_usd"]), "")
    console.print(table)
    console.print(f"[dim]{PRICES_NOTE}[/]", highlight=False)


def usage_table(usage: list[TierUsage], *, title: str) -> Table:
    table = Table(title=title, show_edge=False)
    for column, justify in (("dataset", "left"), ("tier", "left"), ("objects", "right"), ("bytes", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for u in usage:
        table.add_row(u.dataset, u.tier, str(u.objects), format_size(u.bytes))
    return table
