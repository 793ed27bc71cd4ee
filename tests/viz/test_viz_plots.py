"""The figures: each is written, large enough, not blank, and shows the right data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from viz_helpers import CLASSES, assert_png_has_content, metric_rows, tiny_images, tiny_model

from stridenet.data import normalize
from stridenet.viz import gallery, network, probe, results
from stridenet.viz._common import save_figure


def test_activation_map_figure_shows_the_layer_outputs(tmp_path: Path) -> None:
    model = tiny_model()
    images, _ = tiny_images(2)
    x = normalize(images, [0.3], [0.35])
    for record in probe.activation_maps(model, x):
        fig = network.plot_activation_map(record, index=1)
        shown = [ax.images[0].get_array() for ax in fig.axes if ax.get_visible() and ax.images]
        assert len(shown) == record.output.shape[1]
        for channel, data in enumerate(shown):
            np.testing.assert_array_equal(np.asarray(data), record.output[1, channel])
        assert f"Layer {record.name}" in fig.get_suptitle()
        assert str(tuple(record.output.shape[1:])) in fig.get_suptitle()
        assert_png_has_content(save_figure(fig, tmp_path / f"{record.name}.png"))


def test_activation_map_caps_the_channels() -> None:
    record = probe.LayerOutput("0", tiny_model()[0], np.random.default_rng(0).normal(size=(1, 20, 4, 4)))
    fig = network.plot_activation_map(record, max_channels=8)
    assert sum(1 for ax in fig.axes if ax.get_visible() and ax.images) == 8
    assert "first 8 of 20 channels" in fig.get_suptitle()


@pytest.mark.parametrize("channels", [1, 3, 2])
def test_filters_grid(tmp_path: Path, channels: int) -> None:
    weight = np.random.default_rng(channels).normal(size=(6, channels, 5, 5))
    fig = network.plot_filters(weight)
    shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.get_visible() and ax.images]
    assert len(shown) == (6 if channels == 3 else 6 * channels)
    if channels == 3:
        assert shown[0].shape == (5, 5, 3)  # an RGB tile per filter
        np.testing.assert_allclose(shown[0].min(), 0) and np.testing.assert_allclose(shown[0].max(), 1)
    else:
        assert shown[0].shape == (5, 5)
    tile = (weight[0, 0] - weight[0, 0].min()) / np.ptp(weight[0, 0])
    np.testing.assert_allclose(shown[0] if channels != 3 else shown[0][..., 0],
                               tile if channels != 3 else (weight[0] - weight[0].min())[0] / np.ptp(weight[0]))
    assert "RGB" in fig.get_suptitle() if channels == 3 else "grayscale" in fig.get_suptitle()
    assert_png_has_content(save_figure(fig, tmp_path / "filters.png"))


def test_training_curves(tmp_path: Path) -> None:
    fig = results.plot_training_curves(metric_rows(5))
    loss, acc = fig.axes
    assert [line.get_label() for line in loss.lines] == ["training", "validation"]
    np.testing.assert_allclose(loss.lines[0].get_ydata(), [1 / e for e in range(1, 6)])
    assert loss.get_xlabel() == "epoch" and acc.get_ylabel() == "accuracy"
    assert_png_has_content(save_figure(fig, tmp_path / "curves.png"))
    no_val = results.plot_training_curves(metric_rows(3, with_val=False))
    assert [line.get_label() for line in no_val.axes[0].lines] == ["training"]
    with pytest.raises(ValueError, match="no metric rows"):
        results.plot_training_curves([])


def test_read_metrics(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,train_loss,train_acc,val_loss,val_acc,lr\n1,0.9,0.7,,,0.01\n2,0.5,0.8,0.6,0.78,0.005\n")
    rows = results.read_metrics(path)
    assert rows[1] == {"epoch": 2, "train_loss": 0.5, "train_acc": 0.8, "val_loss": 0.6, "val_acc": 0.78, "lr": 0.005}
    assert math.isnan(rows[0]["val_loss"])
    path.write_text("epoch,train_loss\n1,abc\n")
    with pytest.raises(ValueError, match="line 2, column 'train_loss'"):
        results.read_metrics(path)


def test_confusion_matrix_and_per_class(tmp_path: Path) -> None:
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 4]])
    fig = results.plot_confusion_matrix(cm, CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in cm.ravel() if v)
    assert "accuracy 80.00%" in ax.get_title()
    assert_png_has_content(save_figure(fig, tmp_path / "confusion.png"))
    bars = results.plot_per_class_accuracy(probe.per_class_accuracy(cm), CLASSES)
    assert_png_has_content(save_figure(bars, tmp_path / "per_class.png"))


def test_mistakes_and_saliency_and_top_activations(tmp_path: Path) -> None:
    model = tiny_model()
    images, labels = tiny_images(20)
    probs = probe.predict_proba(model, images, [0.3], [0.35])
    wrong = probe.confident_mistakes(labels, probs, 6)
    fig = results.plot_mistakes(images, labels, probs, wrong, CLASSES)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == len(wrong) and all("true: " in t and "pred: " in t for t in titles)
    assert_png_has_content(save_figure(fig, tmp_path / "mistakes.png"))
    none = results.plot_mistakes(images, labels, probs, np.array([], np.int64), CLASSES)
    assert none.axes[0].texts[0].get_text() == "no mistakes"

    saliency, target, _ = probe.saliency_map(model, normalize(images[:1], [0.3], [0.35]))
    fig = network.plot_saliency(images[0], saliency, CLASSES, target, 0.9, int(labels[0]))
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), saliency)
    assert CLASSES[target] in fig.get_suptitle()
    assert_png_has_content(save_figure(fig, tmp_path / "saliency.png"))

    top = probe.top_activating_images(model, images, [0.3], [0.35], ["3"], n_channels=2, top_k=4)[0]
    fig = network.plot_top_activations(top, images)
    assert len(fig.axes) == 8 and "channel" in fig.axes[0].get_ylabel()
    assert_png_has_content(save_figure(fig, tmp_path / "top.png"))


def test_probe_input_choices(tiny_run) -> None:
    assert gallery.probe_input(tiny_run, index=-1).source == f"test image #{len(tiny_run.test_images) - 1}"
    with pytest.raises(IndexError, match="outside the test set"):
        gallery.probe_input(tiny_run, index=len(tiny_run.test_images))
    with pytest.raises(ValueError, match=r"shape \(1, 12, 12\)"):
        gallery.probe_input(tiny_run, image=np.zeros((1, 5, 5), np.uint8))
    given = gallery.probe_input(tiny_run, image=np.zeros((1, 12, 12), np.uint8))
    assert given.label is None and given.source == "the given image"
