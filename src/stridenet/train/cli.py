"""The ``train``, ``eval`` and ``predict`` subcommands: parse options into a ``TrainConfig`` and hand off.

NumPy and the rest of stridenet are imported inside the handlers, so ``stridenet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

# train options that map one to one onto TrainConfig fields: (flag, field, type, help)
TRAIN_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--dataset", "dataset", str, "mnist-sample (built in, default), mnist, fashion-mnist, cifar10 or folder"),
    ("--data-dir", "data_dir", str, "folder holding the dataset files (default: the download cache)"),
    ("--model", "model", str, "preset name (lenet5, cs231n-3layer, vgg-small, vgg-mini, allcnn, resnet-small), "
                              "spec file or one-line spec (default: conv5x32p2-relu-pool2-conv5x64p2-relu-pool2-"
                              "fc256-relu-drop0.5-fc)"),
    ("--epochs", "epochs", int, "passes over the training split (default: 6)"),
    ("--batch-size", "batch_size", int, "images per step (default: 64)"),
    ("--lr", "lr", float, "learning rate, the peak for onecycle (default: 0.05 for sgd, 0.002 for adam/adamw)"),
    ("--optimizer", "optimizer", str, "sgd, adam (default) or adamw"),
    ("--momentum", "momentum", float, "SGD momentum or Adam beta1 (default: 0.9)"),
    ("--weight-decay", "weight_decay", float, "L2 penalty, decoupled for adamw (default: 0)"),
    ("--schedule", "schedule", str, "learning-rate schedule: constant, step, cosine (default) or onecycle"),
    ("--warmup-epochs", "warmup_epochs", int, "epochs of linear warm-up before the schedule (default: 0)"),
    ("--val-fraction", "val_fraction", float, "share of the training images held out for validation, "
                                              "0 for none (default: 0.1)"),
    ("--seed", "seed", int, "seed of initialisation, dropout, validation split and batches (default: 0)"),
    ("--out", "out", str, "run folder (default: runs/<dataset>-<model>-<timestamp>)"),
    ("--limit-train", "limit_train", int, "use only the first N training images"),
    ("--limit-test", "limit_test", int, "use only the first N test images"),
    ("--channels", "channels", int, "convert images to 1 (gray) or 3 (RGB) channels"),
    ("--threads", "threads", int, "threads each batch is split across (default: STRIDENET_NUM_THREADS or the "
                                  "usable cores); kept with the run for --resume"),
)
TRAIN_FLAGS = (
    ("--download", "download", "download the dataset into the cache if it is missing"),
    ("--augment", "augment", "random crops (and horizontal flips, except for digits) while training"),
)
RESUMABLE = ("data_dir", "download", "threads")  # may be given with --resume (the data may have moved)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train``, ``eval`` and ``predict`` subcommands."""
    train = subparsers.add_parser(
        "train", help="train a model into a run folder",
        description="Train a model. Without options: a two-stage CNN on the built-in MNIST sample (about 98.2% "
                    "test accuracy in about a minute on 2 cores). Ctrl-C saves a checkpoint; --resume RUN "
                    "continues exactly.")
    for flag, dest, kind, text in TRAIN_OPTIONS:
        train.add_argument(flag, dest=dest, type=kind, default=None, help=text, metavar=_metavar(flag, kind))
    train.add_argument("--image-size", dest="image_size", type=int, nargs=2, default=None, metavar=("H", "W"),
                       help="resize folder images to H x W")
    for flag, dest, text in TRAIN_FLAGS:
        train.add_argument(flag, dest=dest, action="store_true", default=None, help=text)
    train.add_argument("--resume", metavar="RUN", default=None,
                       help="continue the run in folder RUN from its last checkpoint, with its saved options")
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "eval", help="evaluate a trained run on a test split",
        description="Print accuracy, per-class accuracy and the confusion matrix; write RUN/eval.json.")
    evaluate.add_argument("run", metavar="RUN", help="run folder")
    evaluate.add_argument("--checkpoint", default="best", help="best (default) or last")
    evaluate.add_argument("--dataset", default=None, help="dataset to evaluate on (default: the run's)")
    evaluate.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    evaluate.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    evaluate.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default: 500)")
    evaluate.set_defaults(handler=run_eval)

    predict = subparsers.add_parser(
        "predict", help="classify image files with a trained run",
        description="Classify PNG/JPG images (converted to the run's channels, resized to its size) or .npy "
                    "arrays (of the run's size) and print the top-k classes with probabilities.")
    predict.add_argument("run", metavar="RUN", help="run folder")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help=".png, .jpg, .jpeg or .npy files")
    predict.add_argument("--top-k", type=int, default=3, help="classes to show per image (default: 3)")
    predict.add_argument("--checkpoint", default="best", help="best (default) or last")
    predict.add_argument("--invert", action="store_true",
                         help="invert gray levels (dark digits on white paper -> MNIST's white on black)")
    predict.set_defaults(handler=run_predict)


