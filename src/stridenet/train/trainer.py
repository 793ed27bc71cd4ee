"""The training loop: ``Trainer(config).fit()`` (or ``fit(config)``) trains a model into a run folder.

One session runs epochs ``trainer.epoch .. config.epochs - 1``. Each step: forward, cross-entropy,
backward, optimizer step, schedule step. Each epoch ends with a validation pass, a row in
``metrics.csv`` and the ``last`` (and, on a new best validation accuracy, ``best``) checkpoint.

Resuming is exact: a checkpoint holds the model, optimizer and schedule states, the dropout
generators' states and the position (epoch, batch, step); the loader's batches depend only on
``(seed, epoch, batch)``. Ctrl-C is deferred to the end of the current step, which is then saved, so a
resumed run ends with the same parameters, bit for bit, as one never interrupted.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import stridenet
from stridenet import nn
from stridenet.errors import CheckpointError
from stridenet.train.callbacks import Callback, EpochLogger, ProgressBar
from stridenet.train.checkpoint import (
    Checkpoint,
    generator_states,
    load_checkpoint,
    load_model_state,
    restore_generator_states,
    save_checkpoint,
)
from stridenet.train.config import ConfigError, TrainConfig
from stridenet.train.inference import evaluate, evaluate_dataset
from stridenet.train.metrics import EpochMetrics
from stridenet.train.run import RunFolder, write_json
from stridenet.train.setup import Splits, default_augment, load_splits, make_loader, make_model, make_optimizer


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


@dataclass
class EpochTotals:
    """Running sums of the epoch in progress (saved in checkpoints so a resumed epoch's row is whole)."""

    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    train_s: float = 0.0


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        run_dir: the run folder.
        history: the rows of ``metrics.csv`` (all epochs so far, across resumes).
        interrupted: True when training stopped on Ctrl-C (resume with ``--resume run_dir``).
        test_acc: test accuracy of the final model (None when interrupted).
        test_loss: its test loss.
        best_epoch: 1-based epoch of the ``best`` checkpoint (highest validation accuracy, the later
            epoch on a tie; the last epoch when there is no validation split).
        best_test_acc: test accuracy of the ``best`` checkpoint.
    """

    run_dir: Path
    history: list[EpochMetrics]
    interrupted: bool = False
    test_acc: float | None = None
    test_loss: float | None = None
    best_epoch: int | None = None
    best_test_acc: float | None = None


class Trainer:
    """Trains a model on a dataset into a run folder, as ``config`` says.

    Args:
        config: the run's options; defaults are resolved (learning rate, run folder).
        resume: continue the run in ``config.out`` from its ``last`` checkpoint.
        callbacks: extra hooks, called after the progress bar and the epoch logger.
        log: where messages and epoch lines go. Default: ``print``.
        progress: show a progress bar when stderr is a terminal. Default: True.
        splits: data already loaded with ``load_splits(config)`` (to share it between runs).

    Raises:
        ConfigError: invalid options, or a new run whose folder already holds checkpoints.
        DataError: the dataset cannot be loaded.
        CheckpointError: with ``resume``, a missing or incompatible checkpoint.

    Example:
        >>> result = Trainer(TrainConfig(epochs=1, limit_train=512, out="runs/demo")).fit()  # doctest: +SKIP
    """

    def __init__(self, config: TrainConfig, *, resume: bool = False, callbacks: Sequence[Callback] = (),
                 log: Callable[[str], None] = print, progress: bool = True, splits: Splits | None = None) -> None:
        self.config = config.resolved()
        self.run = RunFolder(self.config.out)
        if not resume and self.run.has_checkpoint():
            raise ConfigError(f"{self.run.path} already holds a run; continue it with --resume {self.run.path} "
                              "or choose another --out")
        self.log = log
        self.callbacks: list[Callback] = [*([ProgressBar()] if progress else []), EpochLogger(log), *callbacks]
        self.splits = splits if splits is not None else load_splits(self.config)
        info = self.splits.info
        self.model = make_model(self.config.model, info.input_shape, len(info.classes), self.config.seed)
        augment = default_augment(self.config.dataset, info.input_shape) if self.config.augment else None
        self.loader = make_loader(self.splits.train, info, self.config.batch_size, shuffle=True,
                                  seed=self.config.seed, augment=augment)
        self.val_loader = (None if self.splits.val is None else
                           make_loader(self.splits.val, info, self.config.eval_batch_size))
        self.optimizer, self.schedule = make_optimizer(self.config, self.model, len(self.loader))
        self.loss_fn = nn.CrossEntropyLoss()
        self.epoch = self.batch = self.step = 0  # position: next epoch (0-based), next batch, steps done
        self.totals = EpochTotals()
        self.best_val_acc: float | None = None
        self.best_epoch: int | None = None
        self.elapsed_before = 0.0
        self.resumed = resume
        self._stop_requested = False
        self._consistent = True
        self._session_start = time.perf_counter()
        if resume:
            self.load_state(self.run.checkpoint_path("last"))

    @classmethod
    def resume(cls, run_dir: str | Path, *, data_dir: str | None = None, download: bool | None = None,
               threads: int | None = None, **kwargs: Any) -> Trainer:
        """A trainer continuing the run in ``run_dir`` with its saved options.

        Args:
            run_dir: the run folder.
            data_dir: where the data lives now, if it moved. download: fetch missing data.
            threads: another thread count than the run's (its last bits then differ from an
                uninterrupted run's, which a log line says).
            **kwargs: ``callbacks``, ``log``, ``progress`` as for ``Trainer``.

        Raises:
            CheckpointError: not a run folder, no ``last`` checkpoint, or data that no longer match.
        """
        config, info = RunFolder(run_dir).read_config()
        saved_threads = config.threads
        config = replace(config, out=str(run_dir), data_dir=data_dir if data_dir is not None else config.data_dir,
                         download=config.download if download is None else download,
                         threads=saved_threads if threads is None else threads)
        trainer = cls(config, resume=True, **kwargs)
        if saved_threads is not None and trainer.config.threads != saved_threads:
            trainer.log(f"resuming with {trainer.config.threads} threads where the run used {saved_threads}: "
                        "sums over images are added in another order, so the last bits will differ from "
                        "an uninterrupted run")
        found = trainer.splits.info
        for field in ("input_shape", "classes", "mean", "std", "num_train", "num_val"):
            if getattr(found, field) != getattr(info, field):
                raise CheckpointError(f"{run_dir}: the data differ from those the run started with ({field}: "
                                      f"{getattr(found, field)} now, {getattr(info, field)} in config.json)")
        return trainer

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    @property
    def elapsed_s(self) -> float:
        """Wall time of the run so far, across resumes."""
        return self.elapsed_before + time.perf_counter() - self._session_start

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train until ``config.epochs`` epochs are done, or Ctrl-C, then test the final model and the
        ``best`` checkpoint.

        Raises:
            TrainingDiverged: the loss became NaN or infinite (the last good checkpoint is kept).
        """
        with stridenet.num_threads(self.config.threads):
            return self._fit()

    def _fit(self) -> FitResult:
        self._session_start = time.perf_counter()
        try:
            with self._deferred_sigint():
                self._begin()
                for callback in self.callbacks:
                    callback.on_train_begin(self)
                while self.epoch < self.config.epochs:
                    self._run_epoch()
        except KeyboardInterrupt:
            self._close_progress()
            self._save_after_interrupt()
            return FitResult(self.run.path, self.run.metrics.read(), interrupted=True)
        except TrainingDiverged:
            self._close_progress()
            raise
        for callback in self.callbacks:
            callback.on_train_end(self)
        return self._test()

    def _begin(self) -> None:
        info = self.splits.info
        if self.resumed:
            self.run.metrics.truncate(self.epoch)
            self.log(f"resuming {self.run.path} at epoch {self.epoch + 1}, batch {self.batch} (step {self.step})")
            return
        self.run.write_config(self.config, info)
        self.log(f"run folder {self.run.path}: {self.config.dataset} ({info.num_train} train, {info.num_val} val, "
                 f"{info.num_test} test images), {self.config.model} ({self.model.num_parameters():,} parameters), "
                 f"{self.config.optimizer} lr {self.config.lr:g}, {self.config.schedule} schedule, "
                 f"{self.config.epochs} epochs, {self.config.threads} threads")

    def _run_epoch(self) -> None:
        for callback in self.callbacks:
            callback.on_epoch_begin(self)
        start = time.perf_counter()
        for x, y in self.loader.epoch(self.epoch, start_batch=self.batch):
            self._consistent = False
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is checked below
                loss, correct = self._train_step(x, y)
            self.batch += 1
            self.step += 1
            self.totals.loss_sum += loss * len(y)
            self.totals.correct += correct
            self.totals.seen += len(y)
            now = time.perf_counter()
            self.totals.train_s += now - start
            start = now
            self._consistent = True
            for callback in self.callbacks:
                callback.on_step_end(self, loss)
            if self._stop_requested:
                raise KeyboardInterrupt
        self._end_epoch()

    def _train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
        self.model.zero_grad()
        logits = self.model(x)
        loss = self.loss_fn(logits, y)
        if not math.isfinite(loss):
            self._diverged(f"loss became {loss}")
        with nn.input_grad_skipped(self.model):   # the images need no gradient
            self.model.backward(self.loss_fn.backward())
        self.optimizer.step()
        self.schedule.step()
        for name, param in self.model.named_parameters():  # a NaN that ReLU or max pooling hides from the loss
            if not np.isfinite(param.data).all():
                self._diverged(f"parameter {name!r} became non-finite")
        return float(loss), int((logits.argmax(axis=1) == y).sum())

    def _diverged(self, what: str) -> None:
        last = self.run.checkpoint_path("last")
        kept = (f"the last good checkpoint {last} (epoch {self.epoch}) is kept" if last.exists()
                else "no checkpoint was saved before")
        raise TrainingDiverged(
            f"{what} at epoch {self.epoch + 1}, step {self.step + 1} (batch {self.batch + 1} of "
            f"{self.steps_per_epoch}); the learning rate {self.optimizer.lr:.3g} is probably too high, try a "
            f"lower --lr; {kept}")

    def _end_epoch(self) -> None:
        val_loss = val_acc = math.nan
        if self.val_loader is not None:
            result = evaluate(self.model, self.val_loader)
            val_loss, val_acc = result.loss, result.accuracy
        totals = self.totals
        row = EpochMetrics(self.epoch + 1, totals.loss_sum / max(totals.seen, 1), totals.correct / max(totals.seen, 1),
                           val_loss, val_acc, self.optimizer.lr, totals.seen / max(totals.train_s, 1e-9),
                           self.elapsed_s)
        self.run.metrics.append(row)
        self.epoch, self.batch, self.totals = self.epoch + 1, 0, EpochTotals()
        improved = self.best_val_acc is None or math.isnan(val_acc) or val_acc >= self.best_val_acc
        if improved:
            self.best_val_acc, self.best_epoch = (None if math.isnan(val_acc) else val_acc), row.epoch
        self.save_state(self.run.checkpoint_path("last"))
        if improved:
            self.save_state(self.run.checkpoint_path("best"))
        for callback in self.callbacks:
            callback.on_epoch_end(self, row)
        if self._stop_requested:
            raise KeyboardInterrupt

    def _test(self) -> FitResult:
        """Test the final model and, when another epoch validated better, the ``best`` checkpoint."""
        info, epochs = self.splits.info, self.config.epochs
        final = evaluate_dataset(self.model, self.splits.test, info, self.config.eval_batch_size)
        best = final
        if self.best_epoch != epochs:
            path = self.run.checkpoint_path("best")
            model = make_model(self.config.model, info.input_shape, len(info.classes), self.config.seed)
            load_model_state(model, load_checkpoint(path).model, str(path))
            best = evaluate_dataset(model, self.splits.test, info, self.config.eval_batch_size)
        write_json(self.run.path / "result.json", {
            "test_acc": final.accuracy, "test_loss": final.loss, "epoch": epochs,
            "best_test_acc": best.accuracy, "best_test_loss": best.loss, "best_epoch": self.best_epoch,
            "best_val_acc": self.best_val_acc, "num_test": len(final.labels), "elapsed_s": self.elapsed_s})
        return FitResult(self.run.path, self.run.metrics.read(), False, final.accuracy, final.loss, self.best_epoch,
                         best.accuracy)

    # -- interrupts ---------------------------------------------------------------------------
    @contextmanager
    def _deferred_sigint(self) -> Iterator[None]:
        """Turn the first Ctrl-C into a stop request honoured after the current step (a second one
        interrupts at once). Only the main thread can install signal handlers; elsewhere, no change."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = True
            self.log("\nstopping after this step (press Ctrl-C again to stop at once, without saving it)")

        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _save_after_interrupt(self) -> None:
        last = self.run.checkpoint_path("last")
        if self._consistent:
            self.save_state(last)
            self.log(f"interrupted at epoch {self.epoch + 1}, batch {self.batch} of {self.steps_per_epoch} "
                     f"(step {self.step}); saved {last}")
        else:
            self.log(f"interrupted in the middle of a step; the last checkpoint {last} is kept"
                     if last.exists() else "interrupted before the first checkpoint; nothing to resume")
        if last.exists():
            self.log(f"resume with: stridenet train --resume {self.run.path}")

    def _close_progress(self) -> None:
        for callback in self.callbacks:
            if isinstance(callback, ProgressBar):
                callback.close()

    # -- checkpoints ----------------------------------------------------------------------------
    def save_state(self, path: str | Path) -> Path:
        """Write a checkpoint of the current position (model, optimizer, schedule, RNGs, counters)."""
        header = {"epoch": self.epoch, "batch": self.batch, "step": self.step, "epochs": self.config.epochs,
                  "steps_per_epoch": self.steps_per_epoch, "elapsed_s": self.elapsed_s,
                  "totals": asdict(self.totals), "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                  "model_spec": self.config.model, "rng": generator_states(self.model)}
        return save_checkpoint(path, Checkpoint(header, self.model.state_dict(), self.optimizer.state_dict(),
                                                self.schedule.state_dict()))

    def load_state(self, path: str | Path) -> None:
        """Restore everything :meth:`save_state` wrote, checking it fits this trainer.

        Raises:
            CheckpointError: missing file, wrong format, or keys, shapes or counters that do not fit.
        """
        saved = load_checkpoint(path)
        source, header = str(path), saved.header
        try:
            epoch, batch, step = (int(header[k]) for k in ("epoch", "batch", "step"))
            totals = EpochTotals(**header["totals"])
            steps_per_epoch = int(header["steps_per_epoch"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: malformed header ({error!r})") from None
        if steps_per_epoch != self.steps_per_epoch:
            raise CheckpointError(f"{source}: saved with {steps_per_epoch} steps per epoch, the data and batch "
                                  f"size now give {self.steps_per_epoch}")
        if not (0 <= epoch <= self.config.epochs and 0 <= batch <= self.steps_per_epoch
                and step == epoch * steps_per_epoch + batch):
            raise CheckpointError(f"{source}: inconsistent position epoch={epoch}, batch={batch}, step={step}")
        load_model_state(self.model, saved.model, source)
        self.optimizer.load_state_dict(saved.optimizer)
        self.schedule.load_state_dict(saved.schedule)
        restore_generator_states(self.model, header.get("rng"), source)
        self.epoch, self.batch, self.step, self.totals = epoch, batch, step, totals
        self.best_val_acc, self.best_epoch = header.get("best_val_acc"), header.get("best_epoch")
        self.elapsed_before = float(header.get("elapsed_s", 0.0))


def fit(config: TrainConfig, **kwargs: Any) -> FitResult:
    """Train a new run: ``Trainer(config, **kwargs).fit()``."""
    return Trainer(config, **kwargs).fit()
