"""The numbers behind the plots: layer outputs, saliency gradients, strongest inputs, confusion."""

from __future__ import annotations

import numpy as np
import pytest
from viz_helpers import CLASSES, tiny_images, tiny_model

from stridenet import nn
from stridenet.data import normalize
from stridenet.viz import probe


def direct_outputs(model: nn.Sequential, x: np.ndarray) -> dict[str, np.ndarray]:
    """Conv and pool outputs of the tiny model computed by calling its layers one by one."""
    out: dict[str, np.ndarray] = {}
    with nn.no_grad():
        h = x
        for i, layer in enumerate(model):
            if isinstance(layer, nn.Residual):
                inner = h
                for j, sub in enumerate(layer.block):
                    inner = sub(inner)
                    if isinstance(sub, nn.Conv2d):
                        out[f"{i}.block.{j}"] = inner
                h = inner + h
            else:
                h = layer(h)
                if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
                    out[str(i)] = h
    return out


def test_activation_maps_equal_the_layer_outputs() -> None:
    model = tiny_model()
    images, _ = tiny_images(3)
    x = normalize(images, [0.3], [0.35])
    records = probe.activation_maps(model, x)
    expected = direct_outputs(model, x)
    assert [r.name for r in records] == ["0", "2", "3", "6.block.0", "7"]
    assert set(expected) == {r.name for r in records}
    for record in records:
        assert record.output.shape == expected[record.name].shape
        np.testing.assert_array_equal(record.output, expected[record.name])
    assert "forward" not in vars(model[0]), "recording must leave the layers as they were"


def test_recording_restores_layers_after_an_error() -> None:
    model = tiny_model()
    layers = probe.spatial_layers(model)
    with pytest.raises(RuntimeError), probe.recording(layers, lambda name, out: None):
        raise RuntimeError("boom")
    assert all("forward" not in vars(layer) for layer in layers.values())


def test_activation_maps_restore_training_mode() -> None:
    model = tiny_model().train()
    probe.activation_maps(model, np.zeros((1, 1, 12, 12), np.float32))
    assert model.training and model[4].training


def test_predict_proba_matches_softmax_of_logits() -> None:
    model = tiny_model()
    images, _ = tiny_images(10)
    probs = probe.predict_proba(model, images, [0.3], [0.35], batch_size=4)
    with nn.no_grad():
        logits = model(normalize(images, [0.3], [0.35])).astype(np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_saliency_is_the_input_gradient_of_the_class_score() -> None:
    model = tiny_model(dtype=np.float64)
    x = np.random.default_rng(1).normal(size=(1, 1, 12, 12))
    for p in model.parameters():
        p.grad[...] = 7.0  # gradients accumulated elsewhere must survive
    saliency, target, logits = probe.saliency_map(model, x)
    with nn.no_grad():
        reference = model(x)[0]
    assert target == int(np.argmax(reference))
    np.testing.assert_allclose(logits, reference)
    numeric = np.zeros_like(x)
    eps = 1e-6
    with nn.no_grad():
        for idx in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[idx] = eps
            numeric[idx] = (model(x + step)[0, target] - model(x - step)[0, target]) / (2 * eps)
    np.testing.assert_allclose(saliency, np.abs(numeric).max(axis=1)[0], rtol=1e-5, atol=1e-8)
    assert all(np.all(p.grad == 7.0) for p in model.parameters())


def test_saliency_of_a_chosen_class_and_of_rgb_input() -> None:
    model = tiny_model(in_channels=3)
    x = np.random.default_rng(2).normal(size=(3, 12, 12)).astype(np.float32)
    saliency, target, _ = probe.saliency_map(model, x, target=2)
    assert target == 2 and saliency.shape == (12, 12) and np.all(saliency >= 0) and saliency.max() > 0


def test_top_activating_images_agrees_with_brute_force() -> None:
    model = tiny_model()
    images, _ = tiny_images(30)
    tops = probe.top_activating_images(model, images, [0.3], [0.35], ["3", "6.block.0"], n_channels=3,
                                       top_k=5, batch_size=7)
    outputs = direct_outputs(model, normalize(images, [0.3], [0.35]))
    for top in tops:
        peak = outputs[top.name].max(axis=(2, 3))  # (N, K)
        assert len(top.channels) == 3 and top.indices.shape == (3, 5)
        expected_channels = np.sort(np.argsort(-peak.std(axis=0), kind="stable")[:3])
        np.testing.assert_array_equal(top.channels, expected_channels)
        for row, channel in enumerate(top.channels):
            np.testing.assert_allclose(top.scores[row], np.sort(peak[:, channel])[::-1][:5], rtol=1e-6)
            np.testing.assert_allclose(peak[top.indices[row], channel], top.scores[row], rtol=1e-6)
    chosen = probe.top_activating_images(model, images, [0.3], [0.35], ["0"], channels=[1, 3], top_k=2)
    np.testing.assert_array_equal(chosen[0].channels, [1, 3])
    with pytest.raises(KeyError, match="no layers named"):
        probe.top_activating_images(model, images, [0.3], [0.35], ["nope"])


def test_confusion_per_class_and_mistakes() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0, 0, 1], [0.6, 0.3, 0.1]])
    cm = probe.confusion_matrix(labels, probs.argmax(1), len(CLASSES))
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 1], [1, 0, 1]])
    np.testing.assert_allclose(probe.per_class_accuracy(cm), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(probe.confident_mistakes(labels, probs, k=2), [3, 1])
    assert np.isnan(probe.per_class_accuracy(np.zeros((2, 2), np.int64))).all()
