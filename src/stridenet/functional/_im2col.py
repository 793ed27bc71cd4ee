"""im2col and col2im, a few images (or output rows) at a time, into reused buffers.

Convolution becomes a matrix product once every input window is copied into a row ("im2col"). For
a whole batch that matrix is kH*kW times the input (226 MB for 64 images of 96x32x32 and a 3x3
kernel), so the kernels here build it block by block: ``blocks`` splits the batch so that one
block's columns fit ``COLS_BUDGET``; the caller runs one matrix product per block and reuses the
buffer. The backward pass rebuilds the columns instead of keeping them.

Two column layouts:

* channels-last (``im2col_nhwc``): row = output pixel, columns ordered (kH, kW, C/G). The copy moves
  runs of C contiguous values and the product writes (N, H_out, W_out, K) directly. Used when the
  input has more than ``conv.CM_MAX_CHANNELS`` (8) channels, or groups.
* channel-major (``im2col_cm``): (C*kH*kW, pixels), rows ordered (C, kH, kW) as the weights. The copy
  moves runs of W_out values, which is much faster for few channels (first layers: 1 or 3).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from stridenet.functional._layout import scratch
from stridenet.functional.geometry import WindowAxis

# Largest im2col block, in bytes, per thread. Small enough to stay in a core's L2 cache (2 MiB on the
# machines measured) between the copy and the matrix product, large enough to give the product
# thousands of rows. With each thread building its own blocks, 2 MiB trained the reference CNN ~10%
# faster than 4 MiB (the best when one block fed a product on both cores) and no slower than 1.5 or 3.
COLS_BUDGET = 2 * 2**20

Block = tuple[int, int, int, int]   # images [n0, n1), output rows [h0, h1)


def blocks(N: int, H_out: int, row_bytes: int,
           budget: int | None = None) -> Iterator[tuple[int, int, list[Block]]]:
    """Split N images of H_out output rows (``row_bytes`` of columns per output row) into blocks.

    Yields ``(n0, n1, blocks)``: a group of whole images and the blocks that cover it, each at most
    ``budget`` bytes (default ``COLS_BUDGET``) of columns: several images per block when one image
    fits, else bands of output rows of a single image. A block's output rows are always contiguous
    in (N, H_out, W_out, K).
    """
    budget = COLS_BUDGET if budget is None else budget
    image_bytes = max(H_out * row_bytes, 1)
    if image_bytes <= budget:
        per_block = budget // image_bytes
        for n0 in range(0, N, per_block):
            n1 = min(n0 + per_block, N)
            yield n0, n1, [(n0, n1, 0, H_out)]
        return
    rows = max(budget // max(row_bytes, 1), 1)
    for n in range(N):
        yield n, n + 1, [(n, n + 1, h0, min(h0 + rows, H_out)) for h0 in range(0, H_out, rows)]


def pad(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], spatial: tuple[int, int],
        name: str) -> np.ndarray:
    """Zero-pad two spatial axes of ``x`` into a scratch buffer; negative amounts crop instead.

    ``spatial`` names the axes: (1, 2) for (B, H, W, C), (2, 3) for (B, C, H, W). ``x`` may have any
    strides (a transposed view is converted on the way). Returns ``x`` itself (or a cropped view)
    when nothing needs padding and its last axis is contiguous.
    """
    crop = [slice(None)] * 4
    for axis, (lo, hi) in zip(spatial, pads, strict=True):
        crop[axis] = slice(max(-lo, 0), x.shape[axis] - max(-hi, 0))
    x = x[tuple(crop)]
    widths = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    if not any(lo or hi for lo, hi in widths) and x.strides[3] == x.itemsize:
        return x
    shape = list(x.shape)
    for axis, (lo, hi) in zip(spatial, widths, strict=True):
        shape[axis] += lo + hi
    out = scratch(name, tuple(shape), x.dtype)
    inner = [slice(None)] * 4
    for axis, (lo, _) in zip(spatial, widths, strict=True):
        inner[axis] = slice(lo, lo + x.shape[axis])
        for edge in (slice(0, lo), slice(lo + x.shape[axis], shape[axis])):   # the borders
            index = [slice(None)] * 4
            index[axis] = edge
            out[tuple(index)] = 0
    out[tuple(inner)] = x
    return out


def _window_view(xp: np.ndarray, axes: tuple[WindowAxis, WindowAxis], h0: int, h1: int,
                 spatial: tuple[int, int]) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Start of output row ``h0``'s windows, and the (rows, W_out, kH, kW) shape and strides."""
    h, w = axes
    sH, sW = xp.strides[spatial[0]], xp.strides[spatial[1]]
    index = [slice(None)] * 4
    index[spatial[0]] = slice(h0 * h.stride, None)
    shape = (h1 - h0, w.out, h.kernel, w.kernel)
    strides = (sH * h.stride, sW * w.stride, sH * h.dilation, sW * w.dilation)
    return xp[tuple(index)], shape, strides


