"""Batch normalisation over every axis except the channel axis (axis 1).

Training mode normalises with the batch's mean and biased variance; evaluation mode with the
running statistics. Both have exact backward passes (evaluation mode's is what saliency maps use).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional._layout import as_nchw, is_channels_last, to_nhwc
from stridenet.functional._parallel import image_slices, run_parallel, total


class BatchNormCache(NamedTuple):
    centred: np.ndarray        # x - mean, same shape and memory layout as x
    inv_std: np.ndarray        # (C,) 1/sqrt(var + eps); x_hat = centred * inv_std
    gamma: np.ndarray | None   # (C,) or None without affine parameters
    training: bool             # batch statistics (True) or running statistics (False)


def _channel_view(values: np.ndarray, ndim: int) -> np.ndarray:
    """(C,) -> (1, C, 1, ...) broadcastable against an input of rank ``ndim``."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_forward(x: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None,
                       running_mean: np.ndarray | None, running_var: np.ndarray | None, training: bool,
                       eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """Normalise each channel, then scale by gamma and shift by beta.

    ``running_mean``/``running_var`` are only read in evaluation mode (``training=False``) and may be
    None in training mode. Channels-last inputs (what convolutions produce) and (N, C) inputs run as
    a matrix of rows (``_rows``), and keep their layout.

    Returns:
        ``(out, cache, batch_mean, batch_var)``; the batch statistics (biased variance) are what a
        layer folds into its running statistics, and are the running ones in evaluation mode.

    Shape:
        (N, C) or (N, C, L) or (N, C, H, W); statistics over every axis except 1.
    """
    known = next((v.shape[0] for v in (running_mean, gamma) if v is not None), None)
    if x.ndim < 2 or (known is not None and x.shape[1] != known):
        raise ShapeError(f"expected input (N, {known}, ...), received shape {x.shape}")
    if training:
        if x.size // x.shape[1] < 2:
            raise ShapeError(f"expected more than 1 value per channel when training, received shape {x.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm_forward: evaluation mode needs running_mean and running_var")
    rows = _rows(x)
    if rows is not None:
        return _forward_rows(x, *rows, gamma, beta, running_mean, running_var, training, eps)
    axes = (0, *range(2, x.ndim))
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    centred = x - _channel_view(mean.astype(x.dtype), x.ndim)
    out = centred * _channel_view(inv_std, x.ndim)
    if gamma is not None:
        out *= _channel_view(gamma, x.ndim)
    if beta is not None:
        out += _channel_view(beta, x.ndim)
    return out, BatchNormCache(centred, inv_std, gamma, training), mean, var


