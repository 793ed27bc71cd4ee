"""Experiment ``stack-vs-large``: three stacked 3x3 convolutions against one 7x7 convolution.

The lecture: three 3x3 CONV layers (stride 1, with ReLUs between) see a 7x7 region of their input,
like one 7x7 layer, but with K channels in and out they hold 3 * 9K^2 = 27K^2 weights instead of
49K^2, and put three nonlinearities where the 7x7 layer has one. Both blocks sit at the same place
in the same small network (stem conv3-K, pool, BLOCK, pool, linear), so everything else is equal.
"""

from __future__ import annotations

from pathlib import Path

from stridenet import nn
from stridenet.experiments.plots import plot_comparison
from stridenet.experiments.registry import Budget, ExperimentConfig
from stridenet.experiments.report import Report, Table, count, mean_std
from stridenet.experiments.training import column, fastest_epoch, load_data, settings, train_variants
from stridenet.models import build_model, summary

TITLE = "three stacked 3x3 convolutions against one 7x7"
QUESTION = ("Three 3x3 convolutions with ReLUs see the same 7x7 region as one 7x7 convolution; with K "
            "channels they need 27K² weights instead of 49K². Are they also cheaper to run, and do they "
            "learn as well or better?")
DEFAULT = Budget(epochs=2, seeds=3, limit_train=10_000, limit_test=None, width=16)
FULL = Budget(epochs=5, seeds=5, limit_train=None, limit_test=None, width=16)
MODELS = {"3x3 stack": (3, 3), "7x7": (1, 7)}  # name -> (layers in the block, kernel size)
FORMULA = {"3x3 stack": "27K²", "7x7": "49K²"}


def block_spec(name: str, K: int) -> str:
    """The compared block as a one-line spec: conv-relu repeated, 'same' padding, K -> K channels."""
    layers, kernel = MODELS[name]
    return "-".join([f"conv{kernel}x{K}p{kernel // 2}-relu"] * layers)


def model_spec(name: str, K: int) -> str:
    """The whole network: stem [conv3-K, relu, pool2], the block, head [pool2, flatten, fc]."""
    return f"conv3x{K}p1-relu-pool2-{block_spec(name, K)}-pool2-fc"


def block_stats(name: str, K: int, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """Receptive field, weights (no biases), parameters and multiply-adds per image of the block alone,
    on the K x H/2 x W/2 map the stem hands it."""
    _, H, W = input_shape
    block_shape = (K, H // 2, W // 2)
    block = build_model(block_spec(name, K), block_shape, 10, rng=0)
    table = summary(block, block_shape)
    weights = sum(layer.weight.data.size for layer in block if isinstance(layer, nn.Conv2d))
    return {"block_receptive_field": table.rows[-1].receptive_field, "block_weights": weights,
            "block_params": table.total_params, "block_macs": table.total_macs}


def run(config: ExperimentConfig, folder: Path) -> Report:
    """Train both networks for every seed and tabulate structure, time and accuracy."""
    budget = config.budget(DEFAULT, FULL)
    data = load_data(config, budget)
    K = budget.width
    stats = {name: block_stats(name, K, data.input_shape) for name in MODELS}
    specs = {name: model_spec(name, K) for name in MODELS}
    records = [{**r, **stats[str(r["model"])]} for r in train_variants(specs, data, budget, config, folder)]
    rows = []
    for name in MODELS:
        s = stats[name]
        first = next(r for r in records if r["model"] == name)
        rows.append([name, f"{s['block_receptive_field']}x{s['block_receptive_field']}",
                     f"{FORMULA[name]} = {count(s['block_weights'])}", count(s["block_macs"]),
                     count(first["params"]), count(first["macs_per_image"]),
                     fastest_epoch(records, name),
                     mean_std(column(records, name, "test_accuracy"), scale=100)])
    table = Table(["block", "receptive field", "block weights", "block MACs/image", "model params",
                   "model MACs/image", "fastest epoch, s", "test accuracy %"], rows,
                  title=f"K = {K} channels; mean ± std over {budget.seeds} seed(s)")
    _, H, W = data.input_shape
    notes = [
        f"Blocks act on the {K}x{H // 2}x{W // 2} map the stem produces. *Block weights* excludes biases "
        f"(3K = {3 * K} for the stack, K = {K} for the 7x7); MACs are multiply-adds per image. "
        "*Fastest epoch* is the shortest wall time of one epoch's training steps (forward, backward, Adam; "
        "evaluation excluded) over all runs of the model: the least disturbed by other work on the machine.",
        "Models (one-line specs, train one with `stridenet train --model SPEC`): "
        + "; ".join(f"{name}: `{spec}`" for name, spec in specs.items()) + ".",
    ]
    return Report([table], records, settings(data, budget, config),
                  lambda path: plot_comparison(records, list(MODELS), path,
                                               f"stack of three 3x3 vs one 7x7 (K = {K}), {data.description}"),
                  notes)
