"""Every figure for one trained model, made one at a time so a caller can save or embed each and let
it go: ``evaluate`` runs the test set once, ``panels`` yields the figures in report order."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stridenet import nn
from stridenet.data import normalize
from stridenet.viz import network, probe, results
from stridenet.viz._common import save_figure
from stridenet.viz.run import RunData

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SECTIONS = {
    "curves": "Training curves",
    "evaluation": "Test-set evaluation",
    "filters": "What the filters look for",
    "activations": "Activation maps",
    "saliency": "Saliency",
    "mistakes": "Mistakes",
}


@dataclass
class Evaluation:
    """The model's predictions on the test set.

    Attributes:
        probs: (N, K) class probabilities.
        predictions: (N,) predicted classes.
        confusion: (K, K) counts, row = true class, column = predicted.
        per_class: (K,) accuracy of each true class.
        accuracy: overall accuracy.
    """

    probs: np.ndarray
    predictions: np.ndarray
    confusion: np.ndarray
    per_class: np.ndarray
    accuracy: float


@dataclass
class Panel:
    """One figure and where it belongs.

    Attributes:
        key: file stem, e.g. ``"filters"`` or ``"activations_03_layer_3"``.
        section: key of ``SECTIONS``.
        caption: one sentence telling what the figure shows.
        make: builds the figure when called.
    """

    key: str
    section: str
    caption: str
    make: Callable[[], Figure]


@dataclass
class ProbeInput:
    """The image whose activation maps and saliency are shown.

    Attributes:
        image: uint8 (C, H, W).
        label: its true class if known (a test image), else None.
        source: where it came from, e.g. ``"test image #7"``.
    """

    image: np.ndarray
    label: int | None
    source: str


def evaluate(run: RunData, batch_size: int = 256, show_progress: bool = False) -> Evaluation | None:
    """Predict the whole test set once (None when the run has no test set)."""
    if run.test_images is None or run.test_labels is None or not len(run.test_images):
        return None
    probs = probe.predict_proba(run.model, run.test_images, run.mean, run.std, batch_size, show_progress)
    predictions = probs.argmax(axis=1)
    cm = probe.confusion_matrix(run.test_labels, predictions, len(run.classes))
    accuracy = float(np.mean(predictions == run.test_labels))
    return Evaluation(probs, predictions, cm, probe.per_class_accuracy(cm), accuracy)


def probe_input(run: RunData, image: np.ndarray | None = None, index: int = 0) -> ProbeInput:
    """The given uint8 (C, H, W) image, else test image ``index``.

    Raises:
        IndexError: ``index`` outside the test set.
        ValueError: no image and no test set, or an image whose shape differs from the model's input.
    """
    if image is not None:
        if tuple(image.shape) != tuple(run.input_shape):
            raise ValueError(f"the model takes images of shape {tuple(run.input_shape)}, received {image.shape}")
        return ProbeInput(image, None, "the given image")
    if run.test_images is None or run.test_labels is None:
        raise ValueError("no image given and the run has no test set to take one from")
    if not -len(run.test_images) <= index < len(run.test_images):
        raise IndexError(f"index {index} is outside the test set of {len(run.test_images)} images")
    index %= len(run.test_images)
    return ProbeInput(run.test_images[index], int(run.test_labels[index]), f"test image #{index}")


def slug(text: str) -> str:
    """A file-name-safe version of a layer name (``"4.block.0"`` -> ``"4_block_0"``)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_") or "model"


def deeper_conv_layers(run: RunData, count: int = 3) -> list[str]:
    """Names of up to ``count`` convolutions after the first, evenly spread and always with the last."""
    names = list(probe.spatial_layers(run.model, (nn.Conv2d,)))[1:]
    if len(names) <= count:
        return names
    picks = np.linspace(0, len(names) - 1, count).round().astype(int)
    return [names[i] for i in sorted(set(picks))]


