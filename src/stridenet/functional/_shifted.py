"""Stride-1 convolution as a sum of shifted matrix products over the padded image, with no im2col.

Number the pixels of a block of zero-padded channels-last images (B, Hp, Wp, C) row by row:
``r = (b*Hp + y)*Wp + x``. Output pixel (h, w) of a stride-1 convolution reads input pixel
(h + D*i, w + D*j) under tap (i, j), which is pixel ``r + D*(i*Wp + j)`` of the grid when (h, w) is
pixel r: the same shift for every output pixel. So, with the block as a matrix of rows (B*Hp*Wp, C),

    out[r] = sum over taps (i, j) of  rows[r + shift_ij] @ W_ij          W_ij = w[:, :, i, j].T  (C, K)

is kH*kW products of *contiguous row ranges* of one array, added up inside the BLAS kernel
(``_blas.gemm`` with ``accumulate``): nothing is copied into columns, and the block stays in cache
from one tap to the next. The products also fill the grid positions past the output's edge
(w >= W_out, h >= H_out of each image); those values are dropped. That costs Hp*Wp / (H_out*W_out)
times the useful work: 1.15x for 28x28 images with padding 1, 1.31x for 14x14, 1.56x for 8x8.

The backward pass is the same trick twice:

* ``dx`` is the stride-1 convolution of the output gradient, zero-padded by D(k-1) - P, with the
  filters flipped and their channels swapped (``W_ij`` becomes ``w[:, :, kH-1-i, kW-1-j]``, (K, C)).
* ``dw`` for tap (i, j) is ``sum_r rows[r + shift_ij]^T @ dout_grid[r]``, where ``dout_grid`` holds the
  output gradient at its pixels of the input grid and zeros elsewhere: again shifted row ranges. With
  'same' padding (P_lo + P_hi = D(k-1)) the padded gradient of the ``dx`` step already is that grid,
  shifted by a whole number of rows, so one copy of ``dout`` serves both products.

Used for channels-last inputs, one group, stride 1 and padding at most D(k-1) on each side, when
NumPy's BLAS is reachable (``_blas``); ``conv.py`` keeps its im2col path for everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from stridenet.functional import _blas
from stridenet.functional._im2col import COLS_BUDGET
from stridenet.functional._layout import scratch
from stridenet.functional.activation import through_relu
from stridenet.functional.geometry import WindowAxis

Axes = tuple[WindowAxis, WindowAxis]

# An image whose working set exceeds this many budgets goes to the im2col path, which can cut an
# image into bands of rows; here a block is at least one whole image.
MAX_BUDGETS_PER_IMAGE = 4


def applies(axes: Axes, groups: int, channels: int, filters: int, dtype: np.dtype) -> bool:
    """Whether this module handles a convolution: stride 1, one group, a real window, padding within
    D(k-1) on each side, a BLAS to call, and one image's working set within bounds."""
    if groups != 1 or not _blas.available(dtype):
        return False
    if any(a.stride != 1 or a.extra_hi for a in axes) or axes[0].kernel * axes[1].kernel == 1:
        return False
    if any(not 0 <= pad <= a.dilation * (a.kernel - 1) for a in axes for pad in (a.pad_lo, a.pad_hi)):
        return False
    return _grid_pixels(axes) * (2 * channels + 2 * filters) * np.dtype(dtype).itemsize \
        <= MAX_BUDGETS_PER_IMAGE * COLS_BUDGET


class Taps(NamedTuple):
    """The filters as one matrix per tap, and each tap's row shift on the grid the products run over."""

    shifts: list[int]
    matrices: np.ndarray      # (kH*kW, C, K) for the forward pass, (kH*kW, K, C) for the input gradient


def taps(w: np.ndarray, axes: Axes, flip: bool = False) -> Taps:
    """``w`` (K, C, kH, kW) as the forward pass's taps (over the padded input's grid) or, with ``flip``,
    the input gradient's (filters reversed, channels swapped, over the padded output gradient's grid)."""
    kH, kW = w.shape[2:]
    if flip:   # (K, C, kH, kW) -> (kH, kW, K, C), taps reversed
        matrices = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
        width = axes[1].size + axes[1].dilation * (kW - 1)
    else:      # (K, C, kH, kW) -> (kH, kW, C, K)
        matrices = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
        width = _grid(axes)[1]
    Dh, Dw = axes[0].dilation, axes[1].dilation
    shifts = [Dh * i * width + Dw * j for i in range(kH) for j in range(kW)]
    return Taps(shifts, matrices.reshape(kH * kW, *matrices.shape[2:]))


