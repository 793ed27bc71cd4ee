"""The trainer as a library: NaN stop, run folder contents, config records, load_run and prediction."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stridenet.train import (
    Callback,
    ConfigError,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    evaluate_dataset,
    load_checkpoint,
    load_run,
    predict_proba,
)
from stridenet.train.metrics import COLUMNS, confusion_matrix, per_class_accuracy


def quiet(config: TrainConfig, splits, **kwargs) -> Trainer:
    return Trainer(config, splits=splits, progress=False, log=lambda line: None, **kwargs)


@pytest.fixture(scope="module")
def finished(tiny_config, tiny_splits, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    trainer = quiet(replace(tiny_config, out=str(out)), tiny_splits)
    return trainer, trainer.fit()


def test_run_folder_contents(finished) -> None:
    trainer, result = finished
    run = result.run_dir
    assert {p.name for p in run.iterdir()} == {"config.json", "metrics.csv", "last.npz", "best.npz", "result.json"}
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["model"] == trainer.config.model and record["config"]["seed"] == 0
    assert record["config"]["lr"] == 3e-3 and record["config"]["out"] == str(run)
    assert record["data"]["input_shape"] == [1, 8, 8] and record["data"]["classes"] == ["c0", "c1", "c2", "c3"]
    assert len(record["data"]["mean"]) == 1 and len(record["data"]["std"]) == 1
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 3
    assert [r.epoch for r in trainer.run.metrics.read()] == [1, 2]
    assert result.test_acc is not None and 0 <= result.test_acc <= 1 and not result.interrupted
    record = json.loads((run / "result.json").read_text())
    assert (record["test_acc"], record["best_test_acc"]) == (result.test_acc, result.best_test_acc)


def test_best_checkpoint_has_the_best_validation_accuracy(finished) -> None:
    trainer, result = finished
    rows = trainer.run.metrics.read()
    best = max(rows, key=lambda r: (r.val_acc, r.epoch))  # the later epoch on a tie
    assert result.best_epoch == best.epoch
    assert load_checkpoint(result.run_dir / "best.npz").header["epoch"] == best.epoch


def test_load_run_rebuilds_the_model(finished, tiny_splits) -> None:
    _, result = finished
    model, config, info, header = load_run(result.run_dir)
    assert not model.training and config.model.startswith("conv3x8") and header["epoch"] == result.best_epoch
    evaluation = evaluate_dataset(model, tiny_splits.test, info)
    assert evaluation.accuracy == result.best_test_acc
    probs = predict_proba(model, tiny_splits.test.images, info)
    assert probs.shape == (32, 4) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(axis=1), evaluation.predictions)
    last, *_ = load_run(result.run_dir, checkpoint="last")
    assert last.state_dict().keys() == model.state_dict().keys()


def test_nan_loss_stops_with_epoch_and_step(tiny_config, tiny_splits, tmp_path) -> None:
    config = replace(tiny_config, out=str(tmp_path), optimizer="sgd", lr=1e12, warmup_epochs=0)
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+ .*lower --lr; no checkpoint"):
        quiet(config, tiny_splits).fit()


class Poison(Callback):
    """Put an infinity into the first weight at the start of epoch 2: the next loss is not finite."""

    def on_epoch_begin(self, trainer: Trainer) -> None:
        if trainer.epoch == 1:
            trainer.model.parameters()[0].data[...] = np.inf


def test_nan_loss_keeps_the_last_good_checkpoint(tiny_config, tiny_splits, tmp_path) -> None:
    config = replace(tiny_config, out=str(tmp_path), epochs=3)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step 7 \(batch 1 of 6\).*last good checkpoint"):
        quiet(config, tiny_splits, callbacks=[Poison()]).fit()
    saved = load_checkpoint(tmp_path / "last.npz")
    assert saved.header["epoch"] == 1
    assert all(np.isfinite(v).all() for v in saved.model.values())
    model, *_ = load_run(tmp_path, checkpoint="last")
    assert np.isfinite(model.parameters()[0].data).all()


def test_a_new_run_refuses_a_folder_holding_a_run(finished, tiny_config, tiny_splits) -> None:
    _, result = finished
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        quiet(replace(tiny_config, out=str(result.run_dir)), tiny_splits)


def test_resume_of_a_finished_run_only_tests(finished, tiny_splits) -> None:
    trainer, result = finished
    again = quiet(trainer.config, tiny_splits, resume=True)
    assert (again.epoch, again.batch) == (2, 0)
    assert again.fit().test_acc == result.test_acc


def test_config_round_trip_and_validation() -> None:
    config = TrainConfig(image_size=(32, 32), lr=0.1, out="x").resolved()
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TrainConfig(optimizer="sgd").resolved().lr == 0.05
    assert TrainConfig(model="lenet5").resolved().out.startswith("runs/mnist-sample-lenet5-")
    assert TrainConfig(model="nets/wide.toml").resolved().out.startswith("runs/mnist-sample-wide-")
    for bad, message in [(dict(dataset="imagenet"), "unknown dataset 'imagenet'; valid names: mnist-sample"),
                         (dict(optimizer="rmsprop"), "unknown optimizer"), (dict(schedule="poly"), "unknown schedule"),
                         (dict(epochs=0), "epochs must be"), (dict(lr=-1.0), "lr must be"),
                         (dict(schedule="onecycle", warmup_epochs=1), "own warm-up"),
                         (dict(val_fraction=1.0), "val_fraction")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig(**bad).validate()
    with pytest.raises(ConfigError, match="unknown training options"):
        TrainConfig.from_dict({"nope": 1})


def test_metrics_helpers() -> None:
    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 4)
    assert matrix.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    acc = per_class_accuracy(matrix)
    assert acc[:3].tolist() == [0.5, 1.0, 0.0] and math.isnan(acc[3])


def test_unknown_model_is_a_config_error(tiny_config, tiny_splits, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet-huge'"):
        quiet(replace(tiny_config, model="resnet-huge", out=str(tmp_path)), tiny_splits)
