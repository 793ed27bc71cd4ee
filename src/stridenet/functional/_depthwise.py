"""Depthwise convolution: as many groups as input channels, each channel convolved with filters of its own.

With ``groups == C`` every filter is one channel deep: output channel ``k`` is input channel ``k // m``
(``m = K / C`` filters per channel, the "depth multiplier") slid under a kH x kW window. As im2col
columns that is one product per group, each a matrix-vector product of a single channel's columns:
the BLAS at its slowest (the 96-channel 3x3 layer of a 64-image batch took 550 ms forward and
backward, PyTorch 62 ms). Here instead each output pixel is a handful of multiply-adds over the
channels as a vector: the input's channels-last pixel under each tap times that tap's filters,
added up in tap order.

The input gradient gathers, for each input pixel, the output gradient of every (tap, output pixel)
that read it (any stride, dilation and padding: the taps whose offset the stride divides), so every
value of ``dx`` is written once; the weight gradient is, per image and tap, the sum over output pixels
of the gradient times the pixel read, and the images' sums are added in float64 in image order (the
same numbers for any number of threads). With numba (``_compiled.available``) each range of images
is one compiled call (``_depthwise_kernels``); otherwise NumPy does each tap over a whole range at once.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from stridenet.functional import _compiled
from stridenet.functional._im2col import pad
from stridenet.functional._layout import scratch
from stridenet.functional._parallel import image_slices, run_parallel
from stridenet.functional.activation import through_relu
from stridenet.functional.geometry import WindowAxis, input_padding

Axes = tuple[WindowAxis, WindowAxis]


def applies(groups: int, channels: int) -> bool:
    """Whether this module computes a convolution: more than one group, one per input channel."""
    return groups > 1 and groups == channels


def taps(w: np.ndarray) -> np.ndarray:
    """The filters (K, 1, kH, kW) as the kernels read them: (kH, kW, K), each tap's K values contiguous."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))


def forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, axes: Axes, out: np.ndarray, rectify: bool,
            positive: np.ndarray | None) -> None:
    """x (N, H, W, C) channels-last, contiguous -> out (N, H_out, W_out, K) (contiguous), rectified if ``rectify``,
    the mask of positive values into ``positive`` (as ``out``) unless None; ranges of images in parallel."""
    filters = taps(w)
    bias = np.empty(0, out.dtype) if b is None else b
    kernels = _kernels(x.dtype)

    def one_range(s: slice) -> None:
        mask = None if positive is None else positive[s]
        if kernels is not None:
            kernels.forward(x[s], filters, bias, *_geometry(axes), rectify, out[s],
                            np.empty((0, 0, 0, 0), np.bool_) if mask is None else mask)
            return
        _forward_numpy(x[s], filters, b, axes, out[s])
        if rectify:
            np.maximum(out[s], out.dtype.type(0), out=out[s])
            if mask is not None:
                np.greater(out[s], 0, out=mask)

    run_parallel(one_range, image_slices(x.shape[0], x.size + out.size))


