"""numba kernels behind ``_depthwise``: a depthwise convolution's forward pass and gradients over a range
of channels-last images, one pixel at a time with its channels as the vector.

Imported only by ``_depthwise`` (this module needs numba). Every kernel takes the window geometry as
(stride, dilation, padding before) per axis and the filters as ``taps`` (kH, kW, K): output channel
``k`` reads input channel ``k // m`` (``m = K / C`` filters per channel). Each output value is a
chain of float adds in tap order, kept in a small vector of the pixel's channels, and written once.
"""

from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(nogil=True, cache=True, boundscheck=False)


@_jit
def forward(x, taps, bias, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, rectify, out, positive):
    """out (B, H_out, W_out, K) = bias + sum over the taps of x (B, H, W, C) times each tap's filters, one
    output pixel at a time; rectified if ``rectify``, the mask of positive values into a non-empty
    ``positive`` (as ``out``). ``bias`` may be empty."""
    B, H, W, C = x.shape
    kh, kw, K = taps.shape
    m = K // C
    masked = positive.size > 0
    zero = out.dtype.type(0)
    start = np.zeros(K, out.dtype)
    if bias.size > 0:
        start[:] = bias
    acc = np.empty(K, out.dtype)
    for n in range(B):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                for k in range(K):
                    acc[k] = start[k]
                for a in range(kh):
                    y = i * stride_h + a * dilation_h - pad_top
                    if y < 0 or y >= H:
                        continue
                    for b in range(kw):
                        v = j * stride_w + b * dilation_w - pad_left
                        if v < 0 or v >= W:
                            continue
                        if m == 1:
                            for k in range(K):
                                acc[k] += x[n, y, v, k] * taps[a, b, k]
                        else:
                            for c in range(C):
                                value = x[n, y, v, c]
                                for e in range(m):
                                    acc[c * m + e] += value * taps[a, b, c * m + e]
                if not (rectify or masked):
                    for k in range(K):
                        out[n, i, j, k] = acc[k]
                    continue
                for k in range(K):
                    value = acc[k]
                    if rectify and value < zero:
                        value = zero
                    out[n, i, j, k] = value
                    if masked:
                        positive[n, i, j, k] = value > zero


@_jit
def _reader(position, pad, tap, dilation, stride, outputs):
    """Along one axis: the output (of ``outputs``) whose window reads input ``position`` under ``tap``, or -1
    where none does (the stride skips it, or it lies past the first or last window)."""
    offset = position + pad - tap * dilation
    if offset < 0 or offset % stride:
        return -1
    index = offset // stride
    return index if index < outputs else -1


@_jit
def input_gradient(dout, taps, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, dx):
    """dx (B, H, W, C): for each input pixel, the sum over the taps and output pixels that read it of the
    output gradient (B, H_out, W_out, K) times the tap's filters (its m filters' share added up first),
    gathered pixel by pixel: every value of ``dx`` written once."""
    B, H, W, C = dx.shape
    kh, kw, K = taps.shape
    m = K // C
    acc = np.empty(C, dx.dtype)
    zero = dx.dtype.type(0)
    for n in range(B):
        for y in range(H):
            for v in range(W):
                for c in range(C):
                    acc[c] = zero
                for a in range(kh):
                    i = _reader(y, pad_top, a, dilation_h, stride_h, dout.shape[1])
                    if i < 0:
                        continue
                    for b in range(kw):
                        j = _reader(v, pad_left, b, dilation_w, stride_w, dout.shape[2])
                        if j < 0:
                            continue
                        if m == 1:
                            for c in range(C):
                                acc[c] += dout[n, i, j, c] * taps[a, b, c]
                        else:
                            for c in range(C):
                                share = zero
                                for e in range(m):
                                    share += dout[n, i, j, c * m + e] * taps[a, b, c * m + e]
                                acc[c] += share
                for c in range(C):
                    dx[n, y, v, c] = acc[c]


@_jit
def weight_sums(x, dout, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left, sums, bias_sums):
    """sums[n] (kH, kW, K) for each image n: tap (a, b)'s gradient, the sum over the output pixels of the
    output gradient times the input pixel the tap read there (in the images' dtype, output pixels in
    order); and, unless ``bias_sums`` is empty, bias_sums[n] (K,): the image's output gradient added up
    in float64."""
    B, H, W, C = x.shape
    kh, kw, K = sums.shape[1:]
    m = K // C
    acc = np.empty(K, sums.dtype)
    for n in range(B):
        if bias_sums.size > 0:
            for k in range(K):
                bias_sums[n, k] = 0.0
            for i in range(dout.shape[1]):
                for j in range(dout.shape[2]):
                    for k in range(K):
                        bias_sums[n, k] += dout[n, i, j, k]
        for a in range(kh):
            for b in range(kw):
                for k in range(K):
                    acc[k] = 0
                for i in range(dout.shape[1]):
                    y = i * stride_h + a * dilation_h - pad_top
                    if y < 0 or y >= H:
                        continue
                    for j in range(dout.shape[2]):
                        v = j * stride_w + b * dilation_w - pad_left
                        if 0 <= v < W:
                            if m == 1:
                                for k in range(K):
                                    acc[k] += dout[n, i, j, k] * x[n, y, v, k]
                            else:
                                for k in range(K):
                                    acc[k] += dout[n, i, j, k] * x[n, y, v, k // m]
                for k in range(K):
                    sums[n, a, b, k] = acc[k]
