"""The figure the training experiments share: accuracy per seed, time per epoch, parameters."""

from __future__ import annotations

from pathlib import Path

from stridenet.experiments.report import mean, std
from stridenet.experiments.training import column


def plot_comparison(records: list[dict[str, object]], models: list[str], path: Path, title: str) -> None:
    """Three panels per model: test accuracy (each seed, and mean ± std), fastest epoch, parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_time, ax_params) = plt.subplots(1, 3, figsize=(13, 3.8))
    xs = range(len(models))
    for i, model in enumerate(models):
        acc = [100 * a for a in column(records, model, "test_accuracy")]
        ax_acc.scatter([i] * len(acc), acc, color=f"C{i}", alpha=0.5, s=18)
        ax_acc.errorbar(i + 0.15, mean(acc), yerr=std(acc), fmt="o", color=f"C{i}", capsize=4)
        ax_time.bar(i, min(column(records, model, "fastest_epoch_s")), color=f"C{i}")
        ax_params.bar(i, column(records, model, "params")[0], color=f"C{i}")
    for ax, label in ((ax_acc, "test accuracy (%)"), (ax_time, "fastest epoch (s)"), (ax_params, "parameters")):
        ax.set_xticks(list(xs), models, rotation=15)
        ax.set_ylabel(label)
    ax_acc.set_title("dots: seeds; bar: mean ± std", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
