"""What one ``tierctl migrate`` run did: :class:`MigrateReport`, and :class:`Tallying`, the
executor events wrapper that fills it as actions finish."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tierctl.api_preserve import AttributeOutcome, Preservation
from tierctl.executor import ActionResult, Events
from tierctl.plan import Plan


@dataclass
class Tally:
    files: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.files += 1
        self.bytes += size


@dataclass
class MigrateReport:
    source: str
    destination: str
    dataset: str
    index_path: str
    policy_path: str
    dry_run: bool = False
    listed: Tally = field(default_factory=Tally)  # selected source files
    copied: Tally = field(default_factory=Tally)
    verified: Tally = field(default_factory=Tally)  # existing destination copies proven equal
    up_to_date: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    skipped: Tally = field(default_factory=Tally)  # changed since planned, or a conflict at the target
    deleted_from_source: Tally = field(default_factory=Tally)
    planned_copies: Tally = field(default_factory=Tally)
    conflicts: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (key, status, why)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    run_id: int | None = None
    interrupted: bool = False
    plan: Plan | None = None  # kept for a dry run, to be shown
    preservation: Preservation | None = None
    attributes: AttributeOutcome = field(default_factory=AttributeOutcome)

    @property
    def throughput(self) -> float:
        return self.copied.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.failed.files
            or self.skipped.files
            or self.conflicts
            or self.interrupted
            or self.attributes.not_preserved
        )

    def to_dict(self) -> dict[str, Any]:
        tallies = (
            "listed",
            "planned_copies",
            "copied",
            "verified",
            "up_to_date",
            "failed",
            "skipped",
            "deleted_from_source",
        )
        return {
            "source": self.source,
            "destination": self.destination,
            "dataset": self.dataset,
            "index": self.index_path,
            "policy_file": self.policy_path,
            "dry_run": self.dry_run,
            "run": self.run_id,
            **{name: {"files": t.files, "bytes": t.bytes} for name in tallies if (t := getattr(self, name))},
            "conflicts": self.conflicts,
            "problems": [{"key": k, "status": s, "error": e} for k, s, e in self.problems],
            "warnings": self.warnings,
            **({"preserve": self.preservation.to_dict(self.attributes)} if self.preservation else {}),
            "seconds": round(self.seconds, 3),
            "bytes_per_second": round(self.throughput),
            "interrupted": self.interrupted,
            "ok": self.ok,
        }


class Tallying:
    """Counts finished actions by kind for the report, then passes them on."""

    def __init__(self, report: MigrateReport, inner: Events, source: str) -> None:
        self.report = report
        self.inner = inner
        self.source = source

    def started(self, objects: int, total_bytes: int) -> None:
        self.inner.started(objects, total_bytes)

    def advanced(self, nbytes: int) -> None:
        self.inner.advanced(nbytes)

    def finished_object(self, results: list[ActionResult]) -> None:
        r = self.report
        for result in results:
            a = result.action
            if result.status == "done":
                if a.op == "copy":
                    r.copied.add(result.bytes)
                elif a.op == "verify":
                    r.verified.add(a.size)
                elif a.op == "delete" and a.target == self.source:
                    r.deleted_from_source.add(a.size)
            else:
                (r.failed if result.status == "failed" else r.skipped).add(a.size)
                r.problems.append((a.key, f"{a.op} {result.status}", result.error or ""))
        self.inner.finished_object(results)
