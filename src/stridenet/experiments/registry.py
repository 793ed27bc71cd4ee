"""The list of experiments and their configuration, importable without NumPy (the CLI lists them)."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stridenet.experiments.runner import Outcome

# name -> (module, the lecture's claim in one line), in the order the docs present them
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "output-size": ("stridenet.experiments.output_size",
                    "(W - F + 2P)/S + 1 over a grid of W, F, S, P, checked against our layers' shapes"),
    "one-by-one": ("stridenet.experiments.one_by_one",
                   "a 1x1 conv is a Linear layer at every pixel; a Linear on a map is a full-size conv"),
    "stack-vs-large": ("stridenet.experiments.stack_vs_large",
                       "three stacked 3x3 convs against one 7x7: same receptive field, fewer weights"),
    "pool-vs-stride": ("stridenet.experiments.pool_vs_stride",
                       "max pooling against stride-2 convolutions (All-CNN) in a VGG-style network"),
    "fc-vs-conv": ("stridenet.experiments.fc_vs_conv",
                   "a fully connected network against a smaller CNN, on centred and shifted test images"),
}


@dataclass(frozen=True)
class Budget:
    """How much work a training experiment does; each experiment has a default and a ``--full`` one.

    Attributes:
        epochs: passes over the training subset.
        seeds: models trained per variant (seeds 0 .. seeds-1); also random trials for one-by-one.
        limit_train: training images used (a fixed random subset), None for all.
        limit_test: test images used (a fixed random subset), None for all.
        width: K, the base number of channels of the networks.
    """

    epochs: int = 1
    seeds: int = 1
    limit_train: int | None = None
    limit_test: int | None = None
    width: int = 16


@dataclass
class ExperimentConfig:
    """What the command line asked for; ``None`` fields fall back to the experiment's own budget.

    Attributes:
        dataset: dataset name for the training experiments (default ``fashion-mnist``).
        data_dir: folder with the dataset's files; None: the download cache (``$STRIDENET_DATA``).
        download: fetch a missing dataset into the cache.
        out: folder under which ``NAME/`` is written (default ``runs/experiments``).
        full: use the experiment's long budget (all data, more epochs and seeds).
        epochs, seeds, limit_train, limit_test, width: override the budget (see ``Budget``).
        batch_size: mini-batch size (default 64).
        lr: Adam learning rate; None: the trainer's default.
        verbose: print progress to stderr.
        command: the command line as typed, recorded in ``results.md``.
    """

    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    out: str = "runs/experiments"
    full: bool = False
    epochs: int | None = None
    seeds: int | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    width: int | None = None
    batch_size: int = 64
    lr: float | None = None
    verbose: bool = True
    command: str | None = None

    def budget(self, default: Budget, full: Budget) -> Budget:
        """The experiment's budget (``full`` with ``--full``), with every field the user set replacing it."""
        base = full if self.full else default
        overrides = {name: getattr(self, name) for name in ("epochs", "seeds", "limit_train", "limit_test", "width")
                     if getattr(self, name) is not None}
        return replace(base, **overrides)

    def log(self, message: str) -> None:
        """Print a progress line to stderr (stdout is kept for the results), unless not ``verbose``."""
        if self.verbose:
            print(message, file=sys.stderr, flush=True)


def experiment_module(name: str) -> ModuleType:
    """The module implementing experiment ``name`` (``TITLE``, ``QUESTION``, ``run(config, folder)``).

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name][0])


def run_experiment(name: str, config: ExperimentConfig | None = None) -> Outcome:
    """Run experiment ``name``, write its CSV, Markdown table and plot, and return where they are."""
    from stridenet.experiments.runner import run

    return run(name, config or ExperimentConfig())
