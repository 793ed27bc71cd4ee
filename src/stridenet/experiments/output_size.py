"""Experiment ``output-size``: the lecture's (W - F + 2P)/S + 1, checked against our layers.

Over a grid of input sizes W, filter sizes F, strides S and paddings P the formula either gives a
whole number of at least 1 (the setting "fits": the windows tile the padded input exactly), a
fraction (the last S - 1 or fewer columns are never reached and our layers, like PyTorch, round
down), or a value below 1 (no window fits; our layers refuse). Each setting is run through a real
``Conv2d`` and, where pooling allows that padding, a ``MaxPool2d``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from stridenet import nn
from stridenet.errors import ShapeError
from stridenet.experiments.registry import ExperimentConfig
from stridenet.experiments.report import Report, Table
from stridenet.functional.geometry import unseen_pixels, window_axis

TITLE = "the output-size formula against the shapes our layers produce"
QUESTION = ("Does (W - F + 2P)/S + 1 give the output size of a convolution or pooling layer, and which "
            "settings \"do not fit\" (a fractional or non-positive result)?")

WIDTHS = (5, 7, 10, 11, 28, 32, 224, 227)
FILTERS = (1, 2, 3, 5, 7, 11)
STRIDES = (1, 2, 3, 4)
PADDINGS = (0, 1, 2, 3)
# (W, F, S, P, where the lecture or a classic network uses it)
EXAMPLES = (
    (7, 3, 1, 0, "lecture: 7x7 input, 3x3 filter, stride 1"),
    (7, 3, 2, 0, "lecture: stride 2"),
    (7, 3, 3, 0, "lecture: stride 3 \"doesn't fit\""),
    (32, 5, 1, 2, "lecture: 32x32x3 input, 5x5 filters, pad 2"),
    (32, 3, 1, 1, "'same' padding P = (F - 1)/2"),
    (28, 2, 2, 0, "2x2 max pooling, stride 2"),
    (227, 11, 4, 0, "AlexNet conv1 on 227x227"),
    (224, 11, 4, 0, "AlexNet conv1 as the paper states it (224x224)"),
    (224, 11, 4, 2, "AlexNet conv1 in torchvision (224x224, pad 2)"),
    (2, 3, 2, 0, "input smaller than the filter"),
)


def formula(W: int, F: int, S: int, P: int) -> Fraction:
    """(W - F + 2P)/S + 1 as an exact fraction."""
    return Fraction(W - F + 2 * P, S) + 1


def layer_out(layer: nn.Layer, W: int) -> int | None:
    """Output width ``layer`` produces for a (1, 1, W, W) input, or None when it raises ShapeError."""
    try:
        with nn.no_grad():
            return int(layer(np.zeros((1, 1, W, W), np.float32)).shape[-1])
    except ShapeError:
        return None


def measure(W: int, F: int, S: int, P: int) -> dict[str, object]:
    """One grid point: the formula, whether it fits, what Conv2d and MaxPool2d produce, and whether
    they agree with floor(formula) (or refuse when it is below 1)."""
    value = formula(W, F, S, P)
    fits = value.denominator == 1 and value >= 1
    expected = int(value) if value >= 1 else None  # floor for positive values; None: the layer must refuse
    conv = layer_out(nn.Conv2d(1, 1, F, stride=S, padding=P, rng=0), W)
    pool_allowed = P <= F // 2  # PyTorch's (and our) limit on pooling padding
    pool = layer_out(nn.MaxPool2d(F, stride=S, padding=P), W) if pool_allowed else None
    unseen = unseen_pixels(window_axis(W, F, S, 1, (P, P))) if value >= 1 else W
    return {
        "W": W, "F": F, "S": S, "P": P,
        "formula": f"({W} - {F} + {2 * P})/{S} + 1",
        "value": round(float(value), 4),
        "fits": fits,
        "status": "fits" if fits else ("fraction" if value >= 1 else "below 1"),
        "conv_out": "error" if conv is None else conv,
        "pool_out": ("error" if pool is None else pool) if pool_allowed else "n/a",
        "conv_agrees": conv == expected,
        "pool_agrees": (pool == expected) if pool_allowed else "n/a",
        "unseen_pixels": unseen,
    }


def _cell(value: object) -> str:
    return str(value)


def run(config: ExperimentConfig, folder: Path) -> Report:
    """Measure the whole grid (ignores the dataset and training options)."""
    records = [measure(W, F, S, P) for W in WIDTHS for F in FILTERS for S in STRIDES for P in PADDINGS]
    config.log(f"  {len(records)} settings measured")
    statuses = [r["status"] for r in records]
    pool_checked = [r for r in records if r["pool_agrees"] != "n/a"]
    summary = Table(
        ["settings", "fit", "fraction (round down)", "below 1 (error)", "Conv2d agrees", "MaxPool2d agrees"],
        [[f"{len(records)}", f"{statuses.count('fits')}", f"{statuses.count('fraction')}",
          f"{statuses.count('below 1')}", f"{sum(bool(r['conv_agrees']) for r in records)}/{len(records)}",
          f"{sum(bool(r['pool_agrees']) for r in pool_checked)}/{len(pool_checked)}"]],
        title=f"Grid W in {WIDTHS}, F in {FILTERS}, S in {STRIDES}, P in {PADDINGS}",
    )
    example_rows = []
    for W, F, S, P, where in EXAMPLES:
        r = measure(W, F, S, P)
        value = formula(W, F, S, P)
        shown = f"{float(value):.4g}" if value.denominator != 1 else f"{value}"
        example_rows.append([where, f"{W}", f"{F}", f"{S}", f"{P}", f"{r['formula']} = {shown}",
                             "yes" if r["fits"] else "no", _cell(r["conv_out"]), _cell(r["pool_out"]),
                             _cell(r["unseen_pixels"])])
    examples = Table(["setting", "W", "F", "S", "P", "(W - F + 2P)/S + 1", "fits", "Conv2d", "MaxPool2d",
                      "unseen pixels"], example_rows, title="The lecture's examples and two classic ones")
    disagreements = [r for r in records if not r["conv_agrees"] or r["pool_agrees"] is False]
    notes = [
        "*fits*: the formula is a whole number of at least 1. For a fraction our layers (like PyTorch) "
        "round down and the last *unseen pixels* columns of the input are never read; below 1 they raise "
        "a ShapeError that prints the formula. MaxPool2d is checked only where its padding is at most "
        "half the window (PyTorch's rule).",
        f"Disagreements between the formula and our layers: {len(disagreements)}.",
    ]
    return Report([summary, examples], records, {"grid": f"{len(records)} settings"},
                  lambda path: plot(records, path), notes)


def plot(records: list[dict[str, object]], path: Path, widths: tuple[int, ...] = (7, 32)) -> None:
    """Heat maps over F and S, one per input width W (rows) and padding P (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    codes = {"fits": 2, "fraction": 1, "below 1": 0}
    fig, axes = plt.subplots(len(widths), len(PADDINGS), figsize=(3.2 * len(PADDINGS), 3.0 * len(widths)),
                             sharex=True, sharey=True, squeeze=False)
    cmap = ListedColormap(["#d9534f", "#f0ad4e", "#5cb85c"])
    for row, W in enumerate(widths):
        for ax, P in zip(axes[row], PADDINGS, strict=True):
            grid = np.zeros((len(FILTERS), len(STRIDES)))
            for r in records:
                if r["W"] == W and r["P"] == P:
                    i, j = FILTERS.index(r["F"]), STRIDES.index(r["S"])
                    grid[i, j] = codes[str(r["status"])]
                    ax.text(j, i, f"{r['value']:.4g}", ha="center", va="center", fontsize=8)
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=2, aspect="auto")
            ax.set_xticks(range(len(STRIDES)), [str(s) for s in STRIDES])
            ax.set_yticks(range(len(FILTERS)), [str(f) for f in FILTERS])
            ax.set_title(f"W = {W}, P = {P}", fontsize=10)
        axes[row][0].set_ylabel("filter size F")
    for ax in axes[-1]:
        ax.set_xlabel("stride S")
    fig.suptitle("(W - F + 2P)/S + 1: green fits, orange is a fraction (our layers round down), red is below 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
