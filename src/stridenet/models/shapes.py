"""Shape propagation without running the model: what each layer makes of a (C, H, W) input.

Used to infer the sizes a spec leaves out (input channels, flatten sizes) and by the summary. Shapes
here have no batch axis. The window arithmetic is ``functional.geometry``'s, so the numbers and the
error messages are the ones a forward pass would give.
"""

from __future__ import annotations

import math

from stridenet import nn
from stridenet.errors import ShapeError
from stridenet.functional.conv import resolve_padding
from stridenet.functional.geometry import WindowAxis, window_axes

Shape = tuple[int, ...]
Axes = tuple[WindowAxis, WindowAxis]

_SAME_SHAPE = (nn.ReLU, nn.LeakyReLU, nn.Dropout, nn.Identity)


def _need_image(layer: nn.Layer, shape: Shape) -> None:
    if len(shape) != 3:
        raise ShapeError(f"expected a (C, H, W) image input, received shape {shape}")


def layer_axes(layer: nn.Layer, shape: Shape) -> Axes | None:
    """Window geometry of a convolution or pooling layer on input ``shape``; None for other layers.

    Raises:
        ShapeError: an output size below 1, with the formula and the numbers filled in.
    """
    if isinstance(layer, nn.Conv2d):
        _need_image(layer, shape)
        pad = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation, shape[1:])
        return window_axes((1, *shape), layer.kernel_size, layer.stride, layer.dilation, pad)
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        _need_image(layer, shape)
        (ph, pw) = layer.padding
        return window_axes((1, *shape), layer.kernel_size, layer.stride, layer.dilation, ((ph, ph), (pw, pw)),
                           layer.ceil_mode)
    return None


def output_shape(layer: nn.Layer, shape: Shape) -> Shape:
    """Output shape of one non-container layer for an input of ``shape`` (no batch axis).

    Raises:
        ShapeError: the input does not fit the layer (rank, channels, features, output size below 1).
        TypeError: a layer class this module does not know.

    Example:
        >>> output_shape(nn.Conv2d(3, 6, 5), (3, 32, 32))
        (6, 28, 28)
    """
    if isinstance(layer, nn.Conv2d):
        _need_image(layer, shape)
        if shape[0] != layer.in_channels:
            raise ShapeError(f"expected input with {layer.in_channels} channels, received shape {shape}")
        h, w = layer_axes(layer, shape)  # type: ignore[misc]
        return layer.out_channels, h.out, w.out
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        h, w = layer_axes(layer, shape)  # type: ignore[misc]
        return shape[0], h.out, w.out
    if isinstance(layer, nn.GlobalAvgPool2d):
        _need_image(layer, shape)
        return (shape[0],)
    if isinstance(layer, nn.Flatten):
        return (math.prod(shape),)
    if isinstance(layer, nn.Linear):
        if shape[-1] != layer.in_features:
            raise ShapeError(f"expected input with {layer.in_features} features, received shape {shape}")
        return (*shape[:-1], layer.out_features)
    if isinstance(layer, (nn.BatchNorm2d, nn.BatchNorm1d)):
        image = isinstance(layer, nn.BatchNorm2d)
        if len(shape) not in ((3,) if image else (1, 2)):
            expected = "a (C, H, W) image" if image else "an (F,) or (C, L)"
            raise ShapeError(f"expected {expected} input, received shape {shape}")
        if shape[0] != layer.num_features:
            raise ShapeError(f"expected input with {layer.num_features} channels, received shape {shape}")
        return shape
    if isinstance(layer, _SAME_SHAPE):
        return shape
    raise TypeError(f"cannot work out the output shape of {type(layer).__name__}")


def num_trainable(layer: nn.Layer) -> int:
    """Values in the layer's own ``Parameter``s (not its children's)."""
    return sum(value.data.size for value in vars(layer).values() if isinstance(value, nn.Parameter))


def num_non_trainable(layer: nn.Layer) -> int:
    """Floating-point buffers of the layer itself (BatchNorm's running mean and variance)."""
    return sum(getattr(layer, name).size for name in layer._buffer_names
               if getattr(layer, name).dtype.kind == "f")
