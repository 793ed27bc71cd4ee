"""Resuming is exact: an interrupted and resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import stridenet
from stridenet.train import Callback, ConfigError, TrainConfig, Trainer

STEPS_PER_EPOCH = 6  # 96 training images, batch size 16


class RaiseAt(Callback):
    """Raise ``error`` after optimizer step ``step`` (or at the end of epoch ``epoch``, 1-based)."""

    def __init__(self, error: BaseException, step: int | None = None, epoch: int | None = None) -> None:
        self.error, self.at_step, self.at_epoch = error, step, epoch

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        if trainer.step == self.at_step:
            raise self.error

    def on_epoch_end(self, trainer, metrics) -> None:
        if metrics.epoch == self.at_epoch:
            raise self.error


class SigintAt(Callback):
    """Send this process a real SIGINT (Ctrl-C) after step ``step``."""

    def __init__(self, step: int) -> None:
        self.at_step = step

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        if trainer.step == self.at_step:
            os.kill(os.getpid(), signal.SIGINT)


def train(config: TrainConfig, splits, out: Path, *callbacks: Callback, resume: bool = False) -> Trainer:
    trainer = Trainer(replace(config, out=str(out)), resume=resume, callbacks=callbacks, splits=splits,
                      log=lambda line: None, progress=False)
    trainer.fit()
    return trainer


def assert_bit_identical(a: Trainer, b: Trainer) -> None:
    for name, state_a, state_b in (("model", a.model.state_dict(), b.model.state_dict()),
                                   ("optimizer", a.optimizer.state_dict(), b.optimizer.state_dict()),
                                   ("schedule", a.schedule.state_dict(), b.schedule.state_dict())):
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert np.array_equal(state_a[key], state_b[key]), f"{name} {key} differs"
    assert (a.epoch, a.batch, a.step) == (b.epoch, b.batch, b.step)


@pytest.fixture(scope="module")
def straight(tiny_config, tiny_splits, tmp_path_factory) -> Trainer:
    """The reference: two epochs without interruption."""
    return train(tiny_config, tiny_splits, tmp_path_factory.mktemp("straight"))


def test_model_has_dropout_and_batchnorm(straight: Trainer) -> None:
    kinds = [type(m).__name__ for m in straight.model.modules()]
    assert kinds.count("Dropout") == 2 and "BatchNorm2d" in kinds
    assert straight.loader.augment is not None and straight.loader.augment.flip


def test_resume_after_kill_at_epoch_end_is_bit_exact(tiny_config, tiny_splits, tmp_path, straight) -> None:
    """A crash right after epoch 1 (no interrupt handling at all) resumes from the epoch-end checkpoint."""
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny_config, tiny_splits, tmp_path, RaiseAt(RuntimeError("killed"), epoch=1))
    resumed = train(tiny_config, tiny_splits, tmp_path, resume=True)
    assert_bit_identical(resumed, straight)


@pytest.mark.parametrize("step", [8, STEPS_PER_EPOCH])  # mid-epoch 2, and the last batch of epoch 1
def test_ctrl_c_saves_the_step_and_resumes_bit_exact(tiny_config, tiny_splits, tmp_path, straight, step) -> None:
    lines: list[str] = []
    trainer = Trainer(replace(tiny_config, out=str(tmp_path)), callbacks=[RaiseAt(KeyboardInterrupt(), step=step)],
                      splits=tiny_splits, log=lines.append, progress=False)
    result = trainer.fit()
    assert result.interrupted and result.test_acc is None
    assert any(f"--resume {tmp_path}" in line for line in lines)
    resumed = train(tiny_config, tiny_splits, tmp_path, resume=True)
    assert_bit_identical(resumed, straight)
    rows, reference = resumed.run.metrics.read(), straight.run.metrics.read()
    assert [r.epoch for r in rows] == [1, 2]
    for row, ref in zip(rows, reference, strict=True):  # the interrupted epoch's row is whole
        assert (row.train_loss, row.train_acc, row.val_loss, row.val_acc, row.lr) == \
               (ref.train_loss, ref.train_acc, ref.val_loss, ref.val_acc, ref.lr)


def test_real_sigint_stops_after_the_step(tiny_config, tiny_splits, tmp_path, straight) -> None:
    before = signal.getsignal(signal.SIGINT)   # Python's default, or SIG_IGN under nohup or a background job
    interrupted = train(tiny_config, tiny_splits, tmp_path, SigintAt(step=3))
    assert (interrupted.epoch, interrupted.batch, interrupted.step) == (0, 3, 3)
    assert signal.getsignal(signal.SIGINT) is before  # handler put back
    resumed = train(tiny_config, tiny_splits, tmp_path, resume=True)
    assert_bit_identical(resumed, straight)


def test_metrics_csv_is_appended_on_resume(tiny_config, tiny_splits, tmp_path) -> None:
    config = replace(tiny_config, epochs=3)
    with pytest.raises(RuntimeError):
        train(config, tiny_splits, tmp_path, RaiseAt(RuntimeError("killed"), epoch=1))
    first = (tmp_path / "metrics.csv").read_text()
    resumed = train(config, tiny_splits, tmp_path, resume=True)
    text = (tmp_path / "metrics.csv").read_text()
    assert text.startswith(first)
    assert [r.epoch for r in resumed.run.metrics.read()] == [1, 2, 3]
    assert text.count("epoch,") == 1


def test_resume_drops_rows_written_after_the_checkpoint(tiny_config, tiny_splits, tmp_path) -> None:
    """A crash between writing epoch 2's row and its checkpoint: the row is written again, once."""
    config = replace(tiny_config, epochs=3)
    with pytest.raises(RuntimeError):
        train(config, tiny_splits, tmp_path, RaiseAt(RuntimeError("killed"), epoch=1))
    log = Trainer(replace(config, out=str(tmp_path)), resume=True, splits=tiny_splits, progress=False,
                  log=lambda line: None).run.metrics
    rows = log.read()
    log.append(replace(rows[0], epoch=2))  # as if epoch 2 had finished its row, then died
    resumed = train(config, tiny_splits, tmp_path, resume=True)
    assert [r.epoch for r in resumed.run.metrics.read()] == [1, 2, 3]


