"""Training for the measured experiments, through ``stridenet.train``'s Trainer.

Every variant of an experiment is a one-line model spec (so ``stridenet train --model SPEC`` trains
the same network) and is trained by the same ``Trainer`` as ``stridenet train``: Adam with the
trainer's default learning rate and cosine schedule, no validation split, data loaded once and
shared. For a given seed every variant gets the same batch order; each run keeps its own run
folder (``OUT/NAME/runs/``) with ``metrics.csv`` and checkpoints.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stridenet import nn
from stridenet.data import Dataset
from stridenet.experiments.registry import Budget, ExperimentConfig
from stridenet.experiments.report import count
from stridenet.models import summary
from stridenet.train import Splits, TrainConfig, Trainer, evaluate_dataset, load_splits
from stridenet.train.config import DEFAULT_LR


@dataclass
class Data:
    """The splits every run of an experiment shares, and a line describing them.

    Attributes:
        splits: ``stridenet.train.Splits`` (train, no validation, test, and their ``DataInfo``).
        description: e.g. ``"fashion-mnist, 10,000 training and 10,000 test images"``.
    """

    splits: Splits
    description: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.splits.info.input_shape

    @property
    def num_classes(self) -> int:
        return len(self.splits.info.classes)


Evaluate = Callable[[nn.Layer, Data], dict[str, float]]


def train_config(config: ExperimentConfig, budget: Budget, model: str = "lenet5", seed: int = 0,
                 out: str | None = None) -> TrainConfig:
    """The ``TrainConfig`` of one run: the experiment's data, budget and optimizer, no validation split."""
    return TrainConfig(dataset=config.dataset, data_dir=config.data_dir, download=config.download, model=model,
                       epochs=budget.epochs, batch_size=config.batch_size, lr=config.lr, optimizer="adam",
                       val_fraction=0.0,
                       seed=seed, limit_train=budget.limit_train, limit_test=budget.limit_test, out=out)


def load_data(config: ExperimentConfig, budget: Budget) -> Data:
    """Load ``config.dataset`` once: the first ``limit_train`` training and ``limit_test`` test images.

    Raises:
        stridenet.errors.DataError: the dataset cannot be found or read.
    """
    splits = load_splits(train_config(config, budget))
    description = f"{config.dataset}, {count(len(splits.train))} training and {count(len(splits.test))} test images"
    return Data(splits, description)


def accuracy(model: nn.Layer, images: np.ndarray, data: Data) -> float:
    """Accuracy of ``model`` on uint8 ``images`` (the test images, transformed) with the test labels."""
    test = data.splits.test
    dataset = Dataset(images, test.labels, list(test.classes), test.name, "test")
    return float(evaluate_dataset(model, dataset, data.splits.info).accuracy)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def train_variants(specs: dict[str, str], data: Data, budget: Budget, config: ExperimentConfig, folder: Path,
                   evaluate: Evaluate | None = None) -> list[dict[str, object]]:
    """Train every variant (name -> one-line spec) once per seed; one record per (variant, seed).

    Seeds run in the outer loop, so an interrupted experiment has every variant for the seeds it
    finished. A record holds the model, seed, spec, parameters, multiply-adds per image, mean and
    fastest seconds per training epoch, last training loss, test accuracy, and whatever
    ``evaluate(model, data)`` adds.
    Run folders ``folder/runs/<model>-seed<k>`` from an earlier run of the experiment are replaced.
    """
    records: list[dict[str, object]] = []
    info = data.splits.info
    for seed in range(budget.seeds):
        for name, spec in specs.items():
            run_dir = folder / "runs" / f"{_slug(name)}-seed{seed}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            config.log(f"[{name}, seed {seed}] {spec}")
            trainer = Trainer(train_config(config, budget, spec, seed, str(run_dir)), splits=data.splits,
                              progress=False, log=lambda message: config.log(f"  {message}"))
            result = trainer.fit()
            shape = summary(trainer.model, info.input_shape)
            seconds = [info.num_train / row.images_per_s for row in result.history]
            record: dict[str, object] = {
                "model": name, "seed": seed, "spec": spec, "params": shape.total_params,
                "macs_per_image": shape.total_macs,
                "epochs": budget.epochs, "train_images": info.num_train, "test_images": info.num_test,
                "seconds_per_epoch": sum(seconds) / len(seconds), "fastest_epoch_s": min(seconds),
                "train_loss": result.history[-1].train_loss,
                "test_accuracy": result.test_acc,
            }
            if evaluate is not None:
                record.update(evaluate(trainer.model, data))
            config.log(f"  test accuracy {100 * float(result.test_acc or 0):.2f}%")
            records.append(record)
    return records


def column(records: list[dict[str, object]], model: str, key: str) -> list[float]:
    """The values of ``key`` over the records of ``model`` (one per seed)."""
    return [float(r[key]) for r in records if r["model"] == model]  # type: ignore[arg-type]


def fastest_epoch(records: list[dict[str, object]], model: str) -> str:
    """The fastest training epoch of ``model`` over all its runs, in seconds: the least disturbed by
    other work on a shared machine (the mean is in the CSV)."""
    return f"{min(column(records, model, 'fastest_epoch_s')):.1f}"


def settings(data: Data, budget: Budget, config: ExperimentConfig) -> dict[str, object]:
    """The settings line of a training experiment's results."""
    lr = DEFAULT_LR["adam"] if config.lr is None else config.lr
    return {"data": data.description, "epochs": budget.epochs, "seeds": budget.seeds, "width K": budget.width,
            "training": f"Adam lr {lr:g} with cosine decay, batch {config.batch_size}, no augmentation"}
