"""Classification metrics and the per-epoch ``metrics.csv`` log of a run folder."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from stridenet.errors import CheckpointError


@dataclass
class EpochMetrics:
    """One row of ``metrics.csv``. ``val_loss``/``val_acc`` are NaN when the run has no validation split.

    Attributes:
        epoch: 1-based epoch number.
        train_loss: mean training loss over the epoch's batches (weighted by batch size).
        train_acc: training accuracy in [0, 1], measured on the fly (dropout and BN in training mode).
        val_loss: validation loss (evaluation mode).
        val_acc: validation accuracy in [0, 1].
        lr: learning rate at the end of the epoch.
        images_per_s: training throughput of the epoch (evaluation time excluded).
        elapsed_s: wall time since the run started, across resumes.
    """

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    images_per_s: float
    elapsed_s: float

    def format(self, epochs: int) -> str:
        """The line the trainer prints after each epoch."""
        val = "" if math.isnan(self.val_acc) else f"  val_loss {self.val_loss:.4f}  val_acc {100 * self.val_acc:.2f}%"
        return (f"epoch {self.epoch:>{len(str(epochs))}}/{epochs}  loss {self.train_loss:.4f}  "
                f"acc {100 * self.train_acc:.2f}%{val}  lr {self.lr:.3g}  {self.images_per_s:,.0f} img/s  "
                f"{self.elapsed_s:.1f}s")


COLUMNS = tuple(f.name for f in fields(EpochMetrics))


class MetricsLog:
    """``metrics.csv``: a header line, then one row per completed epoch, appended as training goes.

    Args:
        path: the CSV file; created with its header when missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def append(self, row: EpochMetrics) -> None:
        """Append one row (creating the file with its header first), flushed to disk."""
        new = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(COLUMNS)
            writer.writerow([_cell(value) for value in asdict(row).values()])
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[EpochMetrics]:
        """All rows, in order; an empty list when the file does not exist.

        Raises:
            CheckpointError: the header differs from ``COLUMNS`` or a row is malformed.
        """
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or tuple(rows[0]) != COLUMNS:
            raise CheckpointError(f"{self.path}: expected the header {','.join(COLUMNS)}")
        try:
            return [EpochMetrics(int(r[0]), *(float(v) for v in r[1:])) for r in rows[1:] if r]
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"{self.path}: malformed row ({error})") from None

    def truncate(self, epochs: int) -> None:
        """Keep only the rows of epochs ``1 .. epochs``: a resumed run rewrites what came after its
        checkpoint (written atomically, like checkpoints)."""
        rows = self.read()
        if all(row.epoch <= epochs for row in rows):
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for row in rows:
                if row.epoch <= epochs:
                    writer.writerow([_cell(value) for value in asdict(row).values()])
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


def _cell(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
        [[1, 0], [1, 1]]
    """
    index = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal over row sums) from a confusion matrix; NaN for an absent class."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / np.maximum(totals, 1), np.nan)


def format_confusion(matrix: np.ndarray, classes: list[str]) -> str:
    """The confusion matrix as an aligned text table, rows = true class, columns = predicted.

    Column headers are the class names cut to the column width.
    """
    cell = max(6, len(str(int(matrix.max(initial=0)))) + 2)
    name_width = max(len("true\\pred"), *(len(c) for c in classes)) + 1
    lines = ["true\\pred".ljust(name_width) + "".join(c[: cell - 1].rjust(cell) for c in classes)]
    for name, row in zip(classes, matrix, strict=True):
        lines.append(name.ljust(name_width) + "".join(str(int(v)).rjust(cell) for v in row))
    return "\n".join(lines)