class ThreadsSeen(Callback):
    """Records the kernels' thread count at every step."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        self.seen.add(stridenet.get_num_threads())


def test_the_run_keeps_its_thread_count_and_resume_uses_it(tiny_config, tiny_splits, tmp_path) -> None:
    """Per-thread gradient sums are added up, so the count is part of the run: config.json keeps it,
    training runs with it (and restores the setting after), and --resume uses it again unless told
    otherwise, which it then says."""
    before = stridenet.get_num_threads()
    seen = ThreadsSeen()
    config = replace(tiny_config, threads=3)
    train(config, tiny_splits, tmp_path, seen, RaiseAt(KeyboardInterrupt(), step=3))
    assert seen.seen == {3} and stridenet.get_num_threads() == before
    assert json.loads((tmp_path / "config.json").read_text())["config"]["threads"] == 3

    again, lines = ThreadsSeen(), []
    resumed = Trainer.resume(tmp_path, splits=tiny_splits, callbacks=[again], log=lines.append, progress=False)
    resumed.fit()
    assert resumed.config.threads == 3 and again.seen == {3} and not any("threads" in line for line in lines)

    other, lines = ThreadsSeen(), []
    train(config, tiny_splits, tmp_path / "other", RaiseAt(KeyboardInterrupt(), step=3))
    switched = Trainer.resume(tmp_path / "other", threads=1, splits=tiny_splits, callbacks=[other],
                              log=lines.append, progress=False)
    switched.fit()
    assert other.seen == {1}
    assert any("resuming with 1 threads where the run used 3" in line for line in lines)


def test_a_new_run_records_the_default_thread_count(tiny_config) -> None:
    assert replace(tiny_config, out="x").resolved().threads == stridenet.get_num_threads()
    with pytest.raises(ConfigError, match="threads must be a positive integer, received 0"):
        replace(tiny_config, threads=0).validate()