def _metavar(flag: str, kind: type) -> str:
    if kind is int:
        return "N"
    if kind is float:
        return "X"
    return {"--data-dir": "DIR", "--out": "DIR", "--optimizer": "NAME", "--schedule": "NAME"}.get(
        flag, flag.lstrip("-").upper())


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``stridenet train``."""
    from stridenet.cli import UsageError
    from stridenet.train.config import ConfigError, TrainConfig
    from stridenet.train.trainer import Trainer, TrainingDiverged

    fields = [dest for _, dest, _, _ in TRAIN_OPTIONS] + ["image_size"] + [dest for _, dest, _ in TRAIN_FLAGS]
    given = {dest: getattr(args, dest) for dest in fields if getattr(args, dest) is not None}
    try:
        if args.resume is not None:
            extra = sorted(f"--{dest.replace('_', '-')}" for dest in given if dest not in RESUMABLE)
            if extra:
                raise UsageError(f"--resume continues a run with the options it was started with; "
                                 f"drop {', '.join(extra)}")
            trainer = Trainer.resume(args.resume, data_dir=given.get("data_dir"), download=given.get("download"),
                                     threads=given.get("threads"))
        else:
            if "image_size" in given:
                given["image_size"] = tuple(given["image_size"])
            trainer = Trainer(TrainConfig(**given))
        result = trainer.fit()
    except ConfigError as error:
        raise UsageError(str(error)) from None
    except TrainingDiverged as error:
        print(f"stridenet train: error: {error}", file=sys.stderr)
        return 1
    if result.interrupted:
        return 130
    best = ("" if result.best_epoch == trainer.config.epochs else
            f"; best checkpoint (epoch {result.best_epoch}): {100 * result.best_test_acc:.2f}%")
    print(f"test accuracy {100 * result.test_acc:.2f}% on {len(trainer.splits.test)} images (final model, epoch "
          f"{trainer.config.epochs}){best}; elapsed {trainer.elapsed_s:.0f}s")
    print(f"run folder: {result.run_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Handler of ``stridenet eval``."""
    import numpy as np

    from stridenet.cli import UsageError
    from stridenet.data import load_dataset
    from stridenet.train.inference import evaluate_dataset, load_run
    from stridenet.train.metrics import format_confusion
    from stridenet.train.run import RunFolder, write_json

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive integer, received {args.limit}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be a positive integer, received {args.batch_size}")
    model, config, info, header = load_run(args.run, args.checkpoint)
    dataset = args.dataset or config.dataset
    data_dir = args.data_dir if args.data_dir is not None or args.dataset else config.data_dir
    _, test = load_dataset(dataset, data_dir, args.download, image_size=config.image_size,
                           channels=info.input_shape[0])
    if args.limit is not None:
        test = test.subset(np.arange(min(args.limit, len(test))))
    result = evaluate_dataset(model, test, info, args.batch_size)
    matrix = result.confusion(len(info.classes))
    per_class = result.per_class()
    print(f"{args.checkpoint} checkpoint (epoch {header.get('epoch')}) on {dataset} test, {len(test)} images: "
          f"accuracy {100 * result.accuracy:.2f}%, loss {result.loss:.4f}")
    width = max(len(name) for name in info.classes)
    print("per-class accuracy:")
    for name, acc, total in zip(info.classes, per_class, matrix.sum(axis=1), strict=True):
        shown = "   n/a" if np.isnan(acc) else f"{100 * acc:6.2f}%"
        print(f"  {name:<{width}}  {shown}  ({total} images)")
    print("confusion matrix (rows: true class, columns: predicted):")
    print(format_confusion(matrix, info.classes))
    path = RunFolder(args.run).eval_path
    write_json(path, {
        "checkpoint": args.checkpoint, "epoch": header.get("epoch"), "dataset": dataset, "split": "test",
        "num_images": len(test), "accuracy": result.accuracy, "loss": result.loss, "classes": info.classes,
        "per_class_accuracy": {name: None if np.isnan(a) else float(a) for name, a in zip(info.classes, per_class,
                                                                                          strict=True)},
        "confusion_matrix": matrix.tolist()})
    print(f"wrote {path}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Handler of ``stridenet predict``."""
    import numpy as np

    from stridenet.cli import UsageError
    from stridenet.train.images import load_image
    from stridenet.train.inference import load_run, predict_proba

    if args.top_k < 1:
        raise UsageError(f"--top-k must be a positive integer, received {args.top_k}")
    model, _, info, _ = load_run(args.run, args.checkpoint)
    loaded = [load_image(path, info.input_shape, args.invert) for path in args.images]
    probabilities = predict_proba(model, np.stack([image for image, _ in loaded]), info)
    k = min(args.top_k, len(info.classes))
    for path, (_, note), probs in zip(args.images, loaded, probabilities, strict=True):
        top = np.argsort(-probs, kind="stable")[:k]
        ranked = ", ".join(f"{info.classes[i]} {100 * probs[i]:.1f}%" for i in top)
        print(f"{path}: {ranked}" + (f"  ({note})" if note else ""))
    return 0
