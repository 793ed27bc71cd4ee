"""Rendering a ``Summary``: a plain-text table, Markdown, or a rich table on a terminal.

All three take their cells from ``table_cells``, so they show the same numbers; JSON is
``Summary.to_json``.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from stridenet.models.summary import Summary, SummaryRow

HEADER = ("layer", "output", "params", "non-train", "RF", "jump", "start", "MACs", "memory")
_RIGHT = frozenset({"params", "non-train", "MACs", "memory"})
LEGEND = ("RF: side of the input region one output unit sees (h x w when not square; global: pools the whole "
          "map before it, covering that much of the input); jump: input pixels "
          "between neighbouring units; start: centre of the first unit's region (input pixel i is centred "
          "at i; negative = in the padding). memory: the layer's output for one image in float32. "
          "(n): subtotal of a block.")


def human_bytes(count: int) -> str:
    """1536 -> '1.5 KiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _pair(value: Any, fmt: str = "{}") -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return "x".join(fmt.format(v) for v in value)
    return fmt.format(value)


def _row_cells(row: SummaryRow, indent: str, label_width: int) -> list[str]:
    def number(value: int) -> str:
        return f"({value:,})" if row.container and value else f"{value:,}"

    shape = "?" if row.output_shape is None else "x".join(map(str, row.output_shape))
    field = "?" if row.receptive_field is None else _pair(row.receptive_field)
    if row.whole_input:
        field = f"global ({field})"
    return [
        indent * row.depth + f"{row.label:<{label_width}}  {row.description}",
        shape + (" *" if row.note else ""),
        number(row.params),
        number(row.non_trainable),
        field,
        _pair(row.jump),
        _pair(row.start, "{:g}"),
        number(row.macs),
        human_bytes(row.activation_bytes) if row.activation_bytes else "",
    ]


def table_cells(summary: Summary, indent: str = "  ") -> list[list[str]]:
    """One list of cells per row, in ``HEADER`` order; labels padded to the widest at their depth."""
    widths: dict[int, int] = {}
    for row in summary.rows:
        widths[row.depth] = max(widths.get(row.depth, 0), len(row.label))
    return [_row_cells(row, indent, widths[row.depth]) for row in summary.rows]


def footer_lines(summary: Summary) -> list[str]:
    """Totals, the memory estimate, notes on unread pixels, and the error that stopped the walk."""
    memory = summary.memory
    lines = [
        f"Parameters: {summary.total_params:,} trainable, {summary.total_non_trainable:,} non-trainable",
        f"Multiply-adds (MACs) per image: {summary.total_macs:,}",
        f"Memory for forward + backward at batch size {summary.batch_size} (float32): "
        f"{human_bytes(memory['total'])} = input {human_bytes(memory['input'])} + activations and their "
        f"gradients 2 x {human_bytes(memory['activations'])} + parameters and gradients "
        f"{human_bytes(memory['params'])} + im2col block buffer {human_bytes(memory['im2col'])}",
    ]
    for row in summary.rows:
        if row.note:
            lines.append(f"* {row.path} {row.description}: {row.note}")
    if summary.error:
        lines.append(f"Stopped at {summary.error}")
    return lines


def _title(summary: Summary) -> str:
    shape = ", ".join(map(str, summary.input_shape))
    return f"{summary.name}, input ({shape})" if summary.name else f"input ({shape})"


def render_text(summary: Summary) -> str:
    """The plain-text table, totals and notes."""
    rows = [list(HEADER), *table_cells(summary)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [_title(summary), ""]
    for index, row in enumerate(rows):
        cells = [cell.rjust(width) if HEADER[i] in _RIGHT or (i > 1 and index > 0) else cell.ljust(width)
                 for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join([*lines, "", *footer_lines(summary), *textwrap.wrap(LEGEND, 100)]) + "\n"


def render_markdown(summary: Summary) -> str:
    """A Markdown table (nesting shown with '· '), totals and notes as a list."""
    align = ["---:" if name in _RIGHT or i > 1 else ":---" for i, name in enumerate(HEADER)]
    lines = [f"**{_title(summary)}**", "", "| " + " | ".join(HEADER) + " |", "| " + " | ".join(align) + " |"]
    for cells in table_cells(summary, indent="· "):
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    return "\n".join([*lines, "", *[f"- {_escape(line)}" for line in footer_lines(summary)], "", LEGEND]) + "\n"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*")


def print_summary(summary: Summary, stream: TextIO) -> None:
    """Write the text table to ``stream``; as a rich table when rich is installed and it is a terminal."""
    try:
        isatty = stream.isatty()
    except (AttributeError, ValueError):
        isatty = False
    if isatty:
        try:
            from rich.console import Console
            from rich.table import Table
        except ModuleNotFoundError:
            pass
        else:
            table = Table(title=_title(summary))
            for i, name in enumerate(HEADER):
                table.add_column(name, justify="right" if name in _RIGHT or i > 1 else "left")
            for cells in table_cells(summary):
                table.add_row(*cells)
            console = Console(file=stream)
            console.print(table)
            console.print("\n".join([*footer_lines(summary), LEGEND]), highlight=False)
            return
    stream.write(str(summary))
