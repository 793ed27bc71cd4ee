"""Fully connected layer: every output is a dot product with every input, plus a bias."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional import _compiled
from stridenet.functional._parallel import image_slices, run_parallel


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

    # Split by output features, not by rows: each thread reads all rows and its share of the weights.
    # (By rows, every thread packs all the weights for its product: a 128 x 3136 batch through a
    # 3136 -> 128 layer took 2.6 ms on two threads that way, 2.3 by features, 2.2 on one thread.)
    features = image_slices(w.shape[0], rows.size + w.size)
    if len(features) > 1 and _compiled.matmuls_apply(x.dtype):   # on numba's threads, already awake
        rows, w = np.ascontiguousarray(rows), np.ascontiguousarray(w)
        _compiled.matmuls([(rows, w[s].T, out[:, s]) for s in features])
        if b is not None:
            out += b
    else:
        def part(s: slice) -> None:   # a range of output features: every row, that range's weights
            np.matmul(rows, w[s].T, out=out[:, s])
            if b is not None:
                out[:, s] += b[s]

        run_parallel(part, features)
    return out.reshape(*x.shape[:-1], w.shape[0]), LinearCache(x, w, b is not None)


def linear_backward(dout: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(dx, dw, db)``: dx = dout @ w, dw = dout^T @ x summed over every leading index, db = sum(dout)."""
    x, w, has_bias = cache
    expected = (*x.shape[:-1], w.shape[0])
    if dout.shape != expected:
        raise ShapeError(f"expected an output gradient of shape {expected}, received {dout.shape}")
    dout_rows = dout.reshape(-1, w.shape[0])                          # (M, out_features)
    x_rows = x.reshape(-1, w.shape[1])                                # (M, in_features)
    M = x_rows.shape[0]
    dx = np.empty(x_rows.shape, dout.dtype)
    gradients: dict[str, np.ndarray] = {}

    def part(s: slice) -> None:
        if s.start is None:   # the weight (and bias) gradient: one product over every row
            gradients["w"] = dout_rows.T @ x_rows
            if has_bias:
                gradients["b"] = dout_rows.sum(axis=0)
        else:                 # a range of rows of the input gradient
            np.matmul(dout_rows[s], w, out=dx[s])

    # The weight gradient is one task, the input gradient (as many flops) the others: no partial sums of
    # dw to add up (the same bits however many threads), and each product packs its operands once (by
    # ranges of rows, each thread packed all the weights: 6.5 ms where this takes 3.4, for 128 rows
    # through a 3136 -> 128 layer on two threads).
    ranges = image_slices(M, x_rows.size + w.size)
    parts = max(len(ranges) - 1, 1)
    tasks = [slice(None)] + [slice(M * i // parts, M * (i + 1) // parts) for i in range(parts)]
    if len(ranges) > 1 and dout.dtype == x.dtype and _compiled.matmuls_apply(x.dtype):   # numba's threads
        dout_rows, x_rows, w = (np.ascontiguousarray(a) for a in (dout_rows, x_rows, w))
        gradients["w"] = np.empty(w.shape, dout.dtype)
        _compiled.matmuls([(dout_rows.T, x_rows, gradients["w"])] + [(dout_rows[s], w, dx[s]) for s in tasks[1:]])
        if has_bias:
            gradients["b"] = dout_rows.sum(axis=0)
    elif len(ranges) > 1:
        run_parallel(part, tasks)
    else:
        for task in tasks:
            part(task)
    return dx.reshape(x.shape), gradients["w"], gradients.get("b")
