"""Figures of how training went and where the model errs: curves, confusion matrix, mistakes."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stridenet.viz._common import new_figure, show_image, tile_axes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MetricRow = Mapping[str, float]


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` (one per epoch) as dicts of floats; empty cells become NaN.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a cell that is not a number, naming the file, line and column.
    """
    path = Path(path)
    rows = []
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            parsed = {}
            for key, value in row.items():
                if key is None:
                    continue
                try:
                    parsed[key] = float(value) if value not in (None, "") else math.nan
                except ValueError:
                    raise ValueError(f"{path}: line {line}, column {key!r}: expected a number, "
                                     f"received {value!r}") from None
            rows.append(parsed)
    return rows


def _column(rows: Sequence[MetricRow], key: str) -> np.ndarray:
    return np.array([float(row.get(key, math.nan)) for row in rows], dtype=np.float64)


def _plot_pair(ax: Axes, epochs: np.ndarray, rows: Sequence[MetricRow], metric: str) -> bool:
    drawn = False
    for split, style in (("train", "-o"), ("val", "-s")):
        values = _column(rows, f"{split}_{metric}")
        if np.isfinite(values).any():
            ax.plot(epochs, values, style, markersize=3,
                    label="training" if split == "train" else "validation")
            drawn = True
    return drawn


def plot_training_curves(rows: Sequence[MetricRow], title: str = "Training curves") -> Figure:
    """Loss and accuracy per epoch, training and validation, side by side.

    Args:
        rows: one mapping per epoch with ``epoch``, ``train_loss``, ``train_acc`` and optionally
            ``val_loss``, ``val_acc`` (missing or NaN values are skipped). Accuracies in [0, 1] are
            shown as percentages.
        title: figure title.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("plot_training_curves: received no metric rows (is metrics.csv empty?)")
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    epochs = _column(rows, "epoch")
    if not np.isfinite(epochs).all():
        epochs = np.arange(1, len(rows) + 1, dtype=np.float64)
    fig = new_figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, metric, label in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "acc", "accuracy")):
        if _plot_pair(ax, epochs, rows, metric):
            ax.legend()
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label.capitalize() if metric == "loss" else "Accuracy")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracies = np.concatenate([_column(rows, "train_acc"), _column(rows, "val_acc")])
    if np.isfinite(accuracies).any() and np.nanmax(accuracies) <= 1.0:
        ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    fig.suptitle(title)
    return fig


def plot_confusion_matrix(cm: np.ndarray, classes: Sequence[str], title: str = "Confusion matrix") -> Figure:
    """Confusion matrix with class names: colour = fraction of the true class (row), text = count.

    Args:
        cm: (K, K) counts, row = true class, column = predicted class.
        classes: the K class names.
        title: figure title (overall accuracy is added).
    """
    k = len(classes)
    totals = cm.sum(axis=1, keepdims=True)
    fractions = cm / np.maximum(totals, 1)
    size = max(5.0, 0.55 * k + 2.5)
    fig = new_figure(size + 1.0, size)
    ax = fig.subplots()
    shown = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if k > 12 else 8,
                            color="white" if fractions[i, j] > 0.5 else "black")
    accuracy = np.trace(cm) / max(1, cm.sum())
    ax.set_title(f"{title}: {cm.sum()} examples, accuracy {accuracy:.2%}")
    return fig


def plot_per_class_accuracy(accuracy: np.ndarray, classes: Sequence[str],
                            title: str = "Per-class accuracy") -> Figure:
    """Horizontal bars: the fraction of each class's examples classified correctly."""
    from matplotlib.ticker import PercentFormatter

    k = len(classes)
    fig = new_figure(7, max(2.5, 0.32 * k + 1.2))
    ax = fig.subplots()
    ax.barh(range(k), np.nan_to_num(accuracy), color="tab:blue")
    ax.set_yticks(range(k), labels=list(classes))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_xlabel("accuracy on the test set")
    for i, value in enumerate(accuracy):
        if np.isfinite(value):
            ax.text(min(value, 0.86) + 0.01, i, f"{value:.1%}", va="center", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, indices: np.ndarray,
                  classes: Sequence[str], title: str = "Most confidently wrong test images") -> Figure:
    """A grid of misclassified images, each captioned with its true and predicted class.

    Args:
        images: uint8 (N, C, H, W).
        labels: (N,) true classes.
        probs: (N, K) predicted probabilities.
        indices: which images to show, e.g. from ``probe.confident_mistakes``.
        classes: class names.
        title: figure title.
    """
    n = max(1, len(indices))
    cols = min(6, n)
    rows = -(-n // cols)
    fig = new_figure(2.0 * cols + 0.4, 2.25 * rows + 0.7)
    axes = tile_axes(fig, n, cols)
    if not len(indices):
        axes[0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for ax, i in zip(axes, indices, strict=False):
        predicted = int(probs[i].argmax())
        show_image(ax, images[i])
        ax.set_title(f"#{i} true: {classes[labels[i]]}\npred: {classes[predicted]} ({probs[i, predicted]:.0%})",
                     fontsize=8, pad=3)
    fig.suptitle(title)
    return fig