def blocks(N: int, axes: Axes, channels: int, filters: int, itemsize: int, backward: bool) -> list[slice]:
    """The blocks of images ``forward`` (or ``backward``) works on, one after the other: as tasks for
    ``run_parallel``, they let a thread that finishes early take the next block."""
    per_block = _images_per_block(axes, (channels + filters) * (2 if backward else 1), itemsize)
    return [slice(n0, min(n0 + per_block, N)) for n0 in range(0, N, per_block)]


def forward(x: np.ndarray, taps: Taps, b: np.ndarray | None, axes: Axes, out: np.ndarray,
            epilogue: Callable[[np.ndarray, slice], None] | None = None) -> None:
    """x (N, H, W, C) (any strides) convolved with the forward ``taps`` -> out (N, H_out, W_out, K) (contiguous).

    ``epilogue`` (e.g. a ReLU) runs on each block of output rows as soon as it is complete, with the
    rows of ``out.reshape(-1, K)`` it covers.
    """
    K = taps.matrices.shape[2]
    h, v = axes
    Hp, Wp = _grid(axes)
    out_rows = out.reshape(-1, K)
    pixels = h.out * v.out
    for block in blocks(x.shape[0], axes, x.shape[3], K, x.itemsize, backward=False):
        n0, n1 = block.start, block.stop
        B = n1 - n0
        grid = _bordered("x_padded", x[n0:n1], (Hp, Wp), (h.pad_lo, v.pad_lo))   # (B*Hp*Wp, C)
        products = scratch("shifted_out", (B * Hp * Wp, K), x.dtype)
        count = (B - 1) * Hp * Wp + (h.out - 1) * Wp + v.out         # up to the block's last output pixel
        _sum_of_shifted(grid, taps, products, count)
        dst = out[n0:n1]
        valid = products.reshape(B, Hp, Wp, K)[:, :h.out, :v.out]
        if b is None:
            np.copyto(dst, valid)
        else:
            np.add(valid, b, out=dst)
        if epilogue is not None:
            rows = slice(n0 * pixels, n1 * pixels)
            epilogue(out_rows[rows], rows)


