"""The inputs of the plots, gathered from a run folder: model, classes, normalisation, metrics, test set.

``RunData`` holds plain objects, so plots and reports can be made for a model that never saw a run
folder (tests build one in memory); ``load_run_data`` is the thin glue that fills it from
``config.json``, ``metrics.csv`` and the checkpoint through ``stridenet.train.load_run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stridenet import nn
from stridenet.viz.results import read_metrics


@dataclass
class RunData:
    """Everything the plots need from one trained model.

    Attributes:
        name: shown in titles, e.g. the run folder's name.
        model: the trained network (maps normalised (N, C, H, W) float32 to logits).
        classes: class names; label ``i`` is ``classes[i]``.
        input_shape: (C, H, W) of one image.
        mean, std: the training normalisation per channel, on the [0, 1] scale.
        config: the run's configuration as JSON-compatible data (shown in the report).
        metrics: one row per epoch (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ...).
        test_images: uint8 (N, C, H, W) test images, or None.
        test_labels: int64 (N,), or None.
    """

    name: str
    model: nn.Layer
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, float]] = field(default_factory=list)
    test_images: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def load_run_data(run_dir: str | Path, data_dir: str | None = None, limit_test: int | None = None,
                  checkpoint: str = "best") -> RunData:
    """Rebuild a trained model and its test set from a run folder (``stridenet.train.load_run``).

    The test split is loaded as in training (same dataset, image size, channels and ``limit_test``).

    Args:
        run_dir: folder written by ``stridenet train`` (``config.json``, ``metrics.csv``, checkpoints).
        data_dir: where the dataset files are; default the folder recorded in the run.
        limit_test: use only the first N test images (faster plots); default the run's own limit.
        checkpoint: ``"best"`` or ``"last"``.

    Raises:
        CheckpointError: not a run folder, or a checkpoint that does not fit the model.
        DataError: the dataset cannot be loaded or does not fit the model.
    """
    from stridenet.data import load_dataset
    from stridenet.train import load_run
    from stridenet.train.inference import check_compatible

    run_dir = Path(run_dir)
    model, config, info, _ = load_run(run_dir, checkpoint=checkpoint)
    record = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics_path = run_dir / "metrics.csv"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else []
    _, test = load_dataset(config.dataset, data_dir if data_dir is not None else config.data_dir,
                           image_size=config.image_size, channels=config.channels)
    check_compatible(test, info)
    limit = limit_test if limit_test is not None else config.limit_test
    return RunData(name=run_dir.resolve().name, model=model, classes=list(info.classes),
                   input_shape=tuple(info.input_shape), mean=list(info.mean), std=list(info.std),
                   config={key: record[key] for key in ("config", "data") if key in record},
                   metrics=metrics, test_images=test.images[:limit], test_labels=test.labels[:limit])
