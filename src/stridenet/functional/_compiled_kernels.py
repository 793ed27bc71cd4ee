"""numba kernels behind ``_compiled``: the shifted-product path's block work, compiled, without the GIL.

Imported only by ``_compiled`` (this module needs numba). Layouts follow ``_shifted._Layout``: a grid is
``(lead + images * rows_per_image) * width`` pixels; image ``b``'s row ``i`` starts at pixel
``(lead + b * rows_per_image + i) * width``; every pixel outside the images is zero.
"""

from __future__ import annotations

import numba
import numpy as np

from stridenet.functional._tiled_products import VECTOR_BYTES, tile_product

_ROW_MAJOR, _NO_TRANS, _TRANS = np.int32(101), np.int32(111), np.int32(112)

_jit = numba.njit(nogil=True, cache=True, boundscheck=False)

# Register tiles (``_tiled_products``): outputs of 12 pixels x 2 vectors (24 of the 32 vector registers)
# or 24 x 1 for the products, 8 channels x 2 or 1 vectors for the weight gradient.
_PIXELS_BY_2, _PIXELS_BY_1 = tile_product(2, 12), tile_product(1, 24)
_CHANNELS_BY_2, _CHANNELS_BY_1 = tile_product(2, 8), tile_product(1, 8)
PIXEL_ROWS, CHANNEL_ROWS = 24, 8   # the fewest pixels and input channels the tiles need


@_jit
def _address(a):
    """The address of ``a``'s first element as int64 (``ctypes.data`` is unsigned: mixed with signed
    offsets, numba would make it a float)."""
    return np.int64(a.ctypes.data)


@_jit
def lay_out(values, grid, lead, width, rows_per_image, positive, sums, zero):
    """Write ``values`` (B, h, w, C) on ``grid`` (pixels, C), zeros everywhere else. With a mask
    ``positive`` (non-empty), a value where it is False becomes zero (the ReLU's gradient); with a
    non-empty float64 ``sums`` (C,), the values written are added to it."""
    B, h, w, C = values.shape
    masked, summed = positive.size > 0, sums.size > 0
    for p in range(lead * width):
        for c in range(C):
            grid[p, c] = zero
    for b in range(B):
        for i in range(rows_per_image):
            row = (lead + b * rows_per_image + i) * width
            inside = w if i < h else 0
            for j in range(inside):
                for c in range(C):
                    v = values[b, i, j, c]
                    if masked and not positive[b, i, j, c]:
                        v = zero
                    grid[row + j, c] = v
                    if summed:
                        sums[c] += v
            for j in range(inside, width):
                for c in range(C):
                    grid[row + j, c] = zero


@_jit
def taps(gemm, trans_a, rows, cols, inner, a, lda, shifts, a_step, b, b_step, ldb, out, out_step, ldc,
         one, zero, accumulate):
    """For each tap t: ``out_t (+)= op(A_t) @ B_t``, A_t at ``a + shifts[t] * a_step``, B_t at
    ``b + t * b_step``, out_t at ``out + t * out_step`` (bytes). Taps that share one output (``out_step``
    0) add up in it, the first overwriting it unless ``accumulate``; taps with outputs of their own overwrite them."""
    for t in range(shifts.size):
        beta = one if accumulate or (t > 0 and out_step == 0) else zero
        gemm(_ROW_MAJOR, trans_a, _NO_TRANS, rows, cols, inner, one, a + shifts[t] * a_step, lda,
             b + t * b_step, ldb, beta, out + t * out_step, ldc)


