"""Looking inside a model with NumPy only: layer outputs, predictions, strongest inputs, saliency.

Nothing here draws; the plotting modules turn these arrays into figures. Layer outputs are caught by
temporarily wrapping the chosen layers' ``forward`` (the model is otherwise untouched), so layers
nested inside ``Sequential`` or ``Residual`` blocks are seen exactly as the model runs them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from stridenet import nn
from stridenet.data import normalize
from stridenet.train.metrics import confusion_matrix, per_class_accuracy
from stridenet.viz._common import batches, progress

SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
__all__ = ["LayerOutput", "TopActivations", "activation_maps", "confident_mistakes", "confusion_matrix",
           "eval_mode", "first_conv", "per_class_accuracy", "predict_proba", "recording", "saliency_map",
           "spatial_layers", "top_activating_images"]


@dataclass
class LayerOutput:
    """What one layer produced for a batch.

    Attributes:
        name: the layer's path in ``model.named_modules()``, e.g. ``"3"`` or ``"4.block.0"``.
        layer: the layer itself.
        output: its output array, e.g. (N, K, H_out, W_out) for a convolution.
    """

    name: str
    layer: nn.Layer
    output: np.ndarray


@dataclass
class TopActivations:
    """The inputs that most activate some channels of one layer.

    Attributes:
        name: the layer's path in ``model.named_modules()``.
        layer: the layer.
        channels: (n_channels,) channel indices.
        indices: (n_channels, top_k) indices into the images, strongest first.
        scores: (n_channels, top_k) the channel's largest value over positions for those images.
    """

    name: str
    layer: nn.Layer
    channels: np.ndarray
    indices: np.ndarray
    scores: np.ndarray


@contextmanager
def eval_mode(model: nn.Layer) -> Iterator[nn.Layer]:
    """Put ``model`` in evaluation mode for the block and restore its training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def recording(layers: dict[str, nn.Layer], sink: Callable[[str, np.ndarray], None]) -> Iterator[None]:
    """Call ``sink(name, output)`` each time one of ``layers`` (name -> layer) runs forward."""
    wrapped: list[tuple[nn.Layer, object]] = []
    for name, layer in layers.items():
        original = layer.forward
        previous = vars(layer).get("forward")

        def forward(x: np.ndarray, _name: str = name, _original=original) -> np.ndarray:
            out = _original(x)
            sink(_name, out)
            return out

        layer.forward = forward  # instance attribute, shadows the class method
        wrapped.append((layer, previous))
    try:
        yield
    finally:
        for layer, previous in wrapped:
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous


def spatial_layers(model: nn.Layer, kinds: tuple[type, ...] = SPATIAL_LAYERS) -> dict[str, nn.Layer]:
    """The layers of ``model`` of the given types (default: conv and pooling), name -> layer, in
    ``named_modules()`` order; a layer used twice is listed once."""
    found: dict[str, nn.Layer] = {}
    seen: set[int] = set()
    for name, layer in model.named_modules():
        if isinstance(layer, kinds) and id(layer) not in seen:
            seen.add(id(layer))
            found[name or type(layer).__name__] = layer
    return found


def first_conv(model: nn.Layer) -> tuple[str, nn.Conv2d]:
    """The first ``Conv2d`` of ``model`` (name, layer).

    Raises:
        ValueError: the model has no convolution.
    """
    convs = spatial_layers(model, (nn.Conv2d,))
    if not convs:
        raise ValueError(f"first_conv: the model has no Conv2d layer: {type(model).__name__}")
    name, layer = next(iter(convs.items()))
    return name, layer  # type: ignore[return-value]


def activation_maps(model: nn.Layer, x: np.ndarray, kinds: tuple[type, ...] = SPATIAL_LAYERS) -> list[LayerOutput]:
    """Run ``model`` on ``x`` (in evaluation mode, without caches) and return the outputs of its conv
    and pooling layers, in the order they ran.

    Args:
        model: any layer or container.
        x: float input (N, C, H, W), already normalised as in training.
        kinds: layer types to record (default conv, max and average pooling).

    Returns:
        One ``LayerOutput`` per recorded call whose output is 4-d (N, K, H_out, W_out).
    """
    layers = spatial_layers(model, kinds)
    outputs: list[LayerOutput] = []

    def keep(name: str, out: np.ndarray) -> None:
        if out.ndim == 4:
            outputs.append(LayerOutput(name, layers[name], out.copy()))

    with eval_mode(model), nn.no_grad(), recording(layers, keep):
        model(x)
    return outputs


