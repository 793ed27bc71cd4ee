"""The ``experiment`` subcommand: run one of the lecture's claims as a measured experiment.

NumPy and the experiments themselves are imported inside the handler, so ``stridenet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from stridenet.experiments.registry import EXPERIMENTS, ExperimentConfig

# (flag, ExperimentConfig field, type, help); None defaults fall back to each experiment's budget
OPTIONS = (
    ("--epochs", "epochs", int, "passes over the training images (default: the experiment's, usually 2)"),
    ("--seeds", "seeds", int, "models trained per variant, seeds 0..N-1 (default: the experiment's, 2-3)"),
    ("--limit-train", "limit_train", int, "use the first N training images (default: 10,000; --full: all)"),
    ("--limit-test", "limit_test", int, "use the first N test images (default: all)"),
    ("--width", "width", int, "K, the base number of channels of the networks (default: the experiment's)"),
    ("--batch-size", "batch_size", int, "images per training step (default: 64)"),
)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``experiment`` subcommand."""
    listing = "\n".join(f"  {name:<15} {line}" for name, (_, line) in EXPERIMENTS.items())
    parser = subparsers.add_parser(
        "experiment", help="reproduce one of the lecture's claims as a measured experiment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run an experiment and write results.csv, results.md and plot.png into OUT/NAME; print "
                    "its table. Default budgets take at most about 10 minutes on 2 cores; --full runs longer.",
        epilog=f"experiments:\n{listing}\n  {'all':<15} every experiment in turn")
    parser.add_argument("name", metavar="NAME", choices=[*EXPERIMENTS, "all"], help="experiment to run (see below)")
    parser.add_argument("--dataset", default="fashion-mnist",
                        help="dataset of the training experiments: fashion-mnist (default), mnist, mnist-sample "
                             "(built in), cifar10")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder holding the dataset files (default: the download cache, $STRIDENET_DATA)")
    parser.add_argument("--download", action="store_true", help="download the dataset into the cache if missing")
    for flag, dest, _, text in OPTIONS:
        parser.add_argument(flag, dest=dest, type=_positive, default=None, metavar="N", help=text)
    parser.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate (default: 0.002)")
    parser.add_argument("--full", action="store_true", help="the long budget: all training images, 5 epochs, "
                                                            "5 seeds (hours on 2 cores)")
    parser.add_argument("--out", default="runs/experiments", metavar="DIR",
                        help="results go to DIR/NAME (default: runs/experiments)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(handler=run_command)


def command_line(args: argparse.Namespace) -> str:
    """The command as it would be typed, options in a fixed order, defaults left out."""
    parts = ["stridenet", "experiment", args.name]
    if args.dataset != "fashion-mnist":
        parts += ["--dataset", args.dataset]
    if args.data_dir is not None:
        parts += ["--data-dir", args.data_dir]
    if args.download:
        parts.append("--download")
    for flag, dest, _, _ in OPTIONS:
        if getattr(args, dest) is not None:
            parts += [flag, str(getattr(args, dest))]
    if args.lr is not None:
        parts += ["--lr", f"{args.lr:g}"]
    if args.full:
        parts.append("--full")
    if args.out != "runs/experiments":
        parts += ["--out", args.out]
    return " ".join(shlex.quote(part) for part in parts)


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``stridenet experiment``: run the experiment(s), print the tables and where files went."""
    from pathlib import Path

    from stridenet.cli import UsageError
    from stridenet.experiments.registry import experiment_module
    from stridenet.experiments.runner import run
    from stridenet.train import ConfigError, TrainingDiverged

    if args.data_dir is not None and not Path(args.data_dir).is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such folder")
    names = list(EXPERIMENTS) if args.name == "all" else [args.name]
    for name in names:
        config = ExperimentConfig(
            dataset=args.dataset, data_dir=args.data_dir, download=args.download, out=args.out, full=args.full,
            epochs=args.epochs, seeds=args.seeds, limit_train=args.limit_train, limit_test=args.limit_test,
            width=args.width, batch_size=args.batch_size or 64, lr=args.lr, verbose=not args.quiet,
            command=command_line(argparse.Namespace(**{**vars(args), "name": name})))
        try:
            outcome = run(name, config)
        except (ConfigError, TrainingDiverged) as error:
            raise UsageError(str(error)) from None
        print(f"{name}: {experiment_module(name).TITLE}")
        for table in outcome.report.tables:
            print()
            print(table.markdown())
        files = [outcome.csv_path, outcome.markdown_path] + ([outcome.plot_path] if outcome.plot_path else [])
        print(f"\n{outcome.wall_s:.1f} s; wrote {', '.join(str(f) for f in files)}\n")
        sys.stdout.flush()
    return 0
