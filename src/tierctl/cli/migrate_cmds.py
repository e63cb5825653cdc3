"""``tierctl migrate SRC DST``: parse, call tierctl.api_migrate, print the final report."""

from __future__ import annotations

from typing import Any

import typer

from tierctl.cli.main import _console, _print_json, app
from tierctl.errors import EXIT_OK, EXIT_PARTIAL


def _options(pairs: list[str], flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=flag)
        options[name.strip()] = value
    return options


def _bandwidth(text: str | None) -> float | None:
    from tierctl.policies.units import parse_size

    if text is None:
        return None
    try:
        rate = parse_size(text.removesuffix("/s"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bandwidth") from None
    if rate <= 0:
        raise typer.BadParameter("must be more than 0", param_hint="--bandwidth")
    return float(rate)


def _preserve(values: list[str]) -> tuple[str, ...]:
    from tierctl.api_preserve import parse_preserve

    try:
        return parse_preserve(values)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--preserve") from None


@app.command()
def migrate(
    ctx: typer.Context,
    source: str = typer.Argument(
        ..., metavar="SRC", help="Source URL, e.g. webhdfs://namenode:9870/warehouse/events."
    ),
    destination: str = typer.Argument(..., metavar="DST", help="Destination URL, e.g. s3://lake/events."),
    dataset: str | None = typer.Option(
        None, "--dataset", metavar="NAME", help="Dataset name (default: the source's last path segment)."
    ),
    jobs: int = typer.Option(
        8, "--jobs", "-j", min=1, max=256, metavar="N", help="Files copied in parallel."
    ),
    bandwidth: str | None = typer.Option(
        None,
        "--bandwidth",
        metavar="BYTES/S",
        help="Cap on bytes read from the source per second, e.g. 100MB.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Scan and show the plan; copy nothing."),
    delete_source: bool = typer.Option(
        False, "--delete-source", help="Delete each source file once its copy is verified (never by default)."
    ),
    checksum: bool = typer.Option(
        False, "--checksum", help="Also hash both sides of files that already match by size and mtime."
    ),
    preserve: list[str] = typer.Option(
        [],
        "--preserve",
        metavar="ATTRS",
        help="Attributes to carry, comma-separated or repeated: mtime (always), mode (or perms),"
        " owner, group, all. Local and HDFS destinations apply them (chmod/chown, SETPERMISSION/SETOWNER);"
        " S3 and GCS record them as user metadata (x-amz-meta-mode, ...). A re-run never copies content"
        " again for attributes; on local and HDFS destinations it sets changed ones in place.",
    ),
    include: list[str] = typer.Option(
        [], "--include", metavar="GLOB", help="Only keys matching (repeatable)."
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", metavar="GLOB", help="Leave keys matching (repeatable)."
    ),
    src_option: list[str] = typer.Option(
        [], "--src-option", metavar="KEY=VALUE", help="Source tier option, e.g. user=hdfs (repeatable)."
    ),
    dst_option: list[str] = typer.Option(
        [],
        "--dst-option",
        metavar="KEY=VALUE",
        help="Destination tier option, e.g. endpoint_url=... (repeatable).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (no progress bar)."),
) -> int:
    """Copy a dataset from SRC to DST: new and changed files only, each verified, resumable.

    Re-running copies only what changed since; an interrupted run resumes without copying
    again what was verified. Both placements are recorded in the index (`tierctl where`).
    """
    from tierctl.api_migrate import MigrateOptions
    from tierctl.api_migrate import migrate as run_migration

    opts = MigrateOptions(
        source=source,
        destination=destination,
        dataset=dataset,
        jobs=jobs,
        bandwidth=_bandwidth(bandwidth),
        dry_run=dry_run,
        delete_source=delete_source,
        checksum=checksum,
        include=tuple(include),
        exclude=tuple(exclude),
        source_options=_options(src_option, "--src-option"),
        destination_options=_options(dst_option, "--dst-option"),
        config_path=ctx.obj.config,
        index=ctx.obj.index,
        preserve=_preserve(preserve),
    )
    if as_json or dry_run:
        report = run_migration(opts)
    else:
        from tierctl.cli.progress import ProgressBar

        with ProgressBar(_console(stderr=True)) as bar:
            report = run_migration(opts, events=bar)
    if as_json:
        doc = report.to_dict()
        if report.plan is not None:
            doc["plan"] = report.plan.summary()
        _print_json(doc)
    else:
        _print_report(report)
    return EXIT_OK if report.ok else EXIT_PARTIAL


def _print_report(report: Any) -> None:
    from rich.markup import escape

    from tierctl.cli import render
    from tierctl.policies.units import format_size

    console = _console()
    if report.plan is not None:
        render.print_plan(console, report.plan, detail=False)

    def line(label: str, tally: Any) -> None:
        console.print(
            f"  {label:<22} {tally.files:>9} files  {format_size(tally.bytes):>11}", highlight=False
        )

    title = "Migration plan (dry run)" if report.dry_run else "Migration report"
    console.print(f"[bold]{title}[/]: {escape(report.source)} -> {escape(report.destination)}")
    line("source files selected", report.listed)
    if report.dry_run:
        line("to copy", report.planned_copies)
    else:
        line("copied and verified", report.copied)
        line("existing, verified", report.verified)
        line("failed", report.failed)
        line("skipped", report.skipped)
        if report.deleted_from_source.files:
            line("deleted from source", report.deleted_from_source)
    line("already up to date", report.up_to_date)
    if not report.dry_run:
        console.print(
            f"  {format_size(report.copied.bytes)} in {report.seconds:.1f}s"
            f" ({format_size(report.throughput)}/s); run #{report.run_id}",
            highlight=False,
        )
    for key in report.conflicts[:20]:
        console.print(
            f"  [yellow]conflict[/] {escape(key)}: the destination is newer than the source; left alone"
        )
    for key, status, error in report.problems[:50]:
        console.print(f"  [red]{status}[/] {escape(key)}: {escape(error)}", highlight=False)
    if len(report.problems) > 50:
        console.print(f"  ... and {len(report.problems) - 50} more (see --json)")
    _print_preserved(console, report)
    for warning in report.warnings:
        console.print(f"  [yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print(
        f"  index: {escape(report.index_path)}\n  policy: {escape(report.policy_path)}", highlight=False
    )
    if report.interrupted:
        console.print("  [yellow]interrupted[/]: run the same command again to continue")


def _print_preserved(console: Any, report: Any) -> None:
    from rich.markup import escape

    preservation, outcome = report.preservation, report.attributes
    if preservation is None or not preservation.attributes:
        return
    kept = [
        f"{', '.join(names)} {how}"
        for names, how in ((preservation.native, "applied"), (preservation.metadata, "recorded as metadata"))
        if names
    ]
    console.print(f"  preserved: {'; '.join(kept)}", highlight=False)
    verb = "to update" if report.dry_run else "updated"
    if not report.dry_run:
        console.print(f"  {'attributes applied':<22} {outcome.applied:>9} files", highlight=False)
    if outcome.updated or preservation.native_attributes:
        console.print(f"  {'attributes ' + verb:<22} {outcome.updated:>9} files", highlight=False)
    if outcome.not_preserved:
        console.print(
            f"  [red]{'attributes not kept':<22}[/] {outcome.not_preserved:>9} files", highlight=False
        )
    for key, _name, why in outcome.examples[:20]:
        console.print(f"  [red]not preserved[/] {escape(key)}: {escape(why)}", highlight=False)
