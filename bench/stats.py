"""Timed samples, their summaries, the rows of the results table and how the table is printed."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed sample, never an interpolation between two.

    With fewer than 100 samples p99 is therefore the slowest one; the JSON keeps `n` beside it.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Series:
    """One kind of timed operation: its samples in seconds, and what it was."""

    label: str
    samples: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p99(self) -> float:
        return percentile(self.samples, 99)

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"label": self.label, "n": 0}
        return {
            "label": self.label,
            "n": self.n,
            "median_ms": _ms(self.median),
            "p99_ms": _ms(self.p99),
            "p90_ms": _ms(percentile(self.samples, 90)),
            "mean_ms": _ms(statistics.fmean(self.samples)),
            "min_ms": _ms(min(self.samples)),
            "max_ms": _ms(max(self.samples)),
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


@dataclass(frozen=True)
class Target:
    """A goal from DESIGN.md / the issue; a goal to report against, never a test threshold.

    kind "ratio": console median / baseline median at most `value`;
    kind "added_ms": console median minus baseline median at most `value` milliseconds;
    kind "p99_ms": the console's own p99 under `value` milliseconds.
    """

    kind: str
    value: float

    def words(self) -> str:
        if self.kind == "ratio":
            return f"ratio <= {self.value:g}"
        if self.kind == "added_ms":
            return f"+<= {self.value:g} ms p50"
        return f"p99 < {self.value:g} ms"


@dataclass
class Measurement:
    """One line of the table: something the console does, next to the floor it is compared with."""

    key: str
    title: str
    console: Series
    baseline: Series
    target: Target | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Console median over baseline median: how many times the floor the console takes."""
        if not self.console.samples or not self.baseline.samples or self.baseline.median <= 0:
            return math.nan
        return self.console.median / self.baseline.median

    @property
    def ratio_p99(self) -> float:
        if not self.console.samples or not self.baseline.samples or self.baseline.p99 <= 0:
            return math.nan
        return self.console.p99 / self.baseline.p99

    @property
    def added_ms(self) -> float:
        return (self.console.median - self.baseline.median) * 1000

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.console.samples:
            return None
        if self.target.kind == "ratio":
            return self.ratio <= self.target.value
        if self.target.kind == "added_ms":
            return self.added_ms <= self.target.value
        return self.console.p99 * 1000 < self.target.value

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "console": self.console.summary(),
            "baseline": self.baseline.summary(),
            "ratio_median": _round(self.ratio),
            "ratio_p99": _round(self.ratio_p99),
            "added_median_ms": _round(self.added_ms),
            "target": None if self.target is None else {"kind": self.target.kind, "value": self.target.value},
            "target_met": self.met,
            "notes": self.notes,
        }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


@dataclass
class Row:
    """One of the benchmarks: its measurements, what else it learnt, and whether it failed."""

    number: int
    name: str
    measurements: list[Measurement] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0
    # Lines printed under the table, for what its columns leave out (the JSON has the numbers already).
    remarks: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "measurements": [m.as_json() for m in self.measurements],
            "info": self.info,
            "error": self.error,
            "seconds": round(self.seconds, 2),
        }


HEADER = ("row", "what", "n", "median", "p99", "baseline", "median", "p99", "ratio", "target", "met")


def table(rows: Sequence[Row]) -> str:
    """The printed table: one line per measurement, in row order, failures said in words."""
    lines: list[tuple[str, ...]] = [HEADER]
    for row in rows:
        if row.error:
            lines.append((str(row.number), f"{row.name}: FAILED — {row.error}", *[""] * 9))
            continue
        for m in row.measurements:
            met = {True: "yes", False: "NO", None: "-"}[m.met]
            ratio = "-" if math.isnan(m.ratio) else f"{m.ratio:.2f}x"
            if m.target is not None and m.target.kind == "added_ms":
                ratio = f"{ratio} ({m.added_ms:+.2f} ms)"
            lines.append(
                (
                    m.key,
                    m.title,
                    str(m.console.n),
                    _duration(m.console.median),
                    _duration(m.console.p99),
                    m.baseline.label,
                    _duration(m.baseline.median),
                    _duration(m.baseline.p99),
                    ratio,
                    m.target.words() if m.target else "-",
                    met,
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    out = []
    for index, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds:.2f} s"
