"""2-d convolution: forward and backward as im2col feeding one matrix product per group.

Each output position is a dot product between a filter (depth = input channels / groups) and the
input window under it, plus a bias. Gathering every window into a row ("im2col") turns the whole
layer into one matrix product; the backward pass is two more products and a scatter-add of the
column gradients back onto the input (``col2im``), one kernel tap at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional.geometry import (
    Padding2d,
    WindowAxis,
    pad_input,
    pair,
    same_padding,
    sliding_windows,
    window_axes,
    window_slice,
)

PaddingArg = int | tuple[int, int] | str | Padding2d


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward pass."""

    x_shape: tuple[int, int, int, int]
    cols: np.ndarray          # (G, N*H_out*W_out, C/G*kH*kW) im2col matrix of the padded input
    w: np.ndarray             # (K, C/G, kH, kW)
    axes: tuple[WindowAxis, WindowAxis]
    groups: int
    has_bias: bool


def resolve_padding(padding: PaddingArg, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], spatial: tuple[int, int]) -> Padding2d:
    """Turn a padding argument into ((top, bottom), (left, right)) for an input of size ``spatial``.

    ``'valid'`` is no padding; ``'same'`` is TensorFlow's rule (output ceil(W/S), the odd pixel at the
    end), which equals PyTorch's ``padding='same'`` wherever PyTorch allows it (stride 1).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(same_padding(spatial[i], kernel[i], stride[i], dilation[i])  # type: ignore[return-value]
                         for i in range(2))
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', received {padding!r}")
    if isinstance(padding, tuple) and len(padding) == 2 and all(isinstance(p, tuple) for p in padding):
        return (int(padding[0][0]), int(padding[0][1])), (int(padding[1][0]), int(padding[1][1]))
    ph, pw = pair(padding, "padding")
    return (ph, ph), (pw, pw)


def _check_inputs(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, groups: int) -> None:
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    if w.ndim != 4:
        raise ShapeError(f"expected a 4-d weight (K, C/groups, kH, kW), received shape {w.shape}")
    if x.shape[1] != w.shape[1] * groups:
        raise ShapeError(f"expected input with {w.shape[1] * groups} channels, received shape {x.shape}")
    if w.shape[0] % groups:
        raise ShapeError(f"groups={groups} does not divide {w.shape[0]} output channels")
    if x.dtype != w.dtype:
        raise ShapeError(f"expected input of dtype {w.dtype} (the weights' dtype), received {x.dtype} "
                         f"with shape {x.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"expected a bias of shape {(w.shape[0],)}, received {b.shape}")


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int | tuple[int, int] = 1,
                   padding: PaddingArg = 0, dilation: int | tuple[int, int] = 1,
                   groups: int = 1) -> tuple[np.ndarray, Conv2dCache]:
    """Convolve ``x`` with filters ``w`` (cross-correlation, as every deep-learning library does).

    Args:
        x: input (N, C, H, W).
        w: filters (K, C/groups, kH, kW).
        b: bias (K,) or None.
        stride, dilation: int or (h, w).
        padding: int, (h, w), ((top, bottom), (left, right)), 'valid' or 'same'.
        groups: input and output channels split into this many independent groups.

    Returns:
        ``(out, cache)`` with out (N, K, H_out, W_out),
        ``H_out = floor((H + P_top + P_bottom - D(kH - 1) - 1)/S) + 1``.

    Raises:
        ShapeError: wrong rank, channel count, dtype, or an output size below 1.
    """
    _check_inputs(x, w, b, groups)
    kernel = (w.shape[2], w.shape[3])
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pad = resolve_padding(padding, kernel, stride, dilation, (x.shape[2], x.shape[3]))
    axes = window_axes(x.shape, kernel, stride, dilation, pad)
    N, C = x.shape[:2]
    K, G = w.shape[0], groups
    H_out, W_out = axes[0].out, axes[1].out

    windows = sliding_windows(pad_input(x, axes), axes)          # (N, C, H_out, W_out, kH, kW)
    windows = windows.reshape(N, G, C // G, H_out, W_out, *kernel)
    # (N, G, C/G, H_out, W_out, kH, kW) -> (G, N*H_out*W_out, C/G*kH*kW)
    cols = windows.transpose(1, 0, 3, 4, 2, 5, 6).reshape(G, N * H_out * W_out, -1)
    w_rows = w.reshape(G, K // G, -1)                              # (G, K/G, C/G*kH*kW)
    out = np.matmul(cols, w_rows.transpose(0, 2, 1))               # (G, N*H_out*W_out, K/G)
    # (G, N, H_out, W_out, K/G) -> (N, G, K/G, H_out, W_out) -> (N, K, H_out, W_out)
    out = out.reshape(G, N, H_out, W_out, K // G).transpose(1, 0, 4, 2, 3).reshape(N, K, H_out, W_out)
    if b is not None:
        out += b.reshape(1, K, 1, 1)
    return out, Conv2dCache(x.shape, cols, w, axes, G, b is not None)


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Gradients of a convolution: ``(dx, dw, db)``; ``db`` is None without bias.

    ``dw`` sums each shared filter's gradient over every position it was applied at (one matrix
    product does the sum); ``dx`` scatters the column gradients back onto the input windows.
    """
    x_shape, cols, w, axes, G, has_bias = cache
    N, C, H, W = x_shape
    K, kH, kW = w.shape[0], w.shape[2], w.shape[3]
    H_out, W_out = axes[0].out, axes[1].out
    if dout.shape != (N, K, H_out, W_out):
        raise ShapeError(f"expected an output gradient of shape {(N, K, H_out, W_out)}, received {dout.shape}")

    # (N, K, H_out, W_out) -> (G, N*H_out*W_out, K/G)
    dout_rows = dout.reshape(N, G, K // G, H_out, W_out).transpose(1, 0, 3, 4, 2).reshape(G, -1, K // G)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dw = np.matmul(dout_rows.transpose(0, 2, 1), cols).reshape(w.shape)   # (G, K/G, C/G*kH*kW)
    dcols = np.matmul(dout_rows, w.reshape(G, K // G, -1))                # (G, N*H_out*W_out, C/G*kH*kW)
    # -> (N, G, C/G, H_out, W_out, kH, kW)
    dcols = dcols.reshape(G, N, H_out, W_out, C // G, kH, kW).transpose(1, 0, 4, 2, 3, 5, 6)

    h, w_axis = axes
    dx_padded = np.zeros((N, G, C // G, H + h.pad_lo + h.pad_hi + h.extra_hi,
                          W + w_axis.pad_lo + w_axis.pad_hi + w_axis.extra_hi), dtype=dout.dtype)
    for i in range(kH):
        rows = window_slice(h, i)
        for j in range(kW):
            dx_padded[:, :, :, rows, window_slice(w_axis, j)] += dcols[..., i, j]
    dx = dx_padded.reshape(N, C, *dx_padded.shape[3:])[:, :, h.pad_lo:h.pad_lo + H, w_axis.pad_lo:w_axis.pad_lo + W]
    return np.ascontiguousarray(dx), dw, db
