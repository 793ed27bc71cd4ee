"""Experiment ``one-by-one``: convolutions that are Linear layers, and Linear layers that are convolutions.

Three equivalences from the lecture, each checked on outputs and on all gradients (dx, dW, db)
with the same weights in both layers and random inputs and upstream gradients:

1. A 1x1 convolution C -> K equals a Linear(C, K) applied to the C-vector at every pixel.
2. A Linear(C*H*W, K) on a flattened H x W map equals a convolution with an H x W kernel (output 1x1).
3. That converted convolution, run on a larger image, equals the Linear layer applied to every
   H x W crop (the lecture's "slide the whole network in one forward pass").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stridenet import nn
from stridenet.experiments.registry import Budget, ExperimentConfig
from stridenet.experiments.report import Report, Table

TITLE = "1x1 convolutions are per-pixel Linear layers; Linear layers are full-size convolutions"
QUESTION = ("Do a 1x1 convolution and a Linear layer applied at every pixel compute the same thing, "
            "forwards and backwards; and a Linear layer on a flattened map and a convolution whose "
            "kernel covers the whole map?")
DEFAULT = Budget(seeds=5)
FULL = Budget(seeds=50)
DTYPES = (np.float64, np.float32)
# (N, C, H, W, K): batch, input channels, map size, outputs
SHAPE = (4, 16, 7, 7, 10)
BIG = 11  # image side for case 3: (11 - 7 + 1)^2 = 25 crop positions


def _max_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest |a - b| and that divided by the largest |b| (the relative error)."""
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return diff, diff / max(float(np.max(np.abs(b.astype(np.float64)))), 1e-300)


Diffs = dict[str, tuple[float, float]]


def pointwise(rng: np.random.Generator, dtype: type) -> Diffs:
    """Case 1: Conv2d(C, K, 1) against Linear(C, K) on (N*H*W, C); max |difference| of out, dx, dW, db."""
    N, C, H, W, K = SHAPE
    conv = nn.Conv2d(C, K, 1, dtype=dtype, rng=rng)
    linear = nn.Linear(C, K, dtype=dtype, rng=rng)
    linear.weight.data[...] = conv.weight.data.reshape(K, C)
    linear.bias.data[...] = conv.bias.data
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    dout = rng.standard_normal((N, K, H, W)).astype(dtype)
    out_conv = conv(x)
    # (N, C, H, W) -> (N*H*W, C): one row per pixel
    out_lin = linear(x.transpose(0, 2, 3, 1).reshape(-1, C))
    dx_conv = conv.backward(dout)
    dx_lin = linear.backward(dout.transpose(0, 2, 3, 1).reshape(-1, K))
    return {
        "out": _max_diff(out_conv, out_lin.reshape(N, H, W, K).transpose(0, 3, 1, 2)),
        "dx": _max_diff(dx_conv, dx_lin.reshape(N, H, W, C).transpose(0, 3, 1, 2)),
        "dW": _max_diff(conv.weight.grad.reshape(K, C), linear.weight.grad),
        "db": _max_diff(conv.bias.grad, linear.bias.grad),
    }


def _linear_and_conv(rng: np.random.Generator, dtype: type) -> tuple[nn.Linear, nn.Conv2d]:
    _, C, H, W, K = SHAPE
    linear = nn.Linear(C * H * W, K, dtype=dtype, rng=rng)
    conv = nn.Conv2d(C, K, (H, W), dtype=dtype, rng=rng)
    conv.weight.data[...] = linear.weight.data.reshape(K, C, H, W)  # Flatten's (C, H, W) order
    conv.bias.data[...] = linear.bias.data
    return linear, conv


def full_size(rng: np.random.Generator, dtype: type) -> Diffs:
    """Case 2: Linear(C*H*W, K) on the flattened map against Conv2d(C, K, (H, W)) giving (N, K, 1, 1)."""
    N, C, H, W, K = SHAPE
    linear, conv = _linear_and_conv(rng, dtype)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    dout = rng.standard_normal((N, K)).astype(dtype)
    out_lin = linear(x.reshape(N, -1))
    out_conv = conv(x)
    dx_lin = linear.backward(dout).reshape(N, C, H, W)
    dx_conv = conv.backward(dout.reshape(N, K, 1, 1))
    return {
        "out": _max_diff(out_conv.reshape(N, K), out_lin),
        "dx": _max_diff(dx_conv, dx_lin),
        "dW": _max_diff(conv.weight.grad.reshape(K, -1), linear.weight.grad),
        "db": _max_diff(conv.bias.grad, linear.bias.grad),
    }


