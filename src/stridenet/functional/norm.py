"""Batch normalisation over every axis except the channel axis (axis 1).

Training mode normalises with the batch's mean and biased variance; evaluation mode with the
running statistics. Both have exact backward passes (evaluation mode's is what saliency maps use).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError


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
    axes = (0, *range(2, x.ndim))
    if training:
        count = x.size // x.shape[1]
        if count < 2:
            raise ShapeError(f"expected more than 1 value per channel when training, received shape {x.shape}")
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
    elif running_mean is None or running_var is None:
        raise ValueError("batch_norm_forward: evaluation mode needs running_mean and running_var")
    else:
        mean, var = running_mean, running_var
    inv_std = (1.0 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    x_hat = (x - _channel_view(mean, x.ndim)) * _channel_view(inv_std, x.ndim)
    out = x_hat if gamma is None else x_hat * _channel_view(gamma, x.ndim)
    if beta is not None:
        out = out + _channel_view(beta, x.ndim)
    return out, BatchNormCache(x_hat, inv_std, gamma, training), mean, var


def batch_norm_backward(dout: np.ndarray, cache: BatchNormCache
                        ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(dx, dgamma, dbeta)``. In training mode the batch statistics depend on x, giving
    ``dx = inv_std/m * (m*g - sum(g) - x_hat*sum(g*x_hat))`` with ``g = dout*gamma`` and m values
    per channel; in evaluation mode the statistics are constants and ``dx = g*inv_std``."""
    x_hat, inv_std, gamma, training = cache
    if dout.shape != x_hat.shape:
        raise ShapeError(f"expected an output gradient of shape {x_hat.shape}, received {dout.shape}")
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
