"""What an experiment hands back: tables for people, records for the CSV, and a plot."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    """A table of already formatted cells, printed as GitHub Markdown.

    Attributes:
        columns: header cells.
        rows: one list of cells per row, as many as ``columns``.
        title: a line printed above the table (optional).
    """

    columns: list[str]
    rows: list[list[str]]
    title: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"Table {self.title!r}: expected {len(self.columns)} cells a row, received {row}")

    def markdown(self) -> str:
        """The table in Markdown; columns (after the first) whose cells all start like numbers are right-aligned."""
        def numeric(j: int) -> bool:
            cells = [row[j].lstrip("~<>≈-+") for row in self.rows if row[j] not in ("", "-", "—")]
            return bool(cells) and all(c[:1].isdigit() for c in cells)

        align = ["---:" if j and numeric(j) else "---" for j in range(len(self.columns))]
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return (f"**{self.title}**\n\n" if self.title else "") + "\n".join(lines)


@dataclass
class Report:
    """The result of one experiment run, before it is written to disk.

    Attributes:
        tables: the Markdown tables, most important first (printed and written to ``results.md``).
        records: one dict per measurement, all with the same keys (written to ``results.csv``).
        settings: what was actually run (dataset sizes, epochs, seeds, widths), as label -> value.
        plot: draws the figure into the given ``.png`` path; None when there is nothing to plot.
        notes: sentences printed under the tables (caveats, how to read them).
    """

    tables: list[Table]
    records: list[dict[str, object]]
    settings: dict[str, object] = field(default_factory=dict)
    plot: Callable[[Path], None] | None = None
    notes: list[str] = field(default_factory=list)


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    """``"87.31 ± 0.42"``: mean and sample standard deviation (n - 1) of ``values`` times ``scale``;
    just the mean for a single value."""
    if not values:
        return "-"
    scaled = [v * scale for v in values]
    mean = sum(scaled) / len(scaled)
    if len(scaled) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in scaled) / (len(scaled) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean (NaN for no values)."""
    return sum(values) / len(values) if values else float("nan")


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def count(n: float) -> str:
    """``12,345`` for integers; ``1.23M`` style for a count of a million or more."""
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    return f"{int(n):,}"
