"""What a training run is made of: ``TrainConfig`` (the choices) and ``DataInfo`` (what the data gave).

Configuration flows one way: the command line (or a Python caller) fills a ``TrainConfig``, the
trainer resolves its defaults (``resolved()``) and builds everything from it, and the run folder keeps
both records in ``config.json`` so a run can be resumed, evaluated or used for prediction later.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stridenet

DATASET_NAMES = ("mnist-sample", "mnist", "fashion-mnist", "cifar10", "folder")
OPTIMIZER_NAMES = ("sgd", "adam", "adamw")
SCHEDULE_NAMES = ("constant", "step", "cosine", "onecycle")
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "adamw": 2e-3}
# the default network: the classic two-stage MNIST CNN (TensorFlow's tutorial model), 98.0-98.3% on the
# built-in sample's 2,000 test digits after 6 epochs; LeNet-5 stops near 97.3% there
DEFAULT_MODEL = "conv5x32p2-relu-pool2-conv5x64p2-relu-pool2-fc256-relu-drop0.5-fc"


class ConfigError(ValueError):
    """A training option is out of range or names something that does not exist."""


@dataclass
class TrainConfig:
    """Every choice that defines a training run; ``config.json`` stores it under ``"config"``.

    Args:
        dataset: one of ``DATASET_NAMES``. Default: ``"mnist-sample"`` (built in, no download).
        data_dir: folder holding the dataset files; None uses the download cache.
        download: fetch a missing dataset into the cache.
        image_size: ``(H, W)`` to resize ``folder`` images to; None keeps their size.
        channels: 1 or 3 to convert images; None keeps the dataset's channels.
        model: a preset name (``stridenet.models.PRESETS``), a spec file or a one-line spec.
            Default: ``DEFAULT_MODEL``, two 5x5 conv-ReLU-pool stages (32, 64 filters), fc256, dropout.
        epochs: passes over the training split.
        batch_size: images per optimizer step.
        lr: learning rate (peak rate for ``onecycle``); None picks ``DEFAULT_LR[optimizer]``.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        weight_decay: L2 penalty (sgd, adam) or decoupled decay (adamw).
        momentum: SGD momentum, or Adam's beta1.
        schedule: ``"constant"``, ``"step"``, ``"cosine"`` or ``"onecycle"``, stepped every optimizer step.
        warmup_epochs: epochs of linear warm-up before the schedule (not with ``onecycle``).
        augment: random crops (4 pixels of padding) and, for 3-channel images, horizontal flips.
        val_fraction: share of the training split held out for validation (0 for none; then the
            ``best`` checkpoint is simply the last epoch's).
        seed: seeds the model's initialisation and dropout, the validation split and the batches.
        limit_train: use only the first N training images (before the validation split).
        limit_test: use only the first N test images.
        eval_batch_size: images per forward pass when evaluating.
        threads: threads each batch is split across; None takes ``STRIDENET_NUM_THREADS`` or the
            usable cores. The resolved config records the number, so ``--resume`` uses it again
            (per-thread weight-gradient sums are added up, so the count moves the last bits).
        out: run folder; None picks ``runs/<dataset>-<model>-<timestamp>``.
    """

    dataset: str = "mnist-sample"
    data_dir: str | None = None
    download: bool = False
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    model: str = DEFAULT_MODEL
    epochs: int = 6
    batch_size: int = 64
    lr: float | None = None
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: int = 0
    augment: bool = False
    val_fraction: float = 0.1
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    eval_batch_size: int = 500
    threads: int | None = None
    out: str | None = None

    def validate(self) -> None:
        """Check names and ranges before any data is read.

        Raises:
            ConfigError: naming the option, the valid values and what was received.
        """
        for option, value, valid in (("dataset", self.dataset, DATASET_NAMES),
                                     ("optimizer", self.optimizer, OPTIMIZER_NAMES),
                                     ("schedule", self.schedule, SCHEDULE_NAMES)):
            if value not in valid:
                raise ConfigError(f"unknown {option} {value!r}; valid names: {', '.join(valid)}")
        for option, low in (("epochs", 1), ("batch_size", 1), ("warmup_epochs", 0), ("seed", 0),
                            ("eval_batch_size", 1)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{option} must be an integer >= {low}, received {value!r}")
        for option in ("limit_train", "limit_test", "threads"):
            value = getattr(self, option)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{option} must be a positive integer, received {value!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a positive number, received {self.lr!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, received {self.weight_decay!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), received {self.momentum!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), received {self.val_fraction!r}")
        if self.warmup_epochs and self.schedule == "onecycle":
            raise ConfigError("the onecycle schedule has its own warm-up; use warmup_epochs 0 with it")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        if self.channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, received {self.channels!r}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise ConfigError(f"image_size must be two positive integers (H, W), received {self.image_size!r}")

    def resolved(self) -> TrainConfig:
        """A validated copy with ``lr``, ``threads`` and ``out`` filled in (the learning rate by
        optimizer, the thread count the kernels use now, the run folder under ``runs/`` named after
        dataset, model and the current time)."""
        self.validate()
        lr = DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)
        try:
            threads = stridenet.get_num_threads() if self.threads is None else self.threads
        except ValueError as error:   # a malformed STRIDENET_NUM_THREADS
            raise ConfigError(str(error)) from None
        out = self.out if self.out is not None else str(default_run_dir(self.dataset, self.model))
        return dataclasses.replace(self, lr=lr, threads=threads, out=out)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["image_size"] = None if self.image_size is None else list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error, missing ones take defaults.

        Raises:
            ConfigError: an unknown key, or values that fail :meth:`validate`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown training options {unknown}")
        values = dict(data)
        if values.get("image_size") is not None:
            values["image_size"] = tuple(values["image_size"])
        config = cls(**values)
        config.validate()
        return config


@dataclass
class DataInfo:
    """What the training data fixed for the model: needed to evaluate or predict later.

    Attributes:
        input_shape: ``(C, H, W)`` of one image.
        classes: class names, label ``i`` is ``classes[i]``.
        mean: per-channel mean (on the [0, 1] scale) of the training split.
        std: per-channel std of the training split.
        num_train: training images (after the limit and the validation split).
        num_val: validation images.
        num_test: test images.
    """

    input_shape: tuple[int, int, int]
    classes: list[str]
    mean: list[float]
    std: list[float]
    num_train: int = 0
    num_val: int = 0
    num_test: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataInfo:
        values = dict(data)
        values["input_shape"] = tuple(int(v) for v in values["input_shape"])
        return cls(**values)


def default_run_dir(dataset: str, model: str, root: str | Path = "runs") -> Path:
    """``runs/<dataset>-<model>-<YYYYmmdd-HHMMSS>``, with a ``-2``, ``-3``... suffix if it exists.

    A model given as a file path contributes its file stem; a spec string is reduced to safe characters.
    """
    name = Path(model).stem if Path(model).suffix in (".toml", ".yaml", ".yml", ".json") else model
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40].strip("._") or "model"
    base = Path(root) / f"{dataset}-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
