"""Experiment ``fc-vs-conv``: a fully connected network against a smaller CNN, on shifted images too.

The lecture's case for convolutions: local connectivity and weight sharing need far fewer
parameters than full connectivity, and a feature detector that works at one place works at every
place. Measured here by training both networks on the same images and testing them on the test
set as is and shifted by 1 to 4 pixels (each image in one random direction, zeros shifted in).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stridenet import nn
from stridenet.experiments.registry import Budget, ExperimentConfig
from stridenet.experiments.report import Report, Table, count, mean, mean_std, std
from stridenet.experiments.training import (
    Data,
    accuracy,
    column,
    fastest_epoch,
    load_data,
    settings,
    train_variants,
)

TITLE = "a fully connected network against a smaller CNN, on centred and shifted images"
QUESTION = ("Does a CNN with fewer parameters than a fully connected network match or beat it, and does it "
            "cope better when the test images are shifted by a few pixels?")
DEFAULT = Budget(epochs=2, seeds=3, limit_train=10_000, limit_test=None, width=16)
FULL = Budget(epochs=5, seeds=5, limit_train=None, limit_test=None, width=16)
SHIFTS = (0, 1, 2, 3, 4)
HIDDEN = 100
SHIFT_SEED = 1234  # the same shifted test images for every model and seed
MODELS = ("fully connected", "CNN")


def shift_images(images: np.ndarray, pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Move each image ``pixels`` left, right, up or down (drawn per image), filling with zeros."""
    if pixels == 0:
        return images
    out = np.zeros_like(images)
    direction = rng.integers(0, 4, len(images))
    p = pixels
    # (rows out, columns out, rows in, columns in)
    moves = ((slice(None), slice(p, None), slice(None), slice(None, -p)),   # right
             (slice(None), slice(None, -p), slice(None), slice(p, None)),   # left
             (slice(p, None), slice(None), slice(None, -p), slice(None)),   # down
             (slice(None, -p), slice(None), slice(p, None), slice(None)))   # up
    for d, (out_h, out_w, in_h, in_w) in enumerate(moves):
        chosen = direction == d
        out[chosen, :, out_h, out_w] = images[chosen][:, :, in_h, in_w]
    return out


def model_spec(name: str, K: int) -> str:
    """``fully connected``: flatten, fc100, relu, fc; ``CNN``: conv5-K, pool, conv5-2K, pool, fc."""
    if name == "fully connected":
        return f"fc{HIDDEN}-relu-fc"
    return f"conv5x{K}p2-relu-pool2-conv5x{2 * K}p2-relu-pool2-fc"


def shifted_accuracies(model: nn.Layer, data: Data) -> dict[str, float]:
    """Test accuracy at every shift in ``SHIFTS`` (the same shifted images for every model and seed)."""
    images = data.splits.test.images
    return {f"accuracy_shift_{s}": accuracy(model, shift_images(images, s, np.random.default_rng(SHIFT_SEED + s)),
                                            data)
            for s in SHIFTS}


def run(config: ExperimentConfig, folder: Path) -> Report:
    """Train both networks for every seed; tabulate parameters, time and accuracy at every shift."""
    budget = config.budget(DEFAULT, FULL)
    data = load_data(config, budget)
    K = budget.width
    specs = {name: model_spec(name, K) for name in MODELS}
    records = train_variants(specs, data, budget, config, folder, shifted_accuracies)
    rows = []
    for name in MODELS:
        first = next(r for r in records if r["model"] == name)
        rows.append([name, count(first["params"]), count(first["macs_per_image"]),
                     fastest_epoch(records, name),
                     *(mean_std(column(records, name, f"accuracy_shift_{s}"), scale=100, digits=1) for s in SHIFTS),
                     mean_std(retained(records, name, SHIFTS[-1]), scale=100, digits=1)])
    table = Table(["model", "params", "MACs/image", "fastest epoch, s", *(f"acc % shift {s}px" for s in SHIFTS),
                   f"kept at {SHIFTS[-1]}px, % of 0px"], rows,
                  title=f"Test accuracy (%) by shift; mean ± std over {budget.seeds} seed(s)")
    notes = [
        "Models (one-line specs; `fc` flattens an image first and ends in one output per class): "
        + "; ".join(f"{name}: `{spec}`" for name, spec in specs.items()) + ". Neither saw shifted images "
        "in training.",
        "Shift s: every test image moved s pixels in one random direction (left, right, up or down), the "
        "border filled with zeros (the background); the same shifted images for both models.",
    ]
    return Report([table], records, settings(data, budget, config), lambda path: plot(records, path), notes)


def retained(records: list[dict[str, object]], model: str, shift: int) -> list[float]:
    """Per seed, accuracy at ``shift`` as a fraction of the accuracy on the unshifted images."""
    return [s / c for s, c in zip(column(records, model, f"accuracy_shift_{shift}"),
                                  column(records, model, "accuracy_shift_0"), strict=True)]


def plot(records: list[dict[str, object]], path: Path) -> None:
    """Accuracy against shift, absolute and relative to no shift, one line per model (mean ± std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_abs, ax_rel) = plt.subplots(1, 2, figsize=(11, 4))
    for i, name in enumerate(MODELS):
        params = count(column(records, name, "params")[0])
        for ax, values in ((ax_abs, [column(records, name, f"accuracy_shift_{s}") for s in SHIFTS]),
                           (ax_rel, [retained(records, name, s) for s in SHIFTS])):
            ax.errorbar(SHIFTS, [100 * mean(v) for v in values], yerr=[100 * std(v) for v in values], marker="o",
                        capsize=3, color=f"C{i}", label=f"{name} ({params} params)")
    ax_abs.set_ylabel("test accuracy (%)")
    ax_rel.set_ylabel("accuracy kept (% of unshifted)")
    for ax in (ax_abs, ax_rel):
        ax.set_xlabel("test images shifted by (pixels)")
        ax.set_xticks(list(SHIFTS))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
