"""The table of the benchmark: its rows, each figure beside nginx's with the ratio and the verdict on a target, and
the numbers in them (medians over runs, percentiles, sizes as people say them)."""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from typing import Callable

MB = 1_000_000
MiB = 1 << 20

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda value, limit: value >= limit,
    "<=": lambda value, limit: value <= limit,
    "<": lambda value, limit: value < limit,
}


@dataclasses.dataclass(frozen=True)
class Target:
    """A bound that a figure (a ratio, or an absolute value) must meet."""

    op: str  # a key of _COMPARISONS
    limit: float
    unit: str = "x"

    def __str__(self) -> str:
        return f"{self.op} {self.limit:g}{self.unit}"

    def verdict(self, value: float) -> str:
        if math.isnan(value):
            return "—"
        return "ok" if _COMPARISONS[self.op](value, self.limit) else "MISS"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table; every cell is already text."""

    figure: str
    ours: str
    nginx: str = "—"
    ratio: str = "—"
    target: str = "—"
    verdict: str = "—"


def compare(
    figure: str, ours: float, nginx: float, fmt: str, target: Target | None = None, judge_ratio: bool = True
) -> Row:
    """A row with our value, nginx's, their ratio (ours / nginx) and the verdict on the ratio or on our value."""
    ratio = ours / nginx if nginx else math.nan
    judged = ratio if judge_ratio else ours
    return Row(
        figure,
        fmt.format(ours),
        fmt.format(nginx),
        f"{ratio:.2f}x",
        str(target) if target else "—",
        target.verdict(judged) if target else "—",
    )


def alone(figure: str, ours: float, fmt: str, target: Target | None = None, ratio: float = math.nan) -> Row:
    """A row with no nginx counterpart (an absolute target, or a ratio of two of our own figures)."""
    return Row(
        figure,
        fmt.format(ours),
        ratio="—" if math.isnan(ratio) else f"{ratio:.2f}x",
        target=str(target) if target else "—",
        verdict=target.verdict(ours if math.isnan(ratio) else ratio) if target else "—",
    )


def error_row(name: str, exc: BaseException) -> Row:
    """The row of a figure that failed to run: its name and the first line of the error."""
    return Row(name, f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


class Table:
    """The rows of all figures, printed as aligned text and as markdown."""

    HEADER = ("figure", "tornado-records", "nginx", "ratio", "target", "verdict")

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def _cells(self) -> list[tuple[str, ...]]:
        return [self.HEADER, *(dataclasses.astuple(row) for row in self.rows)]

    def text(self) -> str:
        cells = self._cells()
        widths = [max(len(line[i]) for line in cells) for i in range(len(self.HEADER))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        cells = self._cells()
        lines = ["| " + " | ".join(line) + " |" for line in cells]
        lines.insert(1, "|" + " --- |" * len(self.HEADER))
        return "\n".join(lines)


# -- numbers -----------------------------------------------------------------------------------------------------


def medians(samples: list[dict[str, float]]) -> dict[str, float]:
    """The median of each key over runs."""
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def each_run(runs: int, measure: Callable[[], dict[str, float]]) -> list[dict[str, float]]:
    """Run `measure` `runs` times; each run's figures, also printed (to stderr) as each run ends, so that a ratio
    can be read from one run, not only from the medians."""
    samples = []
    for run in range(1, runs + 1):
        samples.append(measure())
        figures = ", ".join(f"{key} {value:.4g}" for key, value in samples[-1].items())
        print(f"  run {run}/{runs}: {figures}", file=sys.stderr, flush=True)
    return samples


def repeat(runs: int, measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run `measure` `runs` times and return the median of each figure it returns."""
    return medians(each_run(runs, measure))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of the values, by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def mib(size: int) -> str:
    """A size as people say it: 256 MiB, 4 GiB."""
    return f"{size // (1 << 30)} GiB" if size % (1 << 30) == 0 else f"{size // MiB} MiB"
