"""Build what a run needs from its ``TrainConfig``: data splits, loaders, model, optimizer, schedule.

Each builder takes the config (or the few values it needs) and nothing global, so the trainer, the
``eval``/``predict`` commands and the experiment scripts all get the same objects from the same config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stridenet import nn
from stridenet.data import Augment, DataLoader, Dataset, Normalizer, load_dataset, train_val_split
from stridenet.optim import Optimizer, Schedule, build_optimizer, build_schedule
from stridenet.train.config import DEFAULT_LR, ConfigError, DataInfo, TrainConfig

DIGIT_DATASETS = ("mnist", "mnist-sample")


@dataclass
class Splits:
    """The data of a run: train, optional validation and test splits, and what they fix (``info``)."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    info: DataInfo


def load_splits(config: TrainConfig) -> Splits:
    """Load the dataset, apply ``limit_train``/``limit_test``, split off validation, fit mean/std.

    The validation split is a seeded permutation (``config.seed``) of the (limited) training split;
    mean and std come from the remaining training images only.

    Raises:
        DataError: from ``load_dataset`` (unknown name, missing or malformed files).
        ConfigError: too few images for a validation split.
    """
    train, test = load_dataset(config.dataset, config.data_dir, config.download,
                               image_size=config.image_size, channels=config.channels)
    if config.limit_train is not None:
        train = train.subset(np.arange(min(config.limit_train, len(train))))
    if config.limit_test is not None:
        test = test.subset(np.arange(min(config.limit_test, len(test))))
    val = None
    if config.val_fraction > 0:
        if len(train) < 2:
            raise ConfigError(f"a validation split needs at least 2 training images, {len(train)} given; "
                              "use more images or val_fraction 0")
        train, val = train_val_split(train, config.val_fraction, config.seed)
    norm = Normalizer.fit(train.images)
    info = DataInfo(train.image_shape, list(train.classes), norm.mean, norm.std,
                    len(train), 0 if val is None else len(val), len(test))
    return Splits(train, val, test, info)


def default_augment(dataset: str, input_shape: tuple[int, int, int]) -> Augment:
    """Random crops (padding 2 for images up to 28 pixels, else 4) and horizontal flips, except for
    digits, where a mirrored 2 or 7 is not a digit."""
    padding = 2 if max(input_shape[1:]) <= 28 else 4
    return Augment(crop_padding=padding, flip=dataset not in DIGIT_DATASETS)


def make_loader(dataset: Dataset, info: DataInfo, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                augment: Augment | None = None) -> DataLoader:
    """A loader normalising with the run's training mean and std."""
    return DataLoader(dataset.images, dataset.labels, batch_size, shuffle=shuffle, seed=seed,
                      mean=info.mean, std=info.std, augment=augment)


def make_model(model: str, input_shape: tuple[int, int, int], num_classes: int, seed: int) -> nn.Layer:
    """Build ``model`` (a preset name, spec file or one-line spec) with weights drawn from ``seed``.

    Raises:
        ConfigError: an unknown name, a missing spec file, or a spec that does not fit the input.
    """
    from stridenet.models import build_model

    try:
        return build_model(model, tuple(input_shape), num_classes, np.random.default_rng(seed))
    except FileNotFoundError as error:
        raise ConfigError(f"model {model!r}: spec file not found ({error.filename or error})") from None
    except ValueError as error:
        raise ConfigError(str(error)) from None


def make_optimizer(config: TrainConfig, model: nn.Layer, steps_per_epoch: int) -> tuple[Optimizer, Schedule]:
    """The optimizer and its per-step learning-rate schedule for ``config.epochs`` epochs.

    Raises:
        ConfigError: a value the optimizer or schedule refuses (e.g. too few steps for onecycle).
    """
    lr = DEFAULT_LR[config.optimizer] if config.lr is None else config.lr
    try:
        optimizer = build_optimizer(config.optimizer, model.parameters(), lr, config.weight_decay, config.momentum)
        schedule = build_schedule(config.schedule, optimizer, config.epochs * steps_per_epoch, steps_per_epoch,
                                  config.warmup_epochs * steps_per_epoch)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return optimizer, schedule
