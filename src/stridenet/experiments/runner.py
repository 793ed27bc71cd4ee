"""Run one experiment: time it, write ``results.csv``, ``results.md`` and ``plot.png``, print the tables."""

from __future__ import annotations

import csv
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from stridenet.experiments.registry import EXPERIMENTS, ExperimentConfig, experiment_module
from stridenet.experiments.report import Report


@dataclass
class Outcome:
    """Where an experiment's results went.

    Attributes:
        name: the experiment.
        folder: ``OUT/NAME``.
        csv_path, markdown_path: the written files.
        plot_path: the figure, or None when matplotlib is missing or the experiment has none.
        wall_s: seconds the experiment took (measurements and plot, not writing).
        markdown: the text of ``results.md``.
        report: the experiment's full report.
    """

    name: str
    folder: Path
    csv_path: Path
    markdown_path: Path
    plot_path: Path | None
    wall_s: float
    markdown: str
    report: Report


def machine_line(load_before: tuple[float, float, float] | None) -> str:
    """One line describing the machine and how busy it was (load averages before and after)."""
    cpus = os.cpu_count() or 0
    text = f"{platform.system()} {platform.machine()}, {cpus} CPU core{'s' if cpus != 1 else ''}"
    try:
        import numpy

        text += f", NumPy {numpy.__version__}"
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if load_before is not None and hasattr(os, "getloadavg"):
        text += f"; 1-min load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end"
    return text


def write_csv(path: Path, records: list[dict[str, object]]) -> None:
    """Write records (dicts with the same keys) as CSV; floats keep full precision."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if not records:
            return
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def render_markdown(name: str, config: ExperimentConfig, report: Report, wall_s: float, machine: str,
                    plot_name: str | None) -> str:
    """The text of ``results.md``: title, question, command, settings, wall time, tables, notes, plot."""
    module = experiment_module(name)
    lines = [f"# {name}: {module.TITLE}", "", f"*Question.* {module.QUESTION}", ""]
    if config.command:
        lines += ["```", config.command, "```", ""]
    settings = "; ".join(f"{key} {value}" for key, value in report.settings.items())
    if settings:
        lines += [f"*Settings.* {settings}.", ""]
    lines += [f"*Wall time.* {wall_s:.1f} s on {machine}.", ""]
    for table in report.tables:
        lines += [table.markdown(), ""]
    lines += [note for text in report.notes for note in (text, "")]
    if plot_name:
        lines += [f"![{name}]({plot_name})", ""]
    return "\n".join(lines)


def run(name: str, config: ExperimentConfig) -> Outcome:
    """Run experiment ``name`` under ``config`` and write its files into ``config.out/name``.

    Raises:
        ValueError: an unknown experiment name.
        stridenet.errors.DataError: the dataset cannot be loaded.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    module = experiment_module(name)
    folder = Path(config.out) / name
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    config.log(f"[{name}] {module.TITLE}")
    start = time.perf_counter()
    report: Report = module.run(config, folder)
    plot_path: Path | None = None
    if report.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            config.log(f"[{name}] matplotlib is not installed (pip install stridenet[viz]): no plot written")
        else:
            plot_path = folder / "plot.png"
            report.plot(plot_path)
    wall_s = time.perf_counter() - start
    csv_path, markdown_path = folder / "results.csv", folder / "results.md"
    write_csv(csv_path, report.records)
    markdown = render_markdown(name, config, report, wall_s, machine_line(load),
                               plot_path.name if plot_path else None)
    markdown_path.write_text(markdown, encoding="utf-8")
    return Outcome(name, folder, csv_path, markdown_path, plot_path, wall_s, markdown, report)
