"""Fully connected layer: every output is a dot product with every input, plus a bias."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional._parallel import image_slices, run_parallel, total


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
    rows = x.reshape(-1, w.shape[1])                                 # (M, in_features)
    out = np.empty((rows.shape[0], w.shape[0]), x.dtype)             # (M, out_features)

    def part(s: slice) -> None:
        np.matmul(rows[s], w.T, out=out[s])
        if b is not None:
            out[s] += b

    run_parallel(part, image_slices(rows.shape[0], rows.size))
    return out.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dx, dw, db)``: dx = dout @ w, dw = dout^T @ x summed over every leading index, db = sum(dout)."""
    x, w, has_bias = cache
    expected = (*x.shape[:-1], w.shape[0])
    if dout.shape != expected:
        raise ShapeError(f"expected an output gradient of shape {expected}, received {dout.shape}")
    dout_rows = dout.reshape(-1, w.shape[0])                          # (M, out_features)
    x_rows = x.reshape(-1, w.shape[1])                                # (M, in_features)
    dx = np.empty(x_rows.shape, dout.dtype)

    def part(s: slice) -> tuple[np.ndarray, np.ndarray | None]:
        np.matmul(dout_rows[s], w, out=dx[s])
        return dout_rows[s].T @ x_rows[s], (dout_rows[s].sum(axis=0) if has_bias else None)

    parts = run_parallel(part, image_slices(x_rows.shape[0], x_rows.size))
    dw = total([p[0] for p in parts])
    db = total([p[1] for p in parts]) if has_bias else None
    return dx.reshape(x.shape), dw, db