def batch_norm_backward(dout: np.ndarray, cache: BatchNormCache
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(dx, dgamma, dbeta)``. In training mode the batch statistics depend on x, giving
    ``dx = inv_std/m * (m*g - sum(g) - x_hat*sum(g*x_hat))`` with ``g = dout*gamma`` and m values
    per channel; in evaluation mode the statistics are constants and ``dx = g*inv_std``."""
    centred, inv_std, gamma, training = cache
    if dout.shape != centred.shape:
        raise ShapeError(f"expected an output gradient of shape {centred.shape}, received {dout.shape}")
    rows = _rows(centred)
    if rows is not None:
        return _backward_rows(dout, *rows, cache)
    ndim = dout.ndim
    axes = (0, *range(2, ndim))
    x_hat = centred * _channel_view(inv_std, ndim)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * x_hat).sum(axis=axes)
    g = dout if gamma is None else dout * _channel_view(gamma, ndim)
    if not training:
        return g * _channel_view(inv_std, ndim), dgamma if gamma is not None else None, dbeta
    m = dout.size // dout.shape[1]
    g_sum = g.sum(axis=axes) if gamma is None else dbeta * gamma
    gx_sum = (g * x_hat).sum(axis=axes) if gamma is None else dgamma * gamma
    dx = (g - _channel_view(g_sum / m, ndim) - x_hat * _channel_view(gx_sum / m, ndim)) \
        * _channel_view(inv_std, ndim)
    return dx, dgamma if gamma is not None else None, dbeta


# Channels-last and (N, C) inputs: a (values, C) matrix, widened to long rows.

def _rows(x: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``x`` as (M/k, k*C) rows of whole channel vectors, and k, when its channels are the contiguous
    last axis in memory ((N, C) inputs, channels-last (N, C, H, W) ones); else None.

    k*C is near 2048: a per-channel vector tiled k times then broadcasts along long rows. NumPy runs
    its inner loop along a row, so with C = 32 values per row it would spend its time between rows.
    """
    if x.ndim == 2 and x.flags.c_contiguous:
        values = x
    elif x.ndim == 4 and is_channels_last(x):
        values = to_nhwc(x).reshape(-1, x.shape[1])   # a view: x is channels-last
    else:
        return None
    M, C = values.shape
    k = next(k for k in range(max(min(M, 2048 // C), 1), 0, -1) if M % k == 0)
    return values.reshape(M // k, k * C), k


def _like(wide: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Widened rows back to the shape of ``x``, keeping the channels-last memory."""
    if x.ndim == 2:
        return wide.reshape(x.shape)
    N, C, H, W = x.shape
    return as_nchw(wide.reshape(N, H, W, C))


def _channel_sums(wide: np.ndarray, k: int) -> np.ndarray:
    """Per-channel sums of widened rows: a matrix-vector product (blocked, vectorised), then a fold."""
    return (np.ones(wide.shape[0], wide.dtype) @ wide).reshape(k, -1).sum(axis=0)


def _channel_dots(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """Per-channel sums of ``a * b`` over widened rows, without the product array."""
    return np.einsum("ij,ij->j", a, b).reshape(k, -1).sum(axis=0)


def _forward_rows(x: np.ndarray, wide: np.ndarray, k: int, gamma: np.ndarray | None, beta: np.ndarray | None,
                  running_mean: np.ndarray | None, running_var: np.ndarray | None, training: bool,
                  eps: float) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """``batch_norm_forward`` over widened rows: sum, centre, sum of squares, scale, shift (the last
    two in place), with ``a = gamma*inv_std`` folded into one per-channel factor. Each pass runs on
    ranges of rows in parallel (``_parallel``); the sums add up the ranges' partial sums."""
    dtype = x.dtype.type
    m = dtype(x.size // x.shape[1])
    slices = image_slices(wide.shape[0], wide.size)
    centred = np.empty_like(wide)

    def centre(s: slice, tiled_mean: np.ndarray) -> np.ndarray | None:
        np.subtract(wide[s], tiled_mean, out=centred[s])
        return _channel_dots(centred[s], centred[s], k) if training else None

    if training:
        mean = total(run_parallel(lambda s: _channel_sums(wide[s], k), slices)) / m
        tiled_mean = np.tile(mean, k)
        var = total(run_parallel(lambda s: centre(s, tiled_mean), slices)) / m
    else:
        mean, var = running_mean, running_var
        tiled_mean = np.tile(mean.astype(x.dtype), k)
        run_parallel(lambda s: centre(s, tiled_mean), slices)
    inv_std = (1.0 / np.sqrt(var + dtype(eps))).astype(x.dtype)
    scale = np.tile(inv_std if gamma is None else inv_std * gamma, k)
    shift = None if beta is None else np.tile(beta, k)
    out = np.empty_like(wide)

    def normalise(s: slice) -> None:
        np.multiply(centred[s], scale, out=out[s])
        if shift is not None:
            out[s] += shift

    run_parallel(normalise, slices)
    return _like(out, x), BatchNormCache(_like(centred, x), inv_std, gamma, training), mean, var


def _backward_rows(dout: np.ndarray, centred: np.ndarray, k: int, cache: BatchNormCache
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``batch_norm_backward`` as ``dx = a*dout - (b*centred + c)`` per channel, with ``a = gamma*inv_std``,
    ``b = a*inv_std*sum(dout*centred)/m`` and ``c = a*sum(dout)/m`` (training mode; ``dx = a*dout``
    in evaluation mode), and ``dgamma = inv_std*sum(dout*centred)``: x_hat is never formed."""
    _, inv_std, gamma, training = cache
    d = (np.ascontiguousarray(dout) if dout.ndim == 2 else to_nhwc(dout)).reshape(centred.shape)
    m = d.dtype.type(d.size // inv_std.shape[0])
    slices = image_slices(d.shape[0], d.size)
    sums = run_parallel(lambda s: (_channel_sums(d[s], k), _channel_dots(d[s], centred[s], k)), slices)
    dbeta = total([p[0] for p in sums])
    dgamma = total([p[1] for p in sums]) * inv_std
    a = inv_std if gamma is None else inv_std * gamma
    scale = np.tile(a, k)
    factor, offset = np.tile(a * inv_std * dgamma / m, k), np.tile(a * dbeta / m, k)
    dx = np.empty_like(d)

    def input_grad(s: slice) -> None:
        np.multiply(d[s], scale, out=dx[s])
        if training:
            correction = centred[s] * factor
            correction += offset
            dx[s] -= correction

    run_parallel(input_grad, slices)
    return _like(dx, cache.centred), dgamma if gamma is not None else None, dbeta
