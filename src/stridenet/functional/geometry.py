"""Sliding-window arithmetic shared by convolution and pooling.

The lecture's output size (W - F + 2P)/S + 1, generalised to dilation D and to padding that may
differ on the two sides (as 'same' padding needs for even kernels or strides above 1):
``W_out = floor((W + P_lo + P_hi - D(F-1) - 1)/S) + 1`` (``ceil`` instead of ``floor`` in ceil_mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError

Pair = tuple[int, int]
# ((top, bottom), (left, right))
Padding2d = tuple[tuple[int, int], tuple[int, int]]


def pair(value: int | Sequence[int], name: str) -> Pair:
    """``3 -> (3, 3)``; ``(3, 5) -> (3, 5)``; anything else is a ValueError naming ``name``."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 \
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, received {value!r}")


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for one axis: output ceil(size/stride), extra pixel at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class WindowAxis(NamedTuple):
    """Geometry of a sliding window along one axis."""

    size: int        # input size W
    kernel: int      # F
    stride: int      # S
    dilation: int    # D
    pad_lo: int      # zeros before
    pad_hi: int      # zeros after, as requested
    out: int         # W_out
    extra_hi: int    # further padding so every output window lies inside (ceil_mode)


def window_axis(size: int, kernel: int, stride: int, dilation: int, pad: tuple[int, int],
                ceil_mode: bool = False) -> WindowAxis:
    """Geometry of one axis; ``out`` may be below 1 here (``window_axes`` turns that into an error)."""
    span = size + pad[0] + pad[1] - dilation * (kernel - 1) - 1
    out = max((-(-span // stride) if ceil_mode else span // stride) + 1, 0)
    if ceil_mode and out > 0 and (out - 1) * stride >= size + pad[0]:
        out -= 1  # PyTorch: the last window must start inside the input or its left padding
    extra = max((out - 1) * stride + dilation * (kernel - 1) + 1 - (size + pad[0] + pad[1]), 0)
    return WindowAxis(size, kernel, stride, dilation, pad[0], pad[1], out, extra)


def output_size_formula(axis: WindowAxis) -> str:
    """The lecture's formula with the numbers filled in, for error messages."""
    F = axis.dilation * (axis.kernel - 1) + 1
    P = axis.pad_lo + axis.pad_hi
    value = (axis.size - F + P) / axis.stride + 1
    effective = "F" if axis.dilation == 1 else "(D(F-1)+1)"
    padding = "2P" if axis.pad_lo == axis.pad_hi else "P_lo+P_hi"
    return (f"(W - {effective} + {padding})/S + 1 = ({axis.size} - {F} + {P})/{axis.stride} + 1 = "
            f"{value:g}")


def window_axes(shape: tuple[int, ...], kernel: Pair, stride: Pair, dilation: Pair, padding: Padding2d,
                ceil_mode: bool = False) -> tuple[WindowAxis, WindowAxis]:
    """Both spatial axes of an NCHW input; ShapeError when either output size is below 1."""
    axes = tuple(window_axis(shape[2 + i], kernel[i], stride[i], dilation[i], padding[i], ceil_mode)
                 for i in range(2))
    for name, axis in zip(("height", "width"), axes, strict=True):
        if axis.out < 1:
            raise ShapeError(f"output {name} {output_size_formula(axis)} is below 1 "
                             f"for input shape {tuple(shape)}")
    return axes  # type: ignore[return-value]


def input_padding(axes: tuple[WindowAxis, WindowAxis]) -> Padding2d:
    """((top, bottom), (left, right)): the zeros the windows read on each side, the padding asked for and
    what ``extra_hi`` adds after it."""
    return tuple((a.pad_lo, a.pad_hi + a.extra_hi) for a in axes)  # type: ignore[return-value]


def pad_input(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis], value: float = 0.0) -> np.ndarray:
    """Pad H and W of an NCHW array as ``axes`` ask (including ceil_mode's extra), keeping dtype."""
    widths = ((0, 0), (0, 0), *input_padding(axes))
    if not any(lo or hi for lo, hi in widths):
        return x
    return np.pad(x, widths, mode="constant", constant_values=value)


def sliding_windows(x_padded: np.ndarray, axes: tuple[WindowAxis, WindowAxis]) -> np.ndarray:
    """Read-only strided view of every window: (N, C, Hp, Wp) -> (N, C, H_out, W_out, kH, kW)."""
    (h, w) = axes
    sN, sC, sH, sW = x_padded.strides
    return np.lib.stride_tricks.as_strided(
        x_padded,
        shape=(x_padded.shape[0], x_padded.shape[1], h.out, w.out, h.kernel, w.kernel),
        strides=(sN, sC, sH * h.stride, sW * w.stride, sH * h.dilation, sW * w.dilation),
        writeable=False,
    )


def window_slice(axis: WindowAxis, offset: int) -> slice:
    """Positions in the padded input that kernel tap ``offset`` reads, one per output position."""
    start = offset * axis.dilation
    return slice(start, start + axis.stride * (axis.out - 1) + 1, axis.stride)


def unseen_pixels(axis: WindowAxis) -> int:
    """Input pixels at the far edge that no window reaches (the lecture's 'doesn't fit' case)."""
    last_read = (axis.out - 1) * axis.stride + axis.dilation * (axis.kernel - 1) - axis.pad_lo
    return max(axis.size - 1 - last_read, 0)