def backward(x: np.ndarray, dout: np.ndarray, w: np.ndarray, axes: Axes, dx: np.ndarray | None,
             positive: np.ndarray | None, has_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(dw, db)`` in w's dtype (``db`` None without bias), and ``dx`` (N, H, W, C) written unless None.

    x (N, H, W, C) channels-last and contiguous (the forward input), dout (N, H_out, W_out, K)
    contiguous; with a ReLU mask ``positive`` (as dout) the gradient is taken through the ReLU first.
    """
    N, K = x.shape[0], w.shape[0]
    filters = taps(w)
    kernels = _kernels(x.dtype)
    sums = np.empty((N, *filters.shape), x.dtype if kernels is not None else np.float64)   # per image
    bias_sums = np.empty((N, K) if has_bias else (0, 0), np.float64)                         # per image

    def one_range(s: slice) -> None:
        d = dout[s]
        if positive is not None:
            d = through_relu(d, positive[s], scratch("dout_relu", d.shape, d.dtype))
        if kernels is not None:
            if dx is not None:
                kernels.input_gradient(d, filters, *_geometry(axes), dx[s])
            kernels.weight_sums(x[s], d, *_geometry(axes), sums[s], bias_sums[s])
            return
        if dx is not None:
            _input_gradient_numpy(d, filters, axes, dx[s])
        _weight_sums_numpy(x[s], d, axes, sums[s])
        if has_bias:
            bias_sums[s] = d.reshape(d.shape[0], -1, K).sum(axis=1, dtype=np.float64)

    run_parallel(one_range, image_slices(N, x.size + dout.size))
    total = sums.sum(axis=0, dtype=np.float64)                        # (kH, kW, K), images in order
    dw = np.ascontiguousarray(total.transpose(2, 0, 1)[:, None], dtype=w.dtype)
    return dw, (bias_sums.sum(axis=0).astype(w.dtype) if has_bias else None)


def _geometry(axes: Axes) -> tuple[int, int, int, int, int, int]:
    """(stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left), as the kernels take them."""
    h, v = axes
    return h.stride, v.stride, h.dilation, v.dilation, h.pad_lo, v.pad_lo


def _kernels(dtype: np.dtype) -> Any:
    """The compiled kernels, or None where the NumPy engine runs (``_compiled.available``)."""
    if not _compiled.available(dtype):
        return None
    return importlib.import_module("stridenet.functional._depthwise_kernels")


def _windows(padded: np.ndarray, axes: Axes) -> list[tuple[int, int, np.ndarray]]:
    """For each tap (i, j): the (B, H_out, W_out, C) view of the padded images it reads."""
    h, v = axes
    return [(i, j, padded[:, i * h.dilation:i * h.dilation + h.stride * (h.out - 1) + 1:h.stride,
                          j * v.dilation:j * v.dilation + v.stride * (v.out - 1) + 1:v.stride])
            for i in range(h.kernel) for j in range(v.kernel)]


def _forward_numpy(x: np.ndarray, filters: np.ndarray, b: np.ndarray | None, axes: Axes, out: np.ndarray) -> None:
    """``forward`` of a range of images with NumPy: each tap's windows times its filters, over the whole range."""
    C, K = x.shape[3], filters.shape[2]
    sums = out.reshape(*out.shape[:3], C, K // C)
    out[...] = 0 if b is None else b
    product = scratch("depthwise_product", sums.shape, out.dtype)
    for i, j, window in _windows(pad(x, input_padding(axes), (1, 2), "x_padded"), axes):
        np.multiply(window[..., None], filters[i, j].reshape(C, K // C), out=product)
        sums += product


def _input_gradient_numpy(dout: np.ndarray, filters: np.ndarray, axes: Axes, dx: np.ndarray) -> None:
    """``dx`` of a range of images with NumPy: each tap's share added onto the windows of a padded gradient."""
    B, H, W, C = dx.shape
    K = filters.shape[2]
    (top, bottom), (left, right) = input_padding(axes)
    padded = scratch("dx_padded", (B, H + top + bottom, W + left + right, C), dx.dtype)
    padded[...] = 0
    per_channel = dout.reshape(*dout.shape[:3], C, K // C)
    for i, j, window in _windows(padded, axes):
        window += (per_channel * filters[i, j].reshape(C, K // C)).sum(axis=-1)
    dx[...] = padded[:, top:top + H, left:left + W]


def _weight_sums_numpy(x: np.ndarray, dout: np.ndarray, axes: Axes, sums: np.ndarray) -> None:
    """Each image's weight-gradient sums (B, kH, kW, K) in float64, with NumPy."""
    C, K = x.shape[3], dout.shape[3]
    per_channel = dout.reshape(*dout.shape[:3], C, K // C)
    for i, j, window in _windows(pad(x, input_padding(axes), (1, 2), "x_padded"), axes):
        sums[:, i, j] = np.einsum("nhwc,nhwcm->ncm", window, per_channel, dtype=np.float64).reshape(-1, K)
