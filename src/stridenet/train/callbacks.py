"""Hooks into the training loop, and the progress bar built on them.

A callback overrides any of the ``on_*`` methods; the trainer calls them at step and epoch
boundaries, when the model, optimizer and counters (``trainer.epoch``, ``trainer.batch``,
``trainer.step``) are consistent, so a callback may read them, log them, or stop training by raising
``KeyboardInterrupt`` (the trainer then saves a checkpoint it can resume from exactly).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stridenet.train.metrics import EpochMetrics
    from stridenet.train.trainer import Trainer


class Callback:
    """Base class: every hook does nothing."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Before the first step of this session (after a resume, too)."""

    def on_epoch_begin(self, trainer: Trainer) -> None:
        """Before the first batch of epoch ``trainer.epoch`` (0-based), which may start at ``trainer.batch`` > 0."""

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        """After an optimizer step; ``trainer.step`` steps are done, ``trainer.batch`` batches of this epoch."""

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        """After an epoch's row is written and its checkpoints saved; ``metrics.epoch`` is 1-based."""

    def on_train_end(self, trainer: Trainer) -> None:
        """After the last epoch (not called when training stops on an interrupt or an error)."""


class ProgressBar(Callback):
    """A per-epoch progress bar on stderr (tqdm if installed), silent unless stderr is a terminal.

    Args:
        stream: where to draw; default ``sys.stderr``.
        every: update the bar's loss display every this many steps. Default: 10.
    """

    def __init__(self, stream: Any = None, every: int = 10) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._bar: Any = None
        self._done = 0
        self._total = 0

    def on_epoch_begin(self, trainer: Trainer) -> None:
        if not self.enabled:
            return
        self._total, self._done = trainer.steps_per_epoch, trainer.batch
        desc = f"epoch {trainer.epoch + 1}/{trainer.config.epochs}"
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = desc
            return
        self._bar = tqdm(total=self._total, initial=self._done, desc=desc, file=self.stream, leave=False,
                         unit="batch", dynamic_ncols=True)

    def on_step_end(self, trainer: Trainer, loss: float) -> None:
        if self._bar is None:
            return
        self._done += 1
        if isinstance(self._bar, str):  # no tqdm: a plain line redrawn with a carriage return
            if self._done % self.every == 0 or self._done == self._total:
                self.stream.write(f"\r{self._bar}  {self._done}/{self._total}  loss {loss:.4f}")
                self.stream.flush()
            return
        self._bar.update(1)
        if self._done % self.every == 0:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        self.close()

    def close(self) -> None:
        """Remove the bar (also called by the trainer when training stops early)."""
        if isinstance(self._bar, str):
            self.stream.write("\r\033[K")
            self.stream.flush()
        elif self._bar is not None:
            self._bar.close()
        self._bar = None


class EpochLogger(Callback):
    """Prints the per-epoch line (loss, accuracy, validation, lr, images/s, elapsed time).

    Args:
        log: called with each line; default ``print``.
    """

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log

    def on_epoch_end(self, trainer: Trainer, metrics: EpochMetrics) -> None:
        self.log(metrics.format(trainer.config.epochs))
