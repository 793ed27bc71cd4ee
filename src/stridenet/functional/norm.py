"""Batch normalisation over every axis except the channel axis (axis 1).

Training mode normalises with the batch's mean and biased variance; evaluation mode with the
running statistics. Both have exact backward passes (evaluation mode's is what saliency maps use).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional._layout import is_channels_last


class BatchNormCache(NamedTuple):
    x_hat: np.ndarray          # normalised input, same shape as x
    inv_std: np.ndarray        # (C,) 1/sqrt(var + eps)
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
    None in training mode.

    Returns:
        ``(out, cache, batch_mean, batch_var)``; the batch statistics (biased variance) are what a
        layer folds into its running statistics, and are the running ones in evaluation mode.

    Shape:
        (N, C) or (N, C, L) or (N, C, H, W); statistics over every axis except 1.
    """
    known = next((v.shape[0] for v in (running_mean, gamma) if v is not None), None)
    if x.ndim < 2 or (known is not None and x.shape[1] != known):
        raise ShapeError(f"expected input (N, {known}, ...), received shape {x.shape}")
    rows = _as_rows(x)
    if training:
        count = x.size // x.shape[1]
        if count < 2:
            raise ShapeError(f"expected more than 1 value per channel when training, received shape {x.shape}")
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm_forward: evaluation mode needs running_mean and running_var")
    if rows is not None:
        return _forward_rows(x, rows, gamma, beta, running_mean, running_var, training, eps)
    axes = (0, *range(2, x.ndim))
    if training:
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    x_hat = (x - _channel_view(mean, x.ndim)) * _channel_view(inv_std, x.ndim)
    out = x_hat if gamma is None else x_hat * _channel_view(gamma, x.ndim)
    if beta is not None:
        out = out + _channel_view(beta, x.ndim)
    return out, BatchNormCache(x_hat, inv_std, gamma, training), mean, var


def _as_rows(x: np.ndarray) -> np.ndarray | None:
    """The (values, C) matrix view of ``x`` when its channels are the contiguous last axis in memory:
    (N, C) inputs and channels-last (N, C, H, W) ones (what convolutions produce); else None."""
    if x.ndim == 2 and x.flags.c_contiguous:
        return x
    if x.ndim == 4 and is_channels_last(x):
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    return None


def _like(rows: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(values, C) rows back to the shape of ``x``, keeping the channels-last memory."""
    if x.ndim == 2:
        return rows
    N, C, H, W = x.shape
    return rows.reshape(N, H, W, C).transpose(0, 3, 1, 2)


def _channel_sums(rows: np.ndarray) -> np.ndarray:
    """Sum over the rows of a (values, C) matrix: a matrix-vector product, blocked and vectorised."""
    return np.ones(rows.shape[0], rows.dtype) @ rows


def _forward_rows(x: np.ndarray, rows: np.ndarray, gamma: np.ndarray | None, beta: np.ndarray | None,
                  running_mean: np.ndarray | None, running_var: np.ndarray | None, training: bool,
                  eps: float) -> tuple[np.ndarray, BatchNormCache, np.ndarray, np.ndarray]:
    """``batch_norm_forward`` on the (values, C) rows of a channels-last input: every pass runs over
    contiguous memory, and the temporaries are updated in place."""
    m = rows.shape[0]
    if training:
        mean = _channel_sums(rows) / rows.dtype.type(m)
        x_hat = rows - mean
        var = np.einsum("ij,ij->j", x_hat, x_hat) / rows.dtype.type(m)
    else:
        mean, var = running_mean, running_var
        x_hat = rows - mean.astype(rows.dtype)
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    x_hat *= inv_std
    if gamma is None:
        out = x_hat if beta is None else x_hat + beta
    else:
        out = x_hat * gamma
        if beta is not None:
            out += beta
    cache = BatchNormCache(_like(x_hat, x), inv_std, gamma, training)
    return _like(out, x), cache, mean, var


def batch_norm_backward(dout: np.ndarray, cache: BatchNormCache
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(dx, dgamma, dbeta)``. In training mode the batch statistics depend on x, giving
    ``dx = inv_std/m * (m*g - sum(g) - x_hat*sum(g*x_hat))`` with ``g = dout*gamma`` and m values
    per channel; in evaluation mode the statistics are constants and ``dx = g*inv_std``."""
    x_hat, inv_std, gamma, training = cache
    if dout.shape != x_hat.shape:
        raise ShapeError(f"expected an output gradient of shape {x_hat.shape}, received {dout.shape}")
    x_rows = _as_rows(x_hat)
    if x_rows is not None:
        return _backward_rows(dout, x_rows, cache)
    ndim = dout.ndim
    axes = (0, *range(2, ndim))
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


def _backward_rows(dout: np.ndarray, x_hat: np.ndarray, cache: BatchNormCache
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``batch_norm_backward`` on (values, C) rows, as ``dx = a*dout - (b*x_hat + c)`` per channel with
    ``a = gamma*inv_std``, ``b = a*sum(dout*x_hat)/m`` and ``c = a*sum(dout)/m`` (training mode)."""
    _, inv_std, gamma, training = cache
    shape = cache.x_hat.shape
    d = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, shape[1]) if dout.ndim == 4 else dout
    dbeta = _channel_sums(d)
    dgamma = np.einsum("ij,ij->j", d, x_hat)
    a = inv_std if gamma is None else inv_std * gamma
    if training:
        m = d.dtype.type(d.shape[0])
        dx = x_hat * (a * dgamma / m)
        dx += a * dbeta / m
        np.subtract(d * a, dx, out=dx)
    else:
        dx = d * a
    return _like(dx, cache.x_hat), dgamma if gamma is not None else None, dbeta
