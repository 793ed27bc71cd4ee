"""Fully connected layer: every output is a dot product with every input, plus a bias."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError


class LinearCache(NamedTuple):
    x: np.ndarray             # (..., in_features)
    w: np.ndarray             # (out_features, in_features)
    has_bias: bool


def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> tuple[np.ndarray, LinearCache]:
    """``out = x @ w.T + b``.

    Shape:
        (*, in_features) -> (*, out_features); w (out_features, in_features).
    """
    if x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"expected input with {w.shape[1]} features in its last dimension, "
                         f"received shape {x.shape}")
    if x.dtype != w.dtype:
        raise ShapeError(f"expected input of dtype {w.dtype} (the weights' dtype), received {x.dtype} "
                         f"with shape {x.shape}")
    out = x @ w.T
    if b is not None:
        out += b
    return out, LinearCache(x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dx, dw, db)``: dx = dout @ w, dw = dout^T @ x summed over every leading index, db = sum(dout)."""
    x, w, has_bias = cache
    expected = (*x.shape[:-1], w.shape[0])
    if dout.shape != expected:
        raise ShapeError(f"expected an output gradient of shape {expected}, received {dout.shape}")
    dout_rows = dout.reshape(-1, w.shape[0])
    dw = dout_rows.T @ x.reshape(-1, w.shape[1])
    db = dout_rows.sum(axis=0) if has_bias else None
    return dout @ w, dw, db
