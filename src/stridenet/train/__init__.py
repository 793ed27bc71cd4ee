"""Training: the trainer, checkpoints, metrics, callbacks and run folders.

Typical use::

    from stridenet.train import TrainConfig, fit, load_run, predict_proba

    result = fit(TrainConfig(dataset="mnist-sample", model="lenet5", epochs=3, out="runs/demo"))
    model, config, info, header = load_run(result.run_dir)          # the best checkpoint
    probabilities = predict_proba(model, images_uint8_nchw, info)   # (N, K)

Names are imported lazily so that ``stridenet --help`` (which imports ``stridenet.train.cli``) does not
load NumPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Callback": "callbacks",
    "ProgressBar": "callbacks",
    "EpochLogger": "callbacks",
    "Checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ConfigError": "config",
    "DataInfo": "config",
    "TrainConfig": "config",
    "Evaluation": "inference",
    "LoadedRun": "inference",
    "evaluate": "inference",
    "evaluate_dataset": "inference",
    "load_run": "inference",
    "predict_proba": "inference",
    "EpochMetrics": "metrics",
    "MetricsLog": "metrics",
    "confusion_matrix": "metrics",
    "RunFolder": "run",
    "Splits": "setup",
    "load_splits": "setup",
    "make_model": "setup",
    "FitResult": "trainer",
    "Trainer": "trainer",
    "TrainingDiverged": "trainer",
    "fit": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stridenet.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stridenet.train.{_EXPORTS[name]}"), name)