@_jit
def tiles_apply(inputs, outputs, pixels, itemsize):
    """Whether ``tiled_products`` and ``tiled_weight_sums`` handle products with ``inputs`` channels in,
    ``outputs`` out, over ``pixels`` grid pixels: whole vectors of outputs, enough rows for a tile."""
    return outputs % (VECTOR_BYTES // itemsize) == 0 and inputs >= CHANNEL_ROWS and pixels >= PIXEL_ROWS


@_jit
def _span(left, width):
    """Output values in the next tile: two vectors, or one where only one is left."""
    return 2 * width if left >= 2 * width else width


@_jit
def pack_tiles(matrices):
    """``matrices`` (T, C, K) as ``tiled_products`` reads them: for each span of K its tiles cover
    (``_span``), the (T, C, span) values of that span, contiguous, one span after another. Empty where
    K is not a whole number of vectors (no tiles then)."""
    T, C, K = matrices.shape
    width = VECTOR_BYTES // matrices.itemsize
    if K % width != 0:
        return np.empty(0, matrices.dtype)
    packed = np.empty(T * C * K, matrices.dtype)
    k0 = 0
    while k0 < K:
        span = _span(K - k0, width)
        base = T * C * k0
        for t in range(T):
            for c in range(C):
                for e in range(span):
                    packed[base + (t * C + c) * span + e] = matrices[t, c, k0 + e]
        k0 += span
    return packed


@_jit
def tiled_products(grid, shifts, packed, C, K, bias, products, count, zero):
    """``products[p] = bias + sum_t grid[p + shifts[t]] @ matrices[t]`` for p < count (``bias`` may be
    empty), ``packed`` the (T, C, K) matrices as ``pack_tiles`` lays them out: what ``taps`` computes,
    with the output tile held in registers over all taps (see ``tiles_apply`` for the shapes). The
    last tile of pixels may overlap the one before (its rows are written twice, with the same values)."""
    T = shifts.size
    size = products.itemsize
    width = VECTOR_BYTES // size
    a, out, shift_address = _address(grid), _address(products), _address(shifts)
    k0 = 0
    while k0 < K:
        span = _span(K - k0, width)
        rows = 12 if span == 2 * width else 24
        matrices = _address(packed) + T * C * k0 * size
        init = _address(bias) + k0 * size if bias.size > 0 else np.int64(0)
        p0 = 0
        while p0 < count:
            p0 = min(p0, count - rows)
            if span == 2 * width:
                _PIXELS_BY_2(zero, a + p0 * C * size, C, 1, shift_address, C, T, matrices, span, C * span,
                             C, init, out + (p0 * K + k0) * size, K)
            else:
                _PIXELS_BY_1(zero, a + p0 * C * size, C, 1, shift_address, C, T, matrices, span, C * span,
                             C, init, out + (p0 * K + k0) * size, K)
            p0 += rows
        k0 += span


@_jit
def tiled_weight_sums(grid, shifts, gradient, count, sums, zero):
    """``sums[t] = grid[shifts[t] : shifts[t] + count].T @ gradient`` (C, K) for every tap t, ``gradient``
    the address of ``count`` rows of K values: what ``taps`` computes with ``_TRANS``, each tile of
    8 channels x 1 or 2 vectors held in registers over all ``count`` pixels."""
    T, C, K = sums.shape
    size = sums.itemsize
    width = VECTOR_BYTES // size
    a, out, shift_address = _address(grid), _address(sums), _address(shifts)
    for t in range(T):
        k0 = 0
        while k0 < K:
            span = _span(K - k0, width)
            c0 = 0
            while c0 < C:
                c0 = min(c0, C - CHANNEL_ROWS)
                target = out + ((t * C + c0) * K + k0) * size
                if span == 2 * width:
                    _CHANNELS_BY_2(zero, a + c0 * size, 1, C, shift_address + t * 8, C, 1, gradient + k0 * size, K,
                                   0, count, 0, target, K)
                else:
                    _CHANNELS_BY_1(zero, a + c0 * size, 1, C, shift_address + t * 8, C, 1, gradient + k0 * size, K,
                                   0, count, 0, target, K)
                c0 += CHANNEL_ROWS
            k0 += span


@_jit
def copy_out(products, width, rows_per_image, out, rectify, positive, zero):
    """out (B, H_out, W_out, K) from the products' grid rows (numbered from its start), rectified if
    ``rectify`` (NaN stays NaN, as ``np.maximum``), the mask of positive values into a non-empty ``positive``."""
    B, H, W, K = out.shape
    masked = positive.size > 0
    for b in range(B):
        for i in range(H):
            row = (b * rows_per_image + i) * width
            for j in range(W):
                for k in range(K):
                    v = products[row + j, k]
                    if rectify and v < zero:
                        v = zero
                    out[b, i, j, k] = v
                    if masked:
                        positive[b, i, j, k] = v > zero


@_jit
def forward_block(gemm, x, grid, lead, width, rows_per_image, shifts, matrices, packed, bias, products, count,
                  out, rectify, positive, pool_h, pool_w, one, zero):
    """See ``_compiled.forward_block``."""
    C, K = matrices.shape[1], matrices.shape[2]
    size = grid.itemsize
    lay_out(x, grid, lead, width, rows_per_image, np.empty((0, 0, 0, 0), np.bool_), np.empty(0), zero)
    if packed.size > 0 and tiles_apply(C, K, count, size):
        tiled_products(grid, shifts, packed, C, K, bias, products, count, zero)
    else:
        if bias.size > 0:
            for p in range(count):
                for k in range(K):
                    products[p, k] = bias[k]
        taps(gemm, _NO_TRANS, count, K, C, _address(grid), C, shifts, C * size, _address(matrices), C * K * size,
             K, _address(products), 0, K, one, zero, bias.size > 0)
    if pool_h * pool_w > 1:   # the products' rows as (B, rows_per_image, width, K) images, pooled
        images = products[:out.shape[0] * rows_per_image * width].reshape((out.shape[0], rows_per_image, width, K))
        max_pool_tiled_forward(images, pool_h, pool_w, out)
        if rectify:   # the ReLU commutes with the max
            flat = out.reshape(-1)
            for e in range(flat.size):
                if flat[e] < zero:
                    flat[e] = zero
    else:
        copy_out(products, width, rows_per_image, out, rectify, positive, zero)


@_jit
def backward_block(gemm, x, dout, positive, dx, grid_x, grid_dout, grid_on_x, x_lead, x_width, x_rows,
                   d_lead, d_width, d_rows, same, shifts, dx_shifts, dx_matrices, dx_packed, products, tap_sums, count,
                   dx_count, grads, first, db, one, zero):
    """See ``_compiled.backward_block``."""
    C, K = x.shape[3], dout.shape[3]
    size = x.itemsize
    no_mask = np.empty((0, 0, 0, 0), np.bool_)
    if dx.size > 0:
        lay_out(dout, grid_dout, d_lead, d_width, d_rows, positive, db, zero)
        if dx_packed.size > 0 and tiles_apply(K, C, dx_count, size):
            tiled_products(grid_dout, dx_shifts, dx_packed, K, C, np.empty(0, dx.dtype), products, dx_count, zero)
        else:
            taps(gemm, _NO_TRANS, dx_count, C, K, _address(grid_dout), K, dx_shifts, K * size,
                 _address(dx_matrices), K * C * size, C, _address(products), 0, C, one, zero, False)
        copy_out(products, d_width, d_rows, dx, False, no_mask, zero)
        if same:   # the padded gradient is on the input's grid, ``d_lead`` rows on
            on_grid = _address(grid_dout) + d_lead * d_width * K * size
        else:
            lay_out(dout, grid_on_x, 0, x_width, x_rows, positive, np.empty(0), zero)
            on_grid = _address(grid_on_x)
    else:
        lay_out(dout, grid_on_x, 0, x_width, x_rows, positive, db, zero)
        on_grid = _address(grid_on_x)
    lay_out(x, grid_x, x_lead, x_width, x_rows, no_mask, np.empty(0), zero)
    if tiles_apply(C, K, count, size) and count > 0:
        tiled_weight_sums(grid_x, shifts, on_grid, count, tap_sums, zero)
    else:
        taps(gemm, _TRANS, C, K, count, _address(grid_x), C, shifts, C * size, on_grid, 0, K,
             _address(tap_sums), C * K * size, K, one, zero, False)
    flat_grads, flat_sums = grads.reshape(-1), tap_sums.reshape(-1)
    for e in range(flat_sums.size):
        flat_grads[e] = flat_sums[e] if first else flat_grads[e] + flat_sums[e]


@_jit
def max_pool_tiled_forward(x, kh, kw, out):
    """out (N, H_out, W_out, C) = the max of each kh x kw tile of x (N, H, W, C), channels-last; NaN wins,
    as with ``np.maximum`` over the taps in row-major order (of a -0.0 and a 0.0, the first is kept)."""
    N, H_out, W_out, C = out.shape
    for n in range(N):
        for oy in range(H_out):
            for ox in range(W_out):
                y0, x0 = oy * kh, ox * kw
                m = out[n, oy, ox]
                first = x[n, y0, x0]
                for c in range(C):
                    m[c] = first[c]
                for t in range(1, kh * kw):
                    tap = x[n, y0 + t // kw, x0 + t % kw]
                    for c in range(C):
                        v = tap[c]
                        if v > m[c] or v != v:
                            m[c] = v


@_jit
def max_pool_tiled_backward(dout, x, out, kh, kw, dx):
    """dx (N, H, W, C) of tiled max pooling, channels-last: each tile's gradient goes to its first tap equal
    to the max or, where the tile holds NaN, to its last NaN (PyTorch's rule); zeros elsewhere, also in the
    rows and columns no tile covers."""
    N, H_out, W_out, C = out.shape
    H, W = x.shape[1], x.shape[2]
    zero = dx.dtype.type(0)
    chosen = np.empty(C, np.int64)
    for n in range(N):
        for y in range(H_out * kh, H):
            for xx in range(W):
                for c in range(C):
                    dx[n, y, xx, c] = zero
        for oy in range(H_out):
            y0 = oy * kh
            for i in range(kh):
                for xx in range(W_out * kw, W):
                    for c in range(C):
                        dx[n, y0 + i, xx, c] = zero
            for ox in range(W_out):
                x0 = ox * kw
                m, g = out[n, oy, ox], dout[n, oy, ox]
                for c in range(C):
                    chosen[c] = -1
                for t in range(kh * kw):
                    tap = x[n, y0 + t // kw, x0 + t % kw]
                    for c in range(C):
                        v = tap[c]
                        if v != v or (chosen[c] < 0 and v == m[c]):   # the last NaN, else the first max
                            chosen[c] = t
                for t in range(kh * kw):
                    target = dx[n, y0 + t // kw, x0 + t % kw]
                    for c in range(C):
                        target[c] = g[c] if chosen[c] == t else zero
