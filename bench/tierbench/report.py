"""Results: one row per measured comparison, goals, and the printed table."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, INFO = "pass", "FAIL", "info"


@dataclass(frozen=True)
class Goal:
    """``ratio <= limit`` (tierctl / rclone) or an absolute bound on a figure (machine-dependent)."""

    metric: str  # "ratio" | "seconds" | "rss_mib" | "rate"
    limit: float
    at_least: bool = False  # True: value >= limit passes

    def text(self) -> str:
        op = ">=" if self.at_least else "<="
        if self.metric == "ratio":
            return f"ratio {op} {self.limit:g}"
        if self.metric == "seconds":
            return f"{op} {self.limit:g} s*"
        if self.metric == "rss_mib":
            return (
                f"RSS {op} {self.limit / 1024:g} GiB*"
                if self.limit >= 1024
                else f"RSS {op} {self.limit:g} MiB*"
            )
        return f"{op} {self.limit:,.0f}/s*"

    def holds(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


@dataclass
class Row:
    case: str  # the case's name (for --only)
    label: str  # what the row measures
    tierctl: list[float] = field(default_factory=list)  # seconds, one per repeat
    rclone: list[float] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)  # absolute, machine-dependent: rss_mib, rate...
    notes: str = ""  # e.g. the rclone flags used
    unavailable: str = ""  # why the row could not be measured ("not available: ...")
    error: str = ""
    done: bool = False  # set by the case once every repeat of the row was measured

    @property
    def tierctl_s(self) -> float | None:
        return statistics.median(self.tierctl) if self.tierctl else None

    @property
    def rclone_s(self) -> float | None:
        return statistics.median(self.rclone) if self.rclone else None

    @property
    def ratio(self) -> float | None:
        t, r = self.tierctl_s, self.rclone_s
        return t / r if t is not None and r else None

    def value(self, metric: str) -> float | None:
        if metric == "ratio":
            return self.ratio
        if metric == "seconds":
            return self.tierctl_s
        return self.figures.get(metric)

    @property
    def result(self) -> str:
        if self.error:
            return "error"
        if self.unavailable:
            return self.unavailable
        if not self.goals:
            return INFO
        values = [(g, self.value(g.metric)) for g in self.goals]
        if any(v is None for _, v in values):
            return "error"
        return PASS if all(g.holds(v) for g, v in values if v is not None) else FAIL

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["goals"] = [g.text() for g in self.goals]
        doc.update(tierctl_s=self.tierctl_s, rclone_s=self.rclone_s, ratio=self.ratio, result=self.result)
        return doc


def _num(value: float | None, fmt: str = "{:.3f}") -> str:
    return "—" if value is None else fmt.format(value)


def _figures(row: Row) -> str:
    parts = []
    f = row.figures
    if "rss_mib" in f:
        parts.append(f"peak RSS {f['rss_mib']:.0f} MiB")
    if "rate" in f:
        parts.append(f"{f['rate']:,.0f}/s")
    if "rclone_rss_mib" in f:
        parts.append(f"rclone RSS {f['rclone_rss_mib']:.0f} MiB")
    if "gbps" in f:
        parts.append(f"tierctl {f['gbps']:.2f} GB/s")
    if "rclone_gbps" in f:
        parts.append(f"rclone {f['rclone_gbps']:.2f} GB/s")
    if "cp_ratio" in f:
        parts.append(f"tierctl / `cp -r` {f['cp_ratio']:.2f}")
    return "; ".join(parts)


def table(rows: list[Row]) -> str:
    """A Markdown table (pastes into docs/performance.md as is)."""
    head = [
        "case",
        "tierctl s",
        "rclone s",
        "ratio",
        "goal",
        "result",
        "absolute (machine-dependent)",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in rows:
        notes = row.notes if not row.error else f"{row.notes} ERROR: {row.error}".strip()
        cells = [
            row.label,
            _num(row.tierctl_s),
            _num(row.rclone_s),
            _num(row.ratio, "{:.2f}"),
            ", ".join(g.text() for g in row.goals) or "—",
            row.result,
            _figures(row),
            notes.replace("|", "\\|").replace("\n", " "),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth_table(rows: list[Row]) -> str:
    """Plan and scan time and peak RSS by index size (rows tagged with figures['placements'])."""
    sized = [r for r in rows if "placements" in r.figures and r.tierctl]
    if not sized:
        return ""
    lines = ["| command | placements | seconds | peak RSS MiB | placements/s |", "|---|---|---|---|---|"]
    for r in sorted(sized, key=lambda r: (r.figures.get("kind", 0), r.figures["placements"])):
        n = int(r.figures["placements"])
        kind = "scan (fresh index)" if r.figures.get("kind") == 1 else "plan"
        secs = r.tierctl_s or 0.0
        rate = n / secs if secs else 0
        lines.append(f"| {kind} | {n:,} | {secs:.3f} | {r.figures.get('rss_mib', 0):.0f} | {rate:,.0f} |")
    return "\n".join(lines)