def sliding(rng: np.random.Generator, dtype: type) -> Diffs:
    """Case 3: the converted conv on a BIG x BIG image against the Linear layer on every H x W crop;
    gradients summed over all crops (the Linear layer is shared between them, as the conv's weights)."""
    N, C, H, W, K = SHAPE
    linear, conv = _linear_and_conv(rng, dtype)
    x = rng.standard_normal((N, C, BIG, BIG)).astype(dtype)
    out_conv = conv(x)  # (N, K, BIG-H+1, BIG-W+1)
    positions = [(i, j) for i in range(BIG - H + 1) for j in range(BIG - W + 1)]
    dout = rng.standard_normal(out_conv.shape).astype(dtype)
    dx_conv = conv.backward(dout)
    dx_lin = np.zeros_like(x)
    out_lin = np.zeros_like(out_conv)
    for i, j in positions:
        crop = x[:, :, i:i + H, j:j + W]
        out_lin[:, :, i, j] = linear(crop.reshape(N, -1))
        dx_lin[:, :, i:i + H, j:j + W] += linear.backward(dout[:, :, i, j]).reshape(N, C, H, W)
    return {
        "out": _max_diff(out_conv, out_lin),
        "dx": _max_diff(dx_conv, dx_lin),
        "dW": _max_diff(conv.weight.grad.reshape(K, -1), linear.weight.grad),
        "db": _max_diff(conv.bias.grad, linear.bias.grad),
    }


CASES = {
    "1x1 conv vs Linear at every pixel": pointwise,
    "Linear on flattened map vs full-size conv": full_size,
    f"full-size conv on {BIG}x{BIG} vs Linear on every crop": sliding,
}
QUANTITIES = ("out", "dx", "dW", "db")
FLOOR = 1e-18  # where an exact zero is drawn on the log scale


def run(config: ExperimentConfig, folder: Path) -> Report:
    """Check each case ``seeds`` times per dtype with fresh random weights, inputs and gradients."""
    budget = config.budget(DEFAULT, FULL)
    records: list[dict[str, object]] = []
    for case, check in CASES.items():
        for dtype in DTYPES:
            for seed in range(budget.seeds):
                diffs = check(np.random.default_rng(seed), dtype)
                records.append({"case": case, "dtype": np.dtype(dtype).name, "seed": seed,
                                **{f"max_abs_diff_{q}": diffs[q][0] for q in QUANTITIES},
                                **{f"rel_diff_{q}": diffs[q][1] for q in QUANTITIES}})
    rows = []
    for case in CASES:
        for dtype in DTYPES:
            mine = [r for r in records if r["case"] == case and r["dtype"] == np.dtype(dtype).name]
            worst = [max(float(r[f"max_abs_diff_{q}"]) for r in mine) for q in QUANTITIES]
            relative = max(float(r[f"rel_diff_{q}"]) for r in mine for q in QUANTITIES)
            rows.append([case, np.dtype(dtype).name, *(f"{w:.1e}" for w in worst), f"{relative:.1e}",
                         f"{np.finfo(dtype).eps:.1e}"])
    N, C, H, W, K = SHAPE
    table = Table(["case", "dtype", "max abs diff: output", "dx", "dW", "db", "largest relative diff",
                   "machine epsilon"], rows,
                  title=f"Largest difference over {budget.seeds} random draws")
    notes = [
        f"Shapes: input (N, C, H, W) = {(N, C, H, W)}, K = {K} outputs; case 3 runs the converted "
        f"{H}x{W} convolution on {BIG}x{BIG} images, which is {(BIG - H + 1) ** 2} crop positions at once.",
        "*Relative diff* is the absolute difference divided by the largest magnitude of that quantity. "
        "A zero means the two layers ran the very same matrix product; otherwise they add the same "
        "products in a different order (the bias gradient sums over pixels in a different order, case 3 "
        "sums the crops one by one), and the difference is rounding: a few machine epsilons.",
    ]
    settings = {"random draws per case and dtype": budget.seeds}
    return Report([table], records, settings, lambda path: plot(records, path), notes)


def plot(records: list[dict[str, object]], path: Path) -> None:
    """Bars of the largest difference per case, quantity and dtype (log scale), with epsilon lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CASES), figsize=(4.2 * len(CASES), 3.6), sharey=True)
    width = 0.38
    for ax, case in zip(axes, CASES, strict=True):
        for k, dtype in enumerate(DTYPES):
            name = np.dtype(dtype).name
            mine = [r for r in records if r["case"] == case and r["dtype"] == name]
            worst = [max(float(r[f"rel_diff_{q}"]) for r in mine) for q in QUANTITIES]
            xs = np.arange(len(QUANTITIES)) + (k - 0.5) * width
            ax.bar(xs, [w if w > 0 else np.nan for w in worst], width, label=name, color=f"C{k}")
            for x, w in zip(xs, worst, strict=True):
                if w == 0:
                    ax.text(x, FLOOR * 2, "0", ha="center", fontsize=8)
            ax.axhline(np.finfo(dtype).eps, color=f"C{k}", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(FLOOR, 1e-5)
        ax.set_xlim(-0.6, len(QUANTITIES) - 0.4)
        ax.set_xticks(range(len(QUANTITIES)), QUANTITIES)
        ax.set_title(case, fontsize=9)
    axes[0].set_ylabel("largest relative difference\n(dashed: machine epsilon; 0 = identical)")
    axes[0].legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