def backward(x: np.ndarray, dout: np.ndarray, dx_taps: Taps, axes: Axes, has_bias: bool,
             dx: np.ndarray | None, positive: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Write ``dx`` (N, H, W, C) unless it is None; return the float64 sums (kH*kW, C, K) for ``dw`` and ``db``.

    ``x`` (N, H, W, C) is the forward input (any strides), ``dout`` (N, H_out, W_out, K) contiguous,
    ``dx_taps`` the input gradient's taps (``taps(w, axes, flip=True)``); with a ReLU mask ``positive``
    (as ``dout``), each block of ``dout`` is taken through the ReLU first.
    """
    N, H, W, C = x.shape
    K = dout.shape[3]
    h, v = axes
    kH, kW = h.kernel, v.kernel
    Hp, Wp = _grid(axes)
    top, left = h.dilation * (kH - 1) - h.pad_lo, v.dilation * (kW - 1) - v.pad_lo
    Hq, Wq = H + h.dilation * (kH - 1), W + v.dilation * (kW - 1)  # the padded output gradient's grid
    same = (Hq, Wq) == (Hp, Wp)
    shifts = [h.dilation * i * Wp + v.dilation * j for i in range(kH) for j in range(kW)]
    grads = np.zeros((kH * kW, C, K), np.float64)
    db = np.zeros(K, np.float64) if has_bias else None
    for block in blocks(N, axes, C, K, x.itemsize, backward=True):
        n0, n1 = block.start, block.stop
        B = n1 - n0
        d = dout[n0:n1]
        count = (B - 1) * Hp * Wp + (h.out - 1) * Wp + v.out          # input-grid rows that reach an output
        if dx is not None:
            dq = _bordered("dout_padded", d, (Hq, Wq), (top, left), None if positive is None else positive[n0:n1])
            products = scratch("shifted_dx", (B * Hq * Wq, C), x.dtype)
            _sum_of_shifted(dq, dx_taps, products, (B - 1) * Hq * Wq + (H - 1) * Wq + W)
            np.copyto(dx[n0:n1], products.reshape(B, Hq, Wq, C)[:, :H, :W])
            if same:
                on_grid = dq[top * Wq + left:]                      # dout at its input-grid pixels
            else:
                on_grid = _bordered("dout_grid", dq.reshape(B, Hq, Wq, K)[:, top:top + h.out, left:left + v.out],
                                    (Hp, Wp), (0, 0))
        else:
            on_grid = _bordered("dout_grid", d, (Hp, Wp), (0, 0), None if positive is None else positive[n0:n1])
        if db is not None:   # the grid holds the (rectified) gradient and zeros
            db += on_grid[:count].sum(axis=0, dtype=np.float64)
        grid = _bordered("x_padded", x[n0:n1], (Hp, Wp), (h.pad_lo, v.pad_lo))
        sums = scratch("shifted_dw", (kH * kW, C, K), x.dtype)
        _weight_sums(grid, shifts, on_grid, count, sums)
        grads += sums
    return grads, db


def weight_grads(sums: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``dw`` (K, C, kH, kW) from ``backward``'s sums (kH*kW, C, K)."""
    K, C, kH, kW = w.shape
    return sums.reshape(kH, kW, C, K).transpose(3, 2, 0, 1)


def _sum_of_shifted(grid: np.ndarray, taps: Taps, out: np.ndarray, count: int) -> None:
    """``out[:count] = sum over taps of grid[shift:shift + count] @ matrix``, added up by BLAS.

    grid (rows, C) and out (rows, K) contiguous, the matrices (taps, C, K).
    """
    shifts, matrices = taps
    _, C, K = matrices.shape
    size = grid.itemsize
    g, m, o = _blas.address(grid), _blas.address(matrices), _blas.address(out)
    for t, shift in enumerate(shifts):
        _blas.gemm_at(grid.dtype, count, K, C, g + shift * C * size, C, m + t * C * K * size, K, o, K, t > 0)


def _weight_sums(grid: np.ndarray, shifts: list[int], on_grid: np.ndarray, count: int, sums: np.ndarray) -> None:
    """``sums[t] = grid[shift_t:shift_t + count]^T @ on_grid[:count]`` for every tap: (taps, C, K).

    grid (rows, C) and on_grid (rows, K) row-contiguous, sums contiguous.
    """
    _, C, K = sums.shape
    size = grid.itemsize
    g, d, s = _blas.address(grid), _blas.address(on_grid), _blas.address(sums)
    ld = on_grid.strides[0] // size
    for t, shift in enumerate(shifts):
        _blas.gemm_at(grid.dtype, C, K, count, g + shift * C * size, C, d, ld, s + t * C * K * size, K,
                      transpose_a=True)


def _bordered(name: str, values: np.ndarray, grid: tuple[int, int], corner: tuple[int, int],
              positive: np.ndarray | None = None) -> np.ndarray:
    """``values`` (B, h, w, C) placed at ``corner`` of a zeroed (B, *grid, C) scratch array: its rows (B*Hg*Wg, C).

    With a ReLU mask ``positive`` the values are taken through the ReLU on the way.
    """
    B, h, w, C = values.shape
    Hg, Wg = grid
    top, left = corner
    out = scratch(name, (B, Hg, Wg, C), values.dtype)
    for index in ((slice(None), slice(0, top)), (slice(None), slice(top + h, Hg)),
                  (slice(None), slice(top, top + h), slice(0, left)),
                  (slice(None), slice(top, top + h), slice(left + w, Wg))):
        out[index] = 0
    inside = out[:, top:top + h, left:left + w]
    if positive is None:
        np.copyto(inside, values)
    else:
        through_relu(values, positive, inside)
    return out.reshape(-1, C)


def _grid(axes: Axes) -> tuple[int, int]:
    """The padded input's height and width."""
    return tuple(a.size + a.pad_lo + a.pad_hi for a in axes)  # type: ignore[return-value]


def _grid_pixels(axes: Axes) -> int:
    Hp, Wp = _grid(axes)
    return Hp * Wp


def _images_per_block(axes: Axes, channels: int, itemsize: int) -> int:
    """Images per block so that their grids of ``channels`` values per pixel fit ``COLS_BUDGET``."""
    return max(COLS_BUDGET // max(_grid_pixels(axes) * channels * itemsize, 1), 1)
