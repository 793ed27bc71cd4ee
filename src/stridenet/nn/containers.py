"""Containers: ``Sequential`` (a chain) and ``Residual`` (block(x) + shortcut(x))."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from stridenet.errors import ShapeError
from stridenet.nn.activation import ReLU
from stridenet.nn.conv import Conv2d
from stridenet.nn.layer import Layer, grad_enabled
from stridenet.nn.pool import MaxPool2d


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse. Children are named '0', '1', ... so
    ``state_dict()`` keys match a ``torch.nn.Sequential`` of the same layers.

    Example:
        >>> net = Sequential(Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(8 * 14 * 14, 10))
        >>> net(np.zeros((4, 1, 28, 28), np.float32)).shape
        (4, 10)
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        self._layers: list[Layer] = []
        for layer in layers:
            self.append(layer)

    def append(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: expected a Layer, received {type(layer).__name__}")
        self._layers.append(layer)
        return self

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        for index, layer in enumerate(self._layers):
            yield str(index), layer

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self._layers)

    def __getitem__(self, index: int) -> Layer:
        return self._layers[index]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Each layer in turn; a ``Conv2d`` directly followed by a ``ReLU`` runs as one pass
        (``Conv2d.forward_relu``: the same numbers, one trip through memory fewer), and in inference
        (``no_grad``) with a tiling ``MaxPool2d`` after them, as one pass too (``Conv2d.forward_relu_pool``)."""
        layers = self._layers
        i = 0
        while i < len(layers):
            if (i + 2 < len(layers) and not grad_enabled() and _fuses_relu(layers[i], layers[i + 1])
                    and _tiling_max_pool(layers[i + 2])):
                try:
                    x = layers[i].forward_relu_pool(x, layers[i + 1], layers[i + 2])  # type: ignore[attr-defined]
                except ShapeError:   # run them one by one, so that the layer at fault names itself
                    x = layers[i + 2](layers[i + 1](layers[i](x)))
                i += 3
            elif i + 1 < len(layers) and _fuses_relu(layers[i], layers[i + 1]):
                x = layers[i].forward_relu(x, layers[i + 1])  # type: ignore[attr-defined]
                i += 2
            else:
                x = layers[i](x)
                i += 1
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Each layer's backward in reverse; a ReLU directly after a ``Conv2d`` is taken inside that
        layer's backward (``Conv2d.backward_relu``)."""
        layers = self._layers
        i = len(layers) - 1
        while i >= 0:
            if i >= 1 and _fuses_relu(layers[i - 1], layers[i], "backward"):
                dout = layers[i - 1].backward_relu(dout, layers[i])  # type: ignore[attr-defined]
                i -= 2
            else:
                dout = layers[i].backward(dout)
                i -= 1
        return dout

    def __repr__(self) -> str:
        lines = [f"  ({i}): " + repr(layer).replace("\n", "\n  ") for i, layer in enumerate(self._layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"


def _tiling_max_pool(layer: Layer) -> bool:
    """A plain ``MaxPool2d`` (``forward`` not replaced on the instance) whose windows tile its input."""
    return (type(layer) is MaxPool2d and "forward" not in vars(layer) and layer.stride == layer.kernel_size
            and layer.padding == (0, 0) and layer.dilation == (1, 1) and not layer.ceil_mode)


def _fuses_relu(layer: Layer, following: Layer, method: str = "forward") -> bool:
    """A plain ``Conv2d`` then a plain ``ReLU``, neither with ``method`` replaced on the instance (as
    ``viz.probe.recording`` does to see a layer's own output): these may run fused."""
    return (type(layer) is Conv2d and type(following) is ReLU
            and method not in vars(layer) and method not in vars(following))


class Residual(Layer):
    """``out = block(x) + shortcut(x)``; the shortcut is the identity unless given (e.g. a 1x1 conv
    when the block changes the channel count or the size). Backward adds both paths' gradients.

    Args:
        block: the residual branch.
        shortcut: layer applied to x on the skip path, or None for the identity.
    """

    def __init__(self, block: Layer, shortcut: Layer | None = None) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: np.ndarray) -> np.ndarray:
        main = self.block(x)
        skip = x if self.shortcut is None else self.shortcut(x)
        if main.shape != skip.shape:
            raise ShapeError(f"block output shape {main.shape} does not match shortcut output shape "
                             f"{skip.shape} for input shape {x.shape}")
        return main + skip

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx = self.block.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def __repr__(self) -> str:
        inner = f"  (block): {self.block!r}".replace("\n", "\n  ")
        if self.shortcut is not None:
            inner += "\n" + f"  (shortcut): {self.shortcut!r}".replace("\n", "\n  ")
        return f"Residual(\n{inner}\n)"


def first_layer(model: Layer) -> Layer:
    """The layer that sees the model's input: the first leaf down a chain of ``Sequential``s."""
    while isinstance(model, Sequential) and len(model):
        model = model[0]
    return model


@contextmanager
def input_grad_skipped(model: Layer) -> Iterator[None]:
    """Within the block, the model's first layer may skip its input gradient (``Layer.input_grad``).

    Training never uses the gradient with respect to the images, and for a first convolution it
    costs as much as the weight gradient. ``model.backward`` may then return None. PyTorch skips it
    the same way, because the input tensor does not require a gradient.

    Example:
        >>> with input_grad_skipped(model):
        ...     model.backward(loss_fn.backward())   # doctest: +SKIP
    """
    layer = first_layer(model)
    before = layer.__dict__.get("input_grad")
    layer.input_grad = False
    try:
        yield
    finally:
        if before is None:
            del layer.input_grad
        else:
            layer.input_grad = before
