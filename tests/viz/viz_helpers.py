"""Helpers of the viz tests: a tiny model with every kind of layer the plots look for, drawn test
images, metric rows, a ``RunData`` built in memory, and a check that a PNG is not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stridenet import nn
from stridenet.viz.run import RunData

CLASSES = ["circle", "bar", "cross"]
INPUT_SHAPE = (1, 12, 12)


def tiny_model(in_channels: int = 1, dtype: type = np.float32) -> nn.Sequential:
    """Conv-ReLU-pool, conv-BN-ReLU, a residual conv block, pool, linear: every kind of layer the
    plots must find, including one nested in a ``Residual``."""
    model = nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1, rng=0), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, rng=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1, rng=2), nn.ReLU())),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 3 * 3, len(CLASSES), rng=3),
    )
    rng = np.random.default_rng(4)
    model[4].running_mean = rng.normal(0, 0.1, 6).astype(np.float32)
    model[4].running_var = rng.uniform(0.5, 1.5, 6).astype(np.float32)
    model.eval()
    return model.astype(dtype)


def tiny_images(n: int = 48, channels: int = 1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, channels, 12, 12) images with a drawn shape per class plus noise, and their labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n).astype(np.int64)
    images = rng.integers(0, 60, (n, channels, 12, 12)).astype(np.int64)
    yy, xx = np.mgrid[:12, :12]
    circle = (yy - 5.5) ** 2 + (xx - 5.5) ** 2 < 16
    bar = abs(xx - 5.5) < 2
    cross = (abs(xx - yy) < 1.5) | (abs(xx + yy - 11) < 1.5)
    shapes = [circle, bar, cross]
    for i, label in enumerate(labels):
        images[i, :, shapes[label]] += 180
    return np.clip(images, 0, 255).astype(np.uint8), labels


def metric_rows(epochs: int = 4, with_val: bool = True) -> list[dict[str, float]]:
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": float(e), "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "lr": 0.01}
        if with_val:
            row |= {"val_loss": 1.2 / e, "val_acc": 0.45 + 0.1 * e}
        rows.append(row)
    return rows


def make_tiny_run() -> RunData:
    """A ``RunData`` as a run folder would give it: tiny model, metrics, 48 test images."""
    images, labels = tiny_images()
    config = {"config": {"dataset": "tiny", "model": "tiny", "epochs": 4, "lr": 0.01},
              "data": {"input_shape": list(INPUT_SHAPE), "classes": CLASSES}}
    return RunData("tiny-run", tiny_model(), list(CLASSES), INPUT_SHAPE, [0.3], [0.35], config, metric_rows(),
                   images, labels)


def assert_png_has_content(path: Path, min_size: tuple[int, int] = (200, 150)) -> None:
    """The file is a PNG at least ``min_size`` pixels, and not blank: its pixels vary and a fair share
    of them is not the white background."""
    from PIL import Image

    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path}: {image.format}"
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1], f"{path}: size {image.size}"
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    assert gray.std() > 10, f"{path}: nearly uniform image (std {gray.std():.1f})"
    assert (gray < 245).mean() > 0.02, f"{path}: almost all background"
