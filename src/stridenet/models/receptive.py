"""Receptive fields: the standard arithmetic, and a brute-force measurement to check it against.

Arithmetic, per axis, through a layer with kernel k, stride s, padding p (before the input) and
dilation d, starting from the input (size 1, jump 1, start 0; input pixel i has its centre at i)::

    size_out  = size_in + d(k - 1) * jump_in
    jump_out  = jump_in * s
    start_out = start_in + (d(k - 1)/2 - p) * jump_in      (centre of the first output unit)

so unit i of a layer's output sees the input pixels centred on ``start + i*jump``, ``size`` wide.
Global average pooling and fully connected layers see the whole input.

The measurement runs one output unit's gradient back to the input through a float64 copy of the
model whose weights are all positive (so nothing cancels), with max pooling replaced by a sum over the
same windows (max pooling passes gradient to one pixel per window); the nonzero extent is the field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from stridenet import nn
from stridenet.functional.conv import conv2d_backward, conv2d_forward
from stridenet.functional.geometry import WindowAxis

Pair = tuple[int, int]


@dataclass(frozen=True)
class Field:
    """Receptive field of one output unit of a layer, per axis (height, width), in input pixels.

    Attributes:
        size: extent of the input region one unit sees (may exceed the input: the rest is padding).
        jump: input pixels between neighbouring units; None once the field is the whole input.
        start: centre of the first unit's region (input pixel i is centred at i); None when whole.
        whole: the unit pools every unit of the map before it (global average pooling or a fully
            connected layer); ``size`` is then the input region those units cover, which is the whole
            input unless a layer with a stride that does not fit left the last rows or columns unread.
        units: number of units per axis of the map this field belongs to.
    """

    size: Pair
    jump: Pair | None
    start: tuple[float, float] | None
    whole: bool = False
    units: Pair = (1, 1)

    @classmethod
    def of_input(cls, input_size: Pair) -> Field:
        return cls((1, 1), (1, 1), (0.0, 0.0), units=input_size)

    def through(self, axes: tuple[WindowAxis, WindowAxis]) -> Field:
        """The field after a convolution or pooling layer with window geometry ``axes``."""
        if self.whole or self.jump is None or self.start is None:
            return self
        size, jump, start = [], [], []
        for axis, r, j, c in zip(axes, self.size, self.jump, self.start, strict=True):
            span = axis.dilation * (axis.kernel - 1)
            size.append(r + span * j)
            jump.append(j * axis.stride)
            start.append(c + (span / 2 - axis.pad_lo) * j)
        return Field((size[0], size[1]), (jump[0], jump[1]), (start[0], start[1]), units=(axes[0].out, axes[1].out))

    def pooled(self, input_size: Pair) -> Field:
        """The field of a unit that combines every unit of this map: the input region they cover."""
        if self.whole or self.jump is None or self.start is None:
            return self
        size = []
        for r, j, c, n, extent in zip(self.size, self.jump, self.start, self.units, input_size, strict=True):
            first = max(c - (r - 1) / 2, 0)
            last = min(c + (n - 1) * j + (r - 1) / 2, extent - 1)
            size.append(int(last - first + 1))
        return Field((size[0], size[1]), None, None, True)

    def union(self, other: Field) -> Field:
        """The larger field of two parallel branches (a residual block and its shortcut)."""
        if self.whole or other.whole:
            return self if self.whole else other
        return self if self.size[0] * self.size[1] >= other.size[0] * other.size[1] else other


class MeasuredField(NamedTuple):
    """What ``measure_receptive_field`` found.

    Attributes:
        size: (rows, columns) from the first to the last input pixel that reaches the unit.
        first: (row, column) of the first such pixel.
        unit: index of the measured output unit, without the batch axis.
    """

    size: Pair
    first: Pair
    unit: tuple[int, ...]


class _SumPool2d(nn.Layer):
    """Sum over dilated pooling windows (a depthwise all-ones convolution), standing in for a max
    pool when measuring receptive fields."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        if pool.ceil_mode:
            raise ValueError(f"measure_receptive_field: {pool!r} with dilation and ceil_mode is not supported")
        self.pool = pool

    def forward(self, x: np.ndarray) -> np.ndarray:
        N, C, H, W = x.shape
        ones = np.ones((1, 1, *self.pool.kernel_size), x.dtype)
        out, cache = conv2d_forward(x.reshape(N * C, 1, H, W), ones, None, self.pool.stride, self.pool.padding,
                                    self.pool.dilation)
        self._keep((cache, x.shape))
        return out.reshape(N, C, *out.shape[2:])

    def backward(self, dout: np.ndarray) -> np.ndarray:
        cache, shape = self._take_cache()
        dx, _, _ = conv2d_backward(dout.reshape(-1, 1, *dout.shape[2:]), cache)
        return dx.reshape(shape)


def _probe_layer(layer: nn.Layer) -> nn.Layer:
    """The layer with every max pool (inside containers too) replaced by a sum over its windows."""
    if isinstance(layer, nn.Sequential):
        return nn.Sequential(*[_probe_layer(child) for child in layer])
    if isinstance(layer, nn.Residual):
        return nn.Residual(_probe_layer(layer.block), None if layer.shortcut is None else _probe_layer(layer.shortcut))
    if isinstance(layer, nn.MaxPool2d):
        if layer.dilation == (1, 1):
            return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode)
        return _SumPool2d(layer)
    return layer


def measure_receptive_field(model: nn.Layer, input_shape: tuple[int, ...],
                            unit: tuple[int, ...] | None = None) -> MeasuredField:
    """Measure which input pixels one output unit depends on, from its gradient.

    The model is copied (it is left unchanged), cast to float64, put in eval mode, given positive
    weights and biases, BatchNorm running statistics (0, 1) and sum pooling instead of max pooling;
    the input is all ones. Every path then carries a positive gradient, so the nonzero extent of
    d(unit)/d(input) is exactly the set of pixels the unit can see.

    Args:
        model: any model or layer prefix (e.g. ``nn.Sequential(*list(model)[:k])``).
        input_shape: (C, H, W) of one image.
        unit: index into the output without the batch axis; default the centre unit of channel 0
            (``(0, H_out // 2, W_out // 2)``), or feature 0 of a vector output.

    Returns:
        a ``MeasuredField`` with the extent's size and first pixel per axis.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
        >>> measure_receptive_field(net, (1, 16, 16)).size
        (7, 7)
    """
    probe = _probe_layer(copy.deepcopy(model)).astype(np.float64)
    probe.eval()
    for param in probe.parameters():
        param.data = np.abs(param.data) + 0.1
    for module in probe.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            module.running_mean = np.zeros_like(module.running_mean)
            module.running_var = np.ones_like(module.running_var)
    out = probe(np.ones((1, *input_shape), np.float64))
    if unit is None:
        unit = (0, out.shape[2] // 2, out.shape[3] // 2) if out.ndim == 4 else (0,) * (out.ndim - 1)
    dout = np.zeros_like(out)
    dout[(0, *unit)] = 1.0
    reached = np.abs(probe.backward(dout)[0]).sum(axis=0) > 0           # (H, W)
    rows, cols = np.flatnonzero(reached.any(axis=1)), np.flatnonzero(reached.any(axis=0))
    if rows.size == 0:
        raise RuntimeError(f"measure_receptive_field: no input pixel reaches output unit {unit}")
    return MeasuredField((int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)),
                         (int(rows[0]), int(cols[0])), tuple(unit))
