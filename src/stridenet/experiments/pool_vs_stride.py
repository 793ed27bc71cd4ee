"""Experiment ``pool-vs-stride``: max pooling against strided convolutions (Springenberg et al., 2015).

A VGG-style network (two stages of two 3x3 conv-BN-ReLU layers, K and 2K filters, each stage
halving the map, then a linear classifier) in four variants, as in "Striving for Simplicity":

- ``max pool``: each stage ends in 2x2 max pooling (the paper's base model);
- ``all-cnn``: each pooling layer replaced by a 3x3 stride-2 convolution (All-CNN);
- ``strided``: pooling removed, the stage's last convolution gets stride 2 (Strided-CNN);
- ``conv+pool``: an extra 3x3 convolution before each pooling (ConvPool-CNN), the paper's control
  with the same layers and parameters as All-CNN, so the extra weights alone can be judged.
"""

from __future__ import annotations

from pathlib import Path

from stridenet.errors import DataError
from stridenet.experiments.plots import plot_comparison
from stridenet.experiments.registry import Budget, ExperimentConfig
from stridenet.experiments.report import Report, Table, count, mean_std
from stridenet.experiments.training import column, fastest_epoch, load_data, settings, train_variants

TITLE = "max pooling against stride-2 convolutions (All-CNN)"
QUESTION = ("Can a convolution with stride 2 replace max pooling without losing accuracy (Springenberg "
            "et al., 2015, \"Striving for Simplicity: The All Convolutional Net\")?")
DEFAULT = Budget(epochs=2, seeds=2, limit_train=10_000, limit_test=None, width=8)
FULL = Budget(epochs=5, seeds=5, limit_train=None, limit_test=None, width=8)
MODELS = ("max pool", "all-cnn", "strided", "conv+pool")
# Springenberg et al. (2015), Table 3: CIFAR-10 test error without data augmentation
PAPER = {"max pool": ("Model C", "9.74%"), "all-cnn": ("All-CNN-C", "9.08%"),
         "strided": ("Strided-CNN-C", "10.19%"), "conv+pool": ("ConvPool-CNN-C", "9.31%")}


def conv_bn_relu(K: int, stride: int = 1) -> str:
    """3x3 convolution (padding 1, no bias: batch norm has one), batch norm, ReLU, as a one-line spec."""
    return f"conv3x{K}{f's{stride}' if stride != 1 else ''}p1nb-bn-relu"


def model_spec(variant: str, K: int) -> str:
    """The VGG-style network in ``variant`` (one of ``MODELS``) as a one-line spec; every variant
    halves the map twice, so all end in the same 2K x H/4 x W/4 map before the classifier.

    Raises:
        ValueError: an unknown variant.
    """
    if variant not in MODELS:
        raise ValueError(f"unknown variant {variant!r}; valid variants: {', '.join(MODELS)}")
    parts: list[str] = []
    for width in (K, 2 * K):
        parts.append(conv_bn_relu(width))
        parts.append(conv_bn_relu(width, stride=2 if variant == "strided" else 1))
        if variant == "max pool":
            parts.append("pool2")
        elif variant == "all-cnn":
            parts.append(conv_bn_relu(width, stride=2))
        elif variant == "conv+pool":
            parts += [conv_bn_relu(width), "pool2"]
    return "-".join([*parts, "fc"])


def run(config: ExperimentConfig, folder: Path) -> Report:
    """Train the four variants for every seed; tabulate parameters, time, accuracy and the paper's errors."""
    budget = config.budget(DEFAULT, FULL)
    data = load_data(config, budget)
    K = budget.width
    _, H, W = data.input_shape
    if H % 4 or W % 4:
        raise DataError(f"pool-vs-stride: expected images whose sides are multiples of 4, received {H}x{W}")
    specs = {name: model_spec(name, K) for name in MODELS}
    records = train_variants(specs, data, budget, config, folder)
    rows = []
    for name in MODELS:
        first = next(r for r in records if r["model"] == name)
        accuracy = column(records, name, "test_accuracy")
        paper, error = PAPER[name]
        rows.append([name, count(first["params"]), count(first["macs_per_image"]),
                     fastest_epoch(records, name),
                     mean_std(accuracy, scale=100), mean_std([1 - a for a in accuracy], scale=100),
                     f"{paper}: {error}"])
    table = Table(["variant", "params", "MACs/image", "fastest epoch, s", "test accuracy %", "test error %",
                   "paper, CIFAR-10 error"], rows,
                  title=f"K = {K}; mean ± std over {budget.seeds} seed(s)")
    notes = [
        f"Layers: [conv3-{K}, conv3-{K}, DOWN, conv3-{2 * K}, conv3-{2 * K}, DOWN, linear], every conv followed by "
        "batch norm and ReLU; DOWN is 2x2 max pooling, a 3x3 stride-2 conv (all-cnn), nothing with the "
        "previous conv at stride 2 (strided), or a conv and max pooling (conv+pool).",
        "Models (one-line specs): " + "; ".join(f"{name}: `{spec}`" for name, spec in specs.items()) + ".",
        "The paper's column is quoted from Springenberg et al. (2015), Table 3: CIFAR-10 without augmentation, "
        "networks of about a million parameters with 3x3 stride-2 max pooling, dropout and no batch norm, "
        "trained for hundreds of epochs. It is context, not a number this run reproduces.",
    ]
    return Report([table], records, settings(data, budget, config),
                  lambda path: plot_comparison(records, list(MODELS), path,
                                               f"pooling vs strided convolutions (K = {K}), {data.description}"),
                  notes)