def check_sections(sections: Collection[str] | None) -> set[str]:
    """The section keys to make (all of ``SECTIONS`` for None).

    Raises:
        ValueError: an unknown key, listing the valid ones.
    """
    if sections is None:
        return set(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown figure sections {unknown}; valid: {', '.join(SECTIONS)}")
    return set(sections)


def needs_evaluation(sections: Collection[str] | None) -> bool:
    """Whether any of ``sections`` needs the predictions on the whole test set."""
    return bool(check_sections(sections) & {"evaluation", "mistakes"})


def panels(run: RunData, evaluation: Evaluation | None, chosen: ProbeInput, sections: Collection[str] | None = None,
           top_images: int = 2000, mistakes: int = 18, show_progress: bool = False) -> Iterator[Panel]:
    """The figures for ``run``, in report order. Work for a figure starts when its ``make`` is called,
    except the activation maps and the strongest-input search, which run when reached here.

    Args:
        run: the model and data.
        evaluation: from ``evaluate`` (None skips the confusion matrix and mistakes).
        chosen: the input for activation maps and saliency.
        sections: keys of ``SECTIONS`` to make; default all.
        top_images: how many test images to search for the strongest inputs of deeper channels.
        mistakes: how many confidently wrong images to show.
        show_progress: show progress bars on stderr for the longer passes.

    Raises:
        ValueError: an unknown section.
    """
    want = check_sections(sections)
    has_test = run.test_images is not None and run.test_labels is not None and len(run.test_images) > 0
    if "curves" in want and run.metrics:
        yield Panel("curves", "curves", "Loss and accuracy per epoch on the training and validation splits.",
                    lambda: results.plot_training_curves(run.metrics, f"Training curves: {run.name}"))
    if "evaluation" in want and evaluation is not None and has_test:
        yield Panel("confusion", "evaluation", "Rows are true classes, columns predicted ones; the diagonal is "
                    "correct.", lambda: results.plot_confusion_matrix(evaluation.confusion, run.classes))
        yield Panel("per_class_accuracy", "evaluation", "Share of each class's test images classified correctly.",
                    lambda: results.plot_per_class_accuracy(evaluation.per_class, run.classes))
    if "filters" in want:
        yield from _filter_panels(run, top_images if has_test else 0, show_progress)
    x = normalize(chosen.image[None], run.mean, run.std)
    if "activations" in want:
        for i, record in enumerate(probe.activation_maps(run.model, x)):
            yield Panel(f"activations_{i:02d}_{slug(record.name)}", "activations",
                        f"Outputs of layer {record.name} for {chosen.source}.",
                        lambda record=record: network.plot_activation_map(record))
    if "saliency" in want:
        yield Panel("saliency", "saliency", f"Which pixels of {chosen.source} the predicted score is most "
                    "sensitive to.", lambda: _saliency_figure(run, chosen, x))
    if "mistakes" in want and evaluation is not None and has_test:
        wrong = probe.confident_mistakes(run.test_labels, evaluation.probs, mistakes)
        yield Panel("mistakes", "mistakes", "Test images the model got wrong with the highest confidence.",
                    lambda: results.plot_mistakes(run.test_images, run.test_labels, evaluation.probs, wrong,
                                                  run.classes))


def _filter_panels(run: RunData, top_images: int, show_progress: bool) -> Iterator[Panel]:
    """First-layer filters, then the strongest test images of deeper convolutions (if ``top_images``)."""
    first_name, first = probe.first_conv(run.model)
    yield Panel("filters", "filters", f"Weights of the first convolution (layer {first_name}), each filter scaled "
                "to its own range.", lambda: network.plot_filters(first.weight.data,
                                                                  f"First-layer filters (layer {first_name})"))
    deeper = deeper_conv_layers(run)
    if not deeper or not top_images or run.test_images is None:
        return
    candidates = run.test_images[:top_images]
    tops = probe.top_activating_images(run.model, candidates, run.mean, run.std, deeper, show_progress=show_progress)
    for top in tops:
        yield Panel(f"top_{slug(top.name)}", "filters", f"Test images that most excite a few channels of layer "
                    f"{top.name} (searched among {len(candidates)}).",
                    lambda top=top: network.plot_top_activations(top, candidates))


def _saliency_figure(run: RunData, chosen: ProbeInput, x: np.ndarray) -> Figure:
    saliency, predicted, logits = probe.saliency_map(run.model, x)
    z = logits.astype(np.float64) - logits.max()
    probability = float(np.exp(z[predicted]) / np.exp(z).sum())
    return network.plot_saliency(chosen.image, saliency, run.classes, predicted, probability, chosen.label)


def write_figures(run: RunData, out_dir: str | Path, image: np.ndarray | None = None, index: int = 0,
                  sections: Collection[str] | None = None, dpi: int = 100, show_progress: bool = False,
                  on_write: Callable[[Path], None] | None = None) -> list[Path]:
    """Save every figure of ``panels`` as ``out_dir/<key>.png``.

    Args:
        run: the model and its data.
        out_dir: folder for the PNG files (created).
        image: uint8 (C, H, W) image for activation maps and saliency; default test image ``index``.
        index: test image used when no image is given.
        sections: keys of ``SECTIONS`` to make; default all.
        dpi: resolution.
        show_progress: show progress on stderr for the passes over the test set.
        on_write: called with each path once written (e.g. to print it).

    Returns:
        The paths written, in order.
    """
    evaluation = evaluate(run, show_progress=show_progress) if needs_evaluation(sections) else None
    chosen = probe_input(run, image, index)
    written = []
    for panel in panels(run, evaluation, chosen, sections, show_progress=show_progress):
        path = save_figure(panel.make(), Path(out_dir) / f"{panel.key}.png", dpi)
        written.append(path)
        if on_write is not None:
            on_write(path)
    return written
