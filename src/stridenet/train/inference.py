"""Use a trained model: evaluate it on a loader or dataset, predict class probabilities, and rebuild
it from a run folder (``load_run``).

Every forward pass here runs in evaluation mode (dropout off, batch norm on its running statistics)
and under ``nn.no_grad()``, in batches, and puts the model back in the mode it was in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from stridenet import nn
from stridenet.data import DataLoader, Dataset
from stridenet.errors import DataError
from stridenet.functional.loss import log_softmax
from stridenet.train.checkpoint import load_checkpoint, load_model_state
from stridenet.train.config import DataInfo, TrainConfig
from stridenet.train.metrics import confusion_matrix, per_class_accuracy
from stridenet.train.run import RunFolder
from stridenet.train.setup import make_loader, make_model


@contextmanager
def inference_mode(model: nn.Layer) -> Iterator[nn.Layer]:
    """``model.eval()`` and ``nn.no_grad()`` for the block, then the model's previous mode again."""
    was_training = model.training
    model.eval()
    try:
        with nn.no_grad():
            yield model
    finally:
        model.train(was_training)


def predict_logits(model: nn.Layer, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every sample of ``loader`` (use an unshuffled, unaugmented loader).

    Returns:
        ``(logits, labels)``: float (N, K) and int64 (N,), in the loader's order.
    """
    logits, labels = [], []
    with inference_mode(model):
        for x, y in loader.epoch(0):
            logits.append(model(x))
            labels.append(y)
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return np.concatenate(logits), np.concatenate(labels)


@dataclass
class Evaluation:
    """Loss, accuracy and per-sample predictions of a model on one split.

    Attributes:
        loss: mean cross-entropy.
        accuracy: share of correct top-1 predictions, in [0, 1].
        labels: int64 (N,) true classes.
        predictions: int64 (N,) predicted classes.
        probabilities: float32 (N, K) softmax outputs.
    """

    loss: float
    accuracy: float
    labels: np.ndarray
    predictions: np.ndarray
    probabilities: np.ndarray

    def confusion(self, num_classes: int | None = None) -> np.ndarray:
        """(K, K) counts, row = true class, column = predicted class."""
        k = self.probabilities.shape[1] if num_classes is None else num_classes
        return confusion_matrix(self.labels, self.predictions, k)

    def per_class(self) -> np.ndarray:
        """Accuracy of each class (NaN for a class with no samples)."""
        return per_class_accuracy(self.confusion())


def evaluate(model: nn.Layer, loader: DataLoader) -> Evaluation:
    """Evaluate ``model`` on every sample of ``loader`` (evaluation mode, no gradients).

    Raises:
        DataError: the loader holds no samples.
    """
    logits, labels = predict_logits(model, loader)
    if len(labels) == 0:
        raise DataError("evaluate: the split holds no images")
    log_probs = log_softmax(logits.astype(np.float64))
    loss = float(-log_probs[np.arange(len(labels)), labels].mean())
    predictions = logits.argmax(axis=1).astype(np.int64)
    return Evaluation(loss, float((predictions == labels).mean()), labels, predictions,
                      np.exp(log_probs).astype(np.float32))


def evaluate_dataset(model: nn.Layer, dataset: Dataset, info: DataInfo, batch_size: int = 500) -> Evaluation:
    """Evaluate on a ``Dataset`` of uint8 images, normalised with the run's mean and std.

    Raises:
        DataError: the images' shape or the number of classes differs from the run's.
    """
    check_compatible(dataset, info)
    return evaluate(model, make_loader(dataset, info, batch_size))


def predict_proba(model: nn.Layer, images: np.ndarray, info: DataInfo, batch_size: int = 500) -> np.ndarray:
    """Class probabilities for uint8 images, normalised like the run's training data.

    Args:
        model: the trained model.
        images: uint8 (N, C, H, W) with the run's ``info.input_shape``.
        info: the run's ``DataInfo`` (mean, std, input shape).
        batch_size: images per forward pass.

    Returns:
        float32 (N, K) probabilities; ``.argmax(1)`` gives the predicted classes.

    Raises:
        DataError: images of another shape or dtype.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(info.input_shape):
        raise DataError(f"predict_proba: expected uint8 images of shape (N, {', '.join(map(str, info.input_shape))}), "
                        f"received {images.dtype} of shape {images.shape}")
    loader = DataLoader(images, np.zeros(len(images), np.int64), batch_size, mean=info.mean, std=info.std)
    logits, _ = predict_logits(model, loader)
    return np.exp(log_softmax(logits.astype(np.float64))).astype(np.float32)


def check_compatible(dataset: Dataset, info: DataInfo) -> None:
    """Raise ``DataError`` unless ``dataset`` has the run's image shape and number of classes."""
    if tuple(dataset.image_shape) != tuple(info.input_shape):
        raise DataError(f"dataset {dataset.name!r} has images of shape {dataset.image_shape}, the model was "
                        f"trained on {tuple(info.input_shape)}")
    if dataset.num_classes != len(info.classes):
        raise DataError(f"dataset {dataset.name!r} has {dataset.num_classes} classes, the model was trained "
                        f"on {len(info.classes)}")


class LoadedRun(NamedTuple):
    """A trained model rebuilt from a run folder: ``model, config, info, header = load_run(path)``."""

    model: nn.Layer
    config: TrainConfig
    info: DataInfo
    header: dict[str, Any]


def load_run(run_dir: str | os.PathLike[str], checkpoint: str = "best") -> LoadedRun:
    """Rebuild the model of a run folder with the weights of its ``best`` (or ``last``) checkpoint.

    The model is in evaluation mode.

    Raises:
        CheckpointError: not a run folder, no such checkpoint, or a checkpoint that does not fit.
    """
    run = RunFolder(run_dir)
    config, info = run.read_config()
    model = make_model(config.model, info.input_shape, len(info.classes), config.seed)
    path = run.checkpoint_path(checkpoint)
    saved = load_checkpoint(path)
    load_model_state(model, saved.model, str(path))
    model.eval()
    return LoadedRun(model, config, info, saved.header)