def im2col_nhwc(xp: np.ndarray, axes: tuple[WindowAxis, WindowAxis], h0: int, h1: int, groups: int,
                ones: bool = False, name: str = "cols") -> np.ndarray:
    """Columns of output rows [h0, h1) of padded (B, Hp, Wp, C) images: (G, B*rows*W_out, kH*kW*C/G).

    With ``ones`` each row gets a last column of ones (see ``im2col_cm``).
    """
    B, C = xp.shape[0], xp.shape[3]
    G, Cg = groups, C // groups
    h, w = axes
    rows = h1 - h0
    if h.kernel == w.kernel == h.stride == w.stride == 1 and G == 1 and not ones:
        # 1x1 kernel, stride 1: the input rows are the columns, no copy
        return xp[:, h0:h1, :w.out].reshape(1, B * rows * w.out, C)
    start, shape, strides = _window_view(xp, axes, h0, h1, (1, 2))
    sN, sC = xp.strides[0], xp.strides[3]
    length = h.kernel * w.kernel * Cg
    cols = scratch(name, (G, B * rows * w.out, length + ones), xp.dtype)
    if G == 1 and w.dilation == 1 and xp.strides[2] == C * sC:
        # a window row's kW taps are kW*C adjacent values: copy them as one run, not kW runs of C
        windows = as_strided(start, (B, *shape[:3], w.kernel * C), (sN, *strides[:3], sC), writeable=False)
        np.copyto(cols[0, :, :length].reshape(windows.shape), windows)
    else:
        # (B, rows, W_out, kH, kW, G, C/G) -> (G, B, rows, W_out, kH, kW, C/G)
        windows = as_strided(start, (B, *shape, G, Cg), (sN, *strides, sC * Cg, sC), writeable=False)
        np.copyto(cols[:, :, :length].reshape(G, B, *shape, Cg), windows.transpose(5, 0, 1, 2, 3, 4, 6))
    if ones:
        cols[:, :, length] = 1
    return cols


def im2col_cm(xp: np.ndarray, axes: tuple[WindowAxis, WindowAxis], h0: int, h1: int, ones: bool = False,
              name: str = "cols") -> np.ndarray:
    """Channel-major columns of output rows [h0, h1) of padded (B, C, Hp, Wp) images: (C*kH*kW, B*rows*W_out).

    With ``ones`` a last row of ones is appended, so that one product also adds the bias (forward)
    or sums the output gradient (backward).
    """
    B, C = xp.shape[:2]
    start, shape, strides = _window_view(xp, axes, h0, h1, (2, 3))
    sN, sC = xp.strides[:2]
    rows, W_out, kH, kW = shape
    # (C, kH, kW, B, rows, W_out)
    windows = as_strided(start, (C, kH, kW, B, rows, W_out), (sC, strides[2], strides[3], sN, *strides[:2]),
                         writeable=False)
    cols = scratch(name, (C * kH * kW + ones, B * rows * W_out), xp.dtype)
    np.copyto(cols[:C * kH * kW].reshape(windows.shape), windows)
    if ones:
        cols[-1] = 1
    return cols


def col2im_cm(dcols: np.ndarray, dxp: np.ndarray, axes: tuple[WindowAxis, WindowAxis], h0: int, h1: int) -> None:
    """Add channel-major column gradients (C*kH*kW, B*rows*W_out) onto padded (B, C, Hp, Wp) images."""
    B, C = dxp.shape[:2]
    h, w = axes
    # (C, kH, kW, B, rows, W_out) -> per tap (B, C, rows, W_out)
    taps = dcols.reshape(C, h.kernel, w.kernel, B, h1 - h0, w.out)
    for i in range(h.kernel):
        top = (h0 * h.stride) + i * h.dilation
        rows = slice(top, top + h.stride * (h1 - h0 - 1) + 1, h.stride)
        for j in range(w.kernel):
            left = j * w.dilation
            cols = slice(left, left + w.stride * (w.out - 1) + 1, w.stride)
            dxp[:, :, rows, cols] += taps[:, i, j].transpose(1, 0, 2, 3)
