"""``report.html``: one self-contained page about a trained model.

Images are embedded as base64 PNG ``data:`` URLs and the style sheet is inline; the page has no
scripts and loads nothing from the network, so it can be mailed or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stridenet import nn
from stridenet.viz import gallery
from stridenet.viz._common import figure_png
from stridenet.viz.run import RunData

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2430;
       max-width: 1120px; margin: 0 auto; padding: 24px 32px 64px; background: #fafbfc; line-height: 1.45; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 2px solid #d8dee6; padding-bottom: 4px; margin-top: 40px; }
.meta { color: #56606e; margin-top: 0; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; background: white; }
th, td { border: 1px solid #d8dee6; padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f5; } td.pre { white-space: pre; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0 28px; background: white; border: 1px solid #d8dee6; padding: 10px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #56606e; font-size: 14px; margin-top: 6px; }
.bar { background: #4a7fc1; height: 10px; display: inline-block; vertical-align: middle; }
.config { columns: 3 260px; font-size: 14px; background: white; border: 1px solid #d8dee6; padding: 8px 12px; }
.config div { break-inside: avoid; overflow-wrap: anywhere; } .config .key { color: #56606e; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
"""


def summary_html(model: nn.Layer, input_shape: tuple[int, ...]) -> str:
    """The layer-by-layer summary of ``stridenet.models.summary`` as an HTML table, its totals and
    notes as a list, and its legend."""
    from stridenet.models.summary import summary
    from stridenet.models.summary_format import HEADER, LEGEND, footer_lines, table_cells

    result = summary(model, tuple(input_shape))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f'<td class="{"pre" if i == 0 else "num"}">{html.escape(cell)}</td>'
                                    for i, cell in enumerate(cells)) + "</tr>"
                   for cells in table_cells(result))
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in footer_lines(result))
    return (f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<ul>{notes}</ul><p class='meta'>{html.escape(LEGEND)}</p>")


def config_html(config: dict[str, Any]) -> str:
    """Nested configuration as a compact list of ``section.option: value`` pairs in columns."""

    def items(data: dict[str, Any], prefix: str) -> list[tuple[str, Any]]:
        found: list[tuple[str, Any]] = []
        for key, value in data.items():
            if isinstance(value, dict) and value:
                found += items(value, f"{prefix}{key}.")
            else:
                found.append((f"{prefix}{key}", value))
        return found

    if not config:
        return "<p>No configuration recorded.</p>"
    rows = "".join(f"<div><span class='key'>{html.escape(key)}</span> "
                   f"{html.escape(json.dumps(value) if isinstance(value, (list, dict)) else str(value))}</div>"
                   for key, value in items(config, ""))
    return f'<div class="config">{rows}</div>'


def per_class_table(evaluation: gallery.Evaluation, classes: Sequence[str]) -> str:
    """Per-class accuracy as an HTML table with a bar per class and the most common confusion."""
    cm = evaluation.confusion
    rows = []
    for k, name in enumerate(classes):
        total = int(cm[k].sum())
        accuracy = evaluation.per_class[k]
        off = cm[k].copy()
        off[k] = 0
        confused = f"{classes[int(off.argmax())]} ({int(off.max())})" if off.max() > 0 else ""
        width = 0 if not np.isfinite(accuracy) else round(120 * accuracy)
        bar = f'<span class="bar" style="width:{width}px"></span>'
        shown = "" if not np.isfinite(accuracy) else f"{accuracy:.1%}"
        rows.append(f"<tr><td>{html.escape(name)}</td><td class='num'>{int(cm[k, k])} / {total}</td>"
                    f"<td class='num'>{shown}</td><td>{bar}</td><td>{html.escape(confused)}</td></tr>")
    head = "<tr><th>class</th><th>correct</th><th>accuracy</th><th></th><th>most often taken for</th></tr>"
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _figure_html(panel: gallery.Panel, dpi: int) -> str:
    fig = panel.make()
    data = base64.b64encode(figure_png(fig, dpi)).decode("ascii")
    return (f'<figure id="{panel.key}"><img alt="{html.escape(panel.key)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(panel.caption)}</figcaption></figure>")


def build_report(run: RunData, image: np.ndarray | None = None, index: int = 0,
                 sections: Collection[str] | None = None, dpi: int = 90, show_progress: bool = False,
                 on_figure: Callable[[str], None] | None = None) -> str:
    """The report page for ``run`` as an HTML string.

    Args:
        run: the model and its data.
        image: uint8 (C, H, W) image for activation maps and saliency; default test image ``index``.
        index: test image used when no image is given.
        sections: keys of ``gallery.SECTIONS`` to include; default all.
        dpi: resolution of the embedded figures.
        show_progress: show progress on stderr for the passes over the test set.
        on_figure: called with each figure's key once it is rendered (e.g. to print progress).
    """
    evaluation = gallery.evaluate(run, show_progress=show_progress) if gallery.needs_evaluation(sections) else None
    chosen = gallery.probe_input(run, image, index)
    by_section: dict[str, list[str]] = {key: [] for key in gallery.SECTIONS}
    for panel in gallery.panels(run, evaluation, chosen, sections, show_progress=show_progress):
        by_section[panel.section].append(_figure_html(panel, dpi))
        if on_figure is not None:
            on_figure(panel.key)
    if evaluation is not None and "evaluation" in gallery.check_sections(sections):
        by_section["evaluation"].append("<h3>Per-class accuracy</h3>" + per_class_table(evaluation, run.classes))

    title = f"stridenet report: {run.name}"
    accuracy = "" if evaluation is None else (f" · test accuracy <b>{evaluation.accuracy:.2%}</b> on "
                                              f"{len(evaluation.predictions):,} images")
    params = f"{run.model.num_parameters():,} parameters"
    links = [("model", "Model"), ("config", "Configuration")]
    links += [(key, name) for key, name in gallery.SECTIONS.items() if by_section[key]]
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>{len(run.classes)} classes · input {tuple(run.input_shape)} · {params}{accuracy}"
        f" · generated {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<nav>" + " ".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in links) + "</nav>",
        '<h2 id="model">Model</h2>', summary_html(run.model, run.input_shape),
        '<h2 id="config">Configuration</h2>', config_html(run.config),
    ]
    for key, name in gallery.SECTIONS.items():
        if by_section[key]:
            parts.append(f'<h2 id="{key}">{html.escape(name)}</h2>')
            parts.extend(by_section[key])
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<link rel="icon" href="data:,">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_report(run: RunData, path: str | Path, **options: Any) -> Path:
    """Write ``build_report(run, **options)`` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(run, **options), encoding="utf-8")
    return path
