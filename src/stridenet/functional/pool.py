"""Pooling: max, average and global average, forward and backward on strided window views.

Max pooling keeps the largest value of each window and, in backward, routes the gradient to the
position of that maximum, remembered from the forward pass. Where a window holds several equal
maxima the *first* one (in row-major order inside the window) gets the gradient, as in PyTorch's
CPU kernel; where windows overlap, gradients routed to the same input pixel add up.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional.geometry import (
    Pair,
    WindowAxis,
    pad_input,
    pair,
    sliding_windows,
    window_axes,
    window_slice,
)


class MaxPool2dCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    argmax: np.ndarray        # (N, C, H_out, W_out) index of the first maximum inside each window
    axes: tuple[WindowAxis, WindowAxis]


class AvgPool2dCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    divisor: np.ndarray       # (H_out, W_out) number each window's sum was divided by
    axes: tuple[WindowAxis, WindowAxis]


def _pool_axes(x: np.ndarray, kernel: int | Pair, stride: int | Pair | None, padding: int | Pair,
               dilation: int | Pair, ceil_mode: bool) -> tuple[WindowAxis, WindowAxis]:
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    k = pair(kernel, "kernel_size")
    s = k if stride is None else pair(stride, "stride")
    p = pair(padding, "padding")
    return window_axes(x.shape, k, s, pair(dilation, "dilation"), ((p[0], p[0]), (p[1], p[1])), ceil_mode)


def _scatter_taps(values_per_tap, x_shape: tuple[int, ...], axes: tuple[WindowAxis, WindowAxis],
                  dtype: np.dtype) -> np.ndarray:
    """Add each kernel tap's (N, C, H_out, W_out) gradient onto the input pixels that tap read."""
    N, C, H, W = x_shape
    h, w = axes
    dx = np.zeros((N, C, H + h.pad_lo + h.pad_hi + h.extra_hi, W + w.pad_lo + w.pad_hi + w.extra_hi), dtype)
    for i in range(h.kernel):
        for j in range(w.kernel):
            dx[:, :, window_slice(h, i), window_slice(w, j)] += values_per_tap(i * w.kernel + j)
    return np.ascontiguousarray(dx[:, :, h.pad_lo:h.pad_lo + H, w.pad_lo:w.pad_lo + W])


def max_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None,
                       padding: int | Pair = 0, dilation: int | Pair = 1,
                       ceil_mode: bool = False) -> tuple[np.ndarray, MaxPool2dCache]:
    """Largest value of each window; padding counts as -inf, so it is never chosen.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - D(F - 1) - 1)/S) + 1``
        (``ceil`` in ceil_mode, dropping a last window that would start in the right padding).
    """
    axes = _pool_axes(x, kernel_size, stride, padding, dilation, ceil_mode)
    N, C = x.shape[:2]
    windows = sliding_windows(pad_input(x, axes, -np.inf), axes)   # (N, C, H_out, W_out, kH, kW)
    flat = windows.reshape(N, C, axes[0].out, axes[1].out, -1)      # (N, C, H_out, W_out, kH*kW)
    argmax = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, argmax[..., None], axis=-1)[..., 0]
    small = np.int8 if flat.shape[-1] <= 127 else np.intp
    return out, MaxPool2dCache(x.shape, argmax.astype(small), axes)


def max_pool2d_backward(dout: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """Route each output gradient to its window's first maximum; overlapping windows accumulate."""
    x_shape, argmax, axes = cache
    if dout.shape != argmax.shape:
        raise ShapeError(f"expected an output gradient of shape {argmax.shape}, received {dout.shape}")
    zero = np.zeros((), dout.dtype)
    return _scatter_taps(lambda tap: np.where(argmax == tap, dout, zero), x_shape, axes, dout.dtype)


def _divisor(axis: WindowAxis, count_include_pad: bool) -> np.ndarray:
    """PyTorch's divisor along one axis: the window clipped to the padded input (or to the input)."""
    start = np.arange(axis.out) * axis.stride - axis.pad_lo
    end = np.minimum(start + axis.kernel, axis.size + axis.pad_hi)
    if count_include_pad:
        return end - start
    return np.minimum(end, axis.size) - np.maximum(start, 0)


def avg_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None,
                       padding: int | Pair = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True) -> tuple[np.ndarray, AvgPool2dCache]:
    """Mean of each window. Padding zeros count towards the mean when ``count_include_pad``.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - F)/S) + 1``.
    """
    axes = _pool_axes(x, kernel_size, stride, padding, 1, ceil_mode)
    windows = sliding_windows(pad_input(x, axes, 0.0), axes)      # (N, C, H_out, W_out, kH, kW)
    divisor = np.outer(_divisor(axes[0], count_include_pad), _divisor(axes[1], count_include_pad))
    out = windows.sum(axis=(4, 5)) / divisor.astype(x.dtype)
    return out.astype(x.dtype, copy=False), AvgPool2dCache(x.shape, divisor.astype(x.dtype), axes)


def avg_pool2d_backward(dout: np.ndarray, cache: AvgPool2dCache) -> np.ndarray:
    """Spread each output gradient evenly (1/divisor) over the input pixels of its window."""
    x_shape, divisor, axes = cache
    expected = (*x_shape[:2], axes[0].out, axes[1].out)
    if dout.shape != expected:
        raise ShapeError(f"expected an output gradient of shape {expected}, received {dout.shape}")
    share = dout / divisor
    return _scatter_taps(lambda tap: share, x_shape, axes, dout.dtype)


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Mean over all of H and W: (N, C, H, W) -> (N, C). The cache is the input shape."""
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_backward(dout: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """Each pixel receives 1/(H*W) of its channel's gradient: (N, C) -> (N, C, H, W)."""
    N, C, H, W = x_shape
    if dout.shape != (N, C):
        raise ShapeError(f"expected an output gradient of shape {(N, C)}, received {dout.shape}")
    return np.broadcast_to((dout / (H * W))[:, :, None, None], x_shape).copy()