def predict_proba(model: nn.Layer, images: np.ndarray, mean: Sequence[float], std: Sequence[float],
                  batch_size: int = 256, show_progress: bool = False) -> np.ndarray:
    """Class probabilities (softmax of the logits) for uint8 images, in evaluation mode.

    Args:
        model: maps normalised (N, C, H, W) float32 input to (N, num_classes) logits.
        images: uint8 (N, C, H, W).
        mean, std: the training normalisation (per channel, [0, 1] scale).
        batch_size: images per forward pass.
        show_progress: show a progress bar on stderr.

    Returns:
        float64 (N, num_classes), rows summing to 1.
    """
    parts = []
    with eval_mode(model), nn.no_grad():
        for part in progress(batches(len(images), batch_size), -(-len(images) // batch_size), "predicting",
                             show_progress):
            logits = np.asarray(model(normalize(images[part], mean, std)), dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            parts.append(e / e.sum(axis=1, keepdims=True))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def top_activating_images(model: nn.Layer, images: np.ndarray, mean: Sequence[float], std: Sequence[float],
                          layer_names: Sequence[str], channels: Sequence[int] | None = None, n_channels: int = 4,
                          top_k: int = 6, batch_size: int = 256, show_progress: bool = False) -> list[TopActivations]:
    """For chosen channels of chosen layers, the images whose largest response (over all positions)
    is highest: what a filter deep in the network has learned to look for.

    Args:
        model: the network.
        images: uint8 (N, C, H, W) candidates, e.g. the test set.
        mean, std: the training normalisation.
        layer_names: names from ``model.named_modules()`` of layers with (N, K, H, W) outputs.
        channels: channel indices to show for every layer; default: per layer, the ``n_channels``
            channels whose peak response varies most across the images (the most selective ones).
        n_channels: how many channels to pick when ``channels`` is None.
        top_k: images per channel.
        batch_size: images per forward pass.
        show_progress: show a progress bar on stderr.

    Raises:
        KeyError: a name that is not a layer of the model.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layer_names if name not in modules]
    if missing:
        raise KeyError(f"top_activating_images: no layers named {missing}; layers: {list(modules)[1:]}")
    layers = {name: modules[name] for name in layer_names}
    peaks: dict[str, list[np.ndarray]] = {name: [] for name in layer_names}

    def keep(name: str, out: np.ndarray) -> None:
        peaks[name].append(out.reshape(out.shape[0], out.shape[1], -1).max(axis=2))  # (N, K, H*W) -> (N, K)

    steps = batches(len(images), batch_size)
    with eval_mode(model), nn.no_grad(), recording(layers, keep):
        for part in progress(steps, len(steps), "strongest inputs", show_progress):
            model(normalize(images[part], mean, std))
    results = []
    k = min(top_k, len(images))
    for name in layer_names:
        peak = np.concatenate(peaks[name])  # (N, K)
        if channels is None:
            chosen = np.sort(np.argsort(-peak.std(axis=0), kind="stable")[:n_channels])
        else:
            chosen = np.asarray(channels, dtype=np.int64)
        order = np.argsort(-peak[:, chosen], axis=0, kind="stable")[:k].T  # (n_channels, k)
        scores = np.take_along_axis(peak[:, chosen].T, order, axis=1)
        results.append(TopActivations(name, layers[name], chosen, order, scores))
    return results


def saliency_map(model: nn.Layer, x: np.ndarray, target: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Gradient of a class score with respect to the input pixels (Simonyan et al., 2014), by our own
    backward pass: which pixels would change the score most if nudged.

    The model runs in evaluation mode; a one-hot gradient at the chosen class's logit goes back through
    ``model.backward``. Parameter gradients are restored to what they were before.

    Args:
        model: maps (1, C, H, W) to (1, num_classes) logits.
        x: one normalised input, (1, C, H, W) or (C, H, W).
        target: class whose score to explain; default the predicted class.

    Returns:
        ``(saliency, target, logits)``: saliency (H, W) = max over channels of |d score / d x|, the
        class explained, and the logits (num_classes,).
    """
    x = x[None] if x.ndim == 3 else x
    saved = [(p, p.grad.copy()) for p in model.parameters()]
    try:
        with eval_mode(model):
            logits = model(x)
            chosen = int(np.argmax(logits[0])) if target is None else int(target)
            dout = np.zeros_like(logits)
            dout[0, chosen] = 1.0
            dx = model.backward(dout)
    finally:
        for p, grad in saved:
            p.grad = grad
    return np.abs(dx[0]).max(axis=0), chosen, np.asarray(logits[0])


def confident_mistakes(labels: np.ndarray, probs: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of up to ``k`` wrongly classified examples, most confident (highest predicted
    probability) first."""
    predictions = probs.argmax(axis=1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probs[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]
