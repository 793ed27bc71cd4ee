"""Shared fixtures of the training tests: a tiny synthetic dataset and a config to train on it.

The images are 8x8 and the model small (two conv-BN-ReLU-pool stages, two dropout layers), so an
epoch takes a fraction of a second while exercising every kind of state a checkpoint must restore.
"""

from __future__ import annotations

import numpy as np
import pytest

from stridenet.data import Dataset, Normalizer
from stridenet.train import DataInfo, Splits, TrainConfig

NUM_CLASSES = 4
TINY_MODEL = "conv3x8p1-bn-relu-pool2-drop0.3-conv3x8p1-bn-relu-pool2-fc16-relu-drop0.3-fc"


def synthetic(n: int, seed: int, split: str) -> Dataset:
    """``n`` 1x8x8 uint8 images of 4 classes: noise plus a bright row whose position is the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n).astype(np.int64)
    images = rng.integers(0, 100, (n, 1, 8, 8)).astype(np.uint8)
    images[np.arange(n), 0, 2 * labels] = 250
    return Dataset(images, labels, [f"c{i}" for i in range(NUM_CLASSES)], "synthetic", split)


@pytest.fixture(scope="session")
def tiny_splits() -> Splits:
    train, val, test = synthetic(96, 0, "train"), synthetic(32, 1, "val"), synthetic(32, 2, "test")
    norm = Normalizer.fit(train.images)
    info = DataInfo(train.image_shape, list(train.classes), norm.mean, norm.std, len(train), len(val), len(test))
    return Splits(train, val, test, info)


@pytest.fixture(scope="session")
def tiny_config() -> TrainConfig:
    """Two epochs of 6 steps on ``tiny_splits`` with BN, dropout, augmentation (crops and flips) and a
    warm-up then cosine schedule; ``dataset`` only selects the augmentation (flips are on for it).
    ``out`` is left to each test."""
    return TrainConfig(dataset="fashion-mnist", model=TINY_MODEL, epochs=2, batch_size=16, optimizer="adamw",
                       lr=3e-3, weight_decay=1e-2, schedule="cosine", warmup_epochs=1, augment=True)
