"""Looking inside trained networks: filters, activation maps, curves, confusion, saliency, reports.

``probe`` computes (NumPy only); ``network`` and ``results`` draw (matplotlib, imported inside the
functions); ``gallery`` makes every figure for a run and ``report`` puts them on one HTML page.
Names are imported on first use, so ``stridenet --help`` (which loads ``stridenet.viz.cli``) does not
import NumPy.

Example::

    from stridenet.viz import activation_maps, plot_activation_map
    for record in activation_maps(model, x):          # x: normalised (1, C, H, W)
        plot_activation_map(record).savefig(f"layer_{record.name}.png")
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "gallery": ("Evaluation", "evaluate", "write_figures"),
    "network": ("plot_activation_map", "plot_filters", "plot_saliency", "plot_top_activations"),
    "probe": ("LayerOutput", "TopActivations", "activation_maps", "confident_mistakes", "confusion_matrix",
              "per_class_accuracy", "predict_proba", "saliency_map", "top_activating_images"),
    "report": ("build_report", "write_report"),
    "results": ("plot_confusion_matrix", "plot_mistakes", "plot_per_class_accuracy", "plot_training_curves",
                "read_metrics"),
    "run": ("RunData", "load_run_data"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'stridenet.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stridenet.viz.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
