"""numba kernels behind ``_compiled``: the shifted-product path's block work, compiled, without the GIL,
its products by the register tiles of ``_tiled_products`` (``tiled_products``, ``tiled_weight_sums``)
where the shapes allow and by the BLAS per tap (``taps``) elsewhere; and tiled max pooling.

Imported only by ``_compiled`` (this module needs numba). Layouts follow ``_shifted.Layout``: a grid is
``(lead + images * rows_per_image) * width`` pixels; image ``b``'s row ``i`` starts at pixel
``(lead + b * rows_per_image + i) * width``; every pixel outside the images is zero.
"""

from __future__ import annotations

import numba
import numpy as np

from stridenet.functional._tiled_products import VECTOR_BYTES, fetch_add, tile_product

_ROW_MAJOR, _NO_TRANS, _TRANS = np.int32(101), np.int32(111), np.int32(112)

_jit = numba.njit(nogil=True, cache=True, boundscheck=False)
_jit_threads = numba.njit(nogil=True, cache=True, boundscheck=False, parallel=True)

# Register tiles (``_tiled_products``) for the products: 8 pixels x 3 vectors, 8, 12 or 14 pixels x 2
# vectors (28 of the 32 vector registers at most) or x 1 vector, and 24 x 1 for a sweep over all pixels;
# for the weight gradient, 8 channels, 3 taps x 4 channels or 3 x 3 taps, x 2 or 1 vectors, and 8
# channels or 3 taps x 3 channels x 3 vectors (27 of the registers: 117 GFLOP/s per core on 192-channel
# rows here, against 83 for 3 taps x 4 channels x 2 vectors).
# With AVX2's 16 registers of 32 bytes instead (12 of them for a tile at most): 4 pixels x 3, 2 or 1 vectors;
# for the weight gradient 4 channels, or any 4 or 3 (tap, channel) rows, x 3, 2 or 1 vectors. (AVX-512's
# shapes split into 32-byte halves spill; 8-14 pixels x 1 vector kept 14 row addresses in 16 general registers
# and ran at half the 4 x 3 tiles' speed.) Only the CPU's own tiles are compiled (``_WIDE`` below).
_P3_8 = tile_product(3, 8)
_P2_8, _P2_12, _P2_14 = tile_product(2, 8), tile_product(2, 12), tile_product(2, 14)
_P1_8, _P1_12, _P1_14, _P1_24 = tile_product(1, 8), tile_product(1, 12), tile_product(1, 14), tile_product(1, 24)
_P3_4, _P2_4, _P1_4 = tile_product(3, 4), tile_product(2, 4), tile_product(1, 4)
_TAPS_BY_CHANNELS_3 = tile_product(3, 3, 3)
_TAPS_BY_CHANNELS_2, _TAPS_BY_CHANNELS_1 = tile_product(2, 4, 3), tile_product(1, 4, 3)
_WIDE = VECTOR_BYTES == 64           # AVX-512's registers (else AVX2's)
PIXEL_ROWS = 24                      # the fewest pixels the products' tiles need
CHANNEL_ROWS = 8 if _WIDE else 4     # channels in a weight tile of one tap
POINTWISE_ROWS = 8 if _WIDE else 4   # pixels a tile of ``pointwise_products`` (the fewest an image needs)
COLUMN_CHUNK = 2048                  # pixels a chunk of ``few_output_products``' columns
_ROW_TILES = (8, 12, 14) if _WIDE else (4,)   # pixels per tile when tiles follow the output's rows
_SWEEP_ROWS = (24, 12) if _WIDE else (4, 4)   # pixels per tile of 1 and of more vectors in a sweep
# A weight tile of few channels: 3 taps of 3 kernel rows x 2 vectors at most (AVX-512); with AVX2, any 4 (or 3)
# of the (tap, channel) rows x 3 vectors at most, their offsets from tables: a 7x7 kernel's 147 rows of 3
# channels in 36 tiles of 4 and one of 3, where 3 taps of a kernel row a tile computed 63 rows for 49 (the
# last tap twice) in tiles of 9 sums, which LLVM cannot keep 2 FMAs a cycle busy (FMA's latency).
_TAP_GRID_2, _TAP_GRID_1 = tile_product(2, 3, 3), tile_product(1, 3, 3)
_TABLE_4_3, _TABLE_4_2, _TABLE_4_1 = (tile_product(vectors, 4, table=True) for vectors in (3, 2, 1))
_TABLE_3_3, _TABLE_3_2, _TABLE_3_1 = (tile_product(vectors, 3, table=True) for vectors in (3, 2, 1))
_CHANNELS_BY_3, _CHANNELS_BY_2 = tile_product(3, CHANNEL_ROWS), tile_product(2, CHANNEL_ROWS)
_CHANNELS_BY_1 = tile_product(1, CHANNEL_ROWS)
# Outputs a chunk of the weight-gradient tiles (0: all at once): a span's gradient rows then stay in the
# level-1 cache. With AVX2, one tile over the 1024 outputs of 16 8x8 images ran at 46 GFLOP/s, over 2
# images' 128 at 69, and in chunks of 64 outputs at 57-61 (192 -> 192 3x3); AVX-512's tiles are not chunked
# (not measured on such a CPU since).
WEIGHT_CHUNK_PIXELS = 0 if _WIDE else 64
_SUM_CHANNELS = 8                  # channels ``weight_gradient`` adds up at a time
# Bytes of the matrices one pass of tiles reads for every tile: more input channels take more passes,
# so that the weights a tile streams stay in the level-2 cache beside its panel (``PANEL_BYTES``). (A
# budget that kept them in the level-1 cache, 40 KiB, was 8-15% slower on 96- and 192-channel blocks:
# the tile's reloads between passes cost more than the level-2 reads they saved.)
MATRIX_BYTES_PER_PASS = 256 * 1024
# Bytes of input rows and products a panel of tiles works on (``tiled_products``).
PANEL_BYTES = 512 * 1024


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
def lay_out_phases(values, grid, stride_h, stride_w, pad_top, pad_left, width, rows_per_image, phase_pixels, zero):
    """Write ``values`` (B, H, W, C) on ``grid`` (pixels, C) as its stride phases, for a convolution of that
    stride: phase (a, c) (a < stride_h, c < stride_w) holds every stride_h-th row from row a and every
    stride_w-th column from column c of the values zero-padded by ``pad_top`` above and ``pad_left`` on
    the left, ``width`` pixels a row and ``rows_per_image`` rows an image, zeros where that falls outside
    the values; the phases row-major, each starting ``phase_pixels`` (at least ``B * rows_per_image *
    width``) after the one before (the pixels between are left as they are)."""
    B, H, W, C = values.shape
    for a in range(stride_h):
        for c0 in range(stride_w):
            base = (a * stride_w + c0) * phase_pixels
            for b in range(B):
                for r in range(rows_per_image):
                    y = stride_h * r + a - pad_top
                    row = base + (b * rows_per_image + r) * width
                    for q in range(width):
                        x = stride_w * q + c0 - pad_left
                        if 0 <= y < H and 0 <= x < W:
                            for c in range(C):
                                grid[row + q, c] = values[b, y, x, c]
                        else:
                            for c in range(C):
                                grid[row + q, c] = zero


@_jit
def _lay_out_input(x, grid, lead, width, rows_per_image, stride_h, stride_w, pad_top, pad_left, phase_pixels, zero):
    """A convolution's input on its grid: padded images one after another (stride 1, ``lay_out``) or their
    stride phases, ``phase_pixels`` apart (``lay_out_phases``; ``lead`` is then 0)."""
    if stride_h * stride_w > 1:
        lay_out_phases(x, grid, stride_h, stride_w, pad_top, pad_left, width, rows_per_image, phase_pixels, zero)
    else:
        lay_out(x, grid, lead, width, rows_per_image, np.empty((0, 0, 0, 0), np.bool_), np.empty(0), zero)


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
def few_output_products(gemm, grid, shifts, matrices, columns, count, products, one, zero):
    """``products[p] = sum_t grid[p + shifts[t]] @ matrices[t]`` for the first ``count`` pixels, as ``taps``
    computes it, for outputs fewer than a vector (a first layer's input gradient): a product per tap
    would read the whole grid once per tap for a few columns of output each time. Instead one product
    of the grid with every tap's matrix side by side gives each pixel's (taps x outputs) ``columns`` (a
    chunk of pixels at a time, into scratch of ``COLUMN_CHUNK + max(shifts)`` rows), and each output
    adds its taps' values up. ``matrices`` (T, K, C), ``columns`` (rows, at least T * C) scratch."""
    T, K, C = matrices.shape
    size = grid.itemsize
    wide = np.empty((K, T * C), matrices.dtype)   # the taps' matrices side by side
    for t in range(T):
        for k in range(K):
            for c in range(C):
                wide[k, t * C + c] = matrices[t, k, c]
    reach = 0
    for t in range(T):
        reach = max(reach, shifts[t])
    chunk = columns.shape[0] - reach
    for p0 in range(0, count, chunk):
        n = min(chunk, count - p0)
        gemm(_ROW_MAJOR, _NO_TRANS, _NO_TRANS, n + reach, T * C, K, one, _address(grid) + p0 * K * size, K,
             _address(wide), T * C, zero, _address(columns), columns.shape[1])
        for p in range(n):
            for c in range(C):
                total = zero
                for t in range(T):
                    total += columns[p + shifts[t], t * C + c]
                products[p0 + p, c] = total


@_jit
def tiles_apply(outputs, pixels, itemsize):
    """Whether ``tiled_products`` handles products with ``outputs`` channels out over ``pixels`` grid
    pixels: whole vectors of outputs, enough pixels for a tile."""
    return outputs % (VECTOR_BYTES // itemsize) == 0 and pixels >= PIXEL_ROWS


@_jit
def _span(left, width, widest):
    """Output values in the next tile, ``left`` to cover in vectors of ``width``: ``widest`` vectors (2,
    or 3 for 8- or 4-pixel tiles: ``widest_span``) where at least that many are left, except that four
    left go as two and two; else two, or one where only one is left."""
    vectors = left // width
    if widest == 3 and vectors >= 3 and vectors != 4:
        return 3 * width
    return 2 * width if vectors >= 2 else width


@_jit
def widest_span(out_h, out_w, width, rows_per_image):
    """Vectors of outputs the widest tile of ``tiled_products`` spans on this layout: 3 where its tiles
    are 8 pixels along the output's rows (24 of AVX-512's 32 vector registers) and always with AVX2's
    4-pixel tiles (12 of its 16), else 2. ``pack_filters`` must pack the filters for the same."""
    if not _WIDE:
        return 3
    return 3 if row_tile(out_h, out_w, width, rows_per_image) == 8 else 2


@_jit
def pack_filters(w, flip, widest):
    """Filters ``w`` (K, C, kH, kW) as ``tiled_products`` reads them, straight from ``w``: for each span of
    outputs its tiles cover (``_span``), the (T, C, span) values of that span, contiguous, one span after
    another, where matrix ``t`` is ``w[:, :, i, j].T`` (C, K) for tap t = (i, j) row-major; with ``flip``
    (the input gradient's) it is ``w[:, :, kH-1-i, kW-1-j]`` (K, C), outputs the C input channels; spans
    of up to ``widest`` vectors (``widest_span`` of the products' layout). Empty where the outputs are
    not a whole number of vectors (no tiles then)."""
    K, C, kh, kw = w.shape
    T = kh * kw
    inputs, outputs = (K, C) if flip else (C, K)
    width = VECTOR_BYTES // w.itemsize
    if outputs % width != 0:
        return np.empty(0, w.dtype)
    packed = np.empty(T * C * K, w.dtype)
    o0 = 0
    while o0 < outputs:
        span = _span(outputs - o0, width, widest)
        base = T * inputs * o0
        for t in range(T):   # written in order; the span's filters (rows of w) stay in cache meanwhile
            i, j = t // kw, t % kw
            for c in range(inputs):
                row = base + (t * inputs + c) * span
                if flip:
                    for e in range(span):
                        packed[row + e] = w[c, o0 + e, kh - 1 - i, kw - 1 - j]
                else:
                    for e in range(span):
                        packed[row + e] = w[o0 + e, c, i, j]
        o0 += span
    return packed


@_jit
def _pixel_tile(vectors, rows, zero, a, a_row, a_step, shifts, taps, b, span, b_tap, steps, init, out, out_row):
    """One tile of ``rows`` pixels (``a_row`` apart) x ``span`` outputs (``vectors`` vectors) for
    ``tiled_products`` and ``pointwise_products``: ``steps`` input channels (``a_step`` apart) of each of
    the ``taps`` taps (their ``shifts`` in pixels). Only this CPU's tiles are compiled (``_WIDE``, a constant
    to numba: the other branch is pruned before LLVM sees it)."""
    if _WIDE:
        _wide_pixel_tile(vectors, rows, zero, a, a_row, a_step, shifts, taps, b, span, b_tap, steps, init, out, out_row)
    elif vectors == 3:   # AVX2: 4 pixels
        _P3_4(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    elif vectors == 2:
        _P2_4(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    else:
        _P1_4(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)


@_jit
def _wide_pixel_tile(vectors, rows, zero, a, a_row, a_step, shifts, taps, b, span, b_tap, steps, init, out, out_row):
    """``_pixel_tile`` with AVX-512's tiles: 8 pixels x 3 vectors; 8, 12 or 14 x 2; 8, 12, 14 or 24 x 1."""
    if vectors == 3:
        _P3_8(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    elif vectors == 2:
        if rows == 14:
            _P2_14(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
        elif rows == 12:
            _P2_12(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
        else:
            _P2_8(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    elif rows == 24:
        _P1_24(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    elif rows == 14:
        _P1_14(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    elif rows == 12:
        _P1_12(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)
    else:
        _P1_8(zero, a, a_row, a_step, shifts, a_row, taps, b, span, b_tap, steps, init, out, out_row, 0, 0)


@_jit
def _tile_starts(images, out_h, out_w, width, rows_per_image, rows, along_rows):
    """The first grid pixel of every tile of ``rows`` pixels, along each output row (``along_rows``) or in
    one sweep up to the last output, and how many of them come first: tiles that overlap no other. The
    rest, each row's (or the sweep's) last tile where it does not fit whole, are moved back to end where
    the outputs end, overlapping the tile before."""
    if along_rows:
        runs, length = images * out_h, out_w
    else:
        runs, length = 1, ((images - 1) * rows_per_image + out_h - 1) * width + out_w
    whole, partial = length // rows, length % rows > 0
    starts = np.empty(runs * (whole + partial), np.int64)
    n = 0
    for run in range(runs):
        first = (run // out_h * rows_per_image + run % out_h) * width if along_rows else 0
        for t in range(whole):
            starts[n] = first + t * rows
            n += 1
    if partial:
        for run in range(runs):
            first = (run // out_h * rows_per_image + run % out_h) * width if along_rows else 0
            starts[n] = first + length - rows
            n += 1
    return starts, runs * whole


@_jit
def row_tile(out_h, out_w, width, rows_per_image):
    """Pixels per tile when tiles follow the output's rows (each row's last tile overlapping the one
    before), or 0 where a sweep over every grid pixel, padding columns and rows included, computes less."""
    best, best_cost = 0, (rows_per_image * width) * 1.0 / 12   # per image, in 12-pixel tiles of the sweep
    for rows in _ROW_TILES:
        if rows <= out_w:
            tiles = (out_w + rows - 1) // rows
            cost = out_h * tiles * rows * 1.0 / 12 + out_h * tiles * 0.05   # and a little for each tile
            if cost < best_cost:
                best, best_cost = rows, cost
    return best


@_jit
def tiled_products(grid, shifts, packed, C, K, bias, products, images, out_h, out_w, width, rows_per_image, zero):
    """``products[o] = bias + sum_t grid[o + shifts[t]] @ matrices[t]`` for the grid pixels ``o`` of the
    ``images`` outputs (out_h, out_w) laid out ``width`` pixels a row, ``rows_per_image`` rows an image
    (``bias`` may be empty); ``packed`` the (T, C, K) matrices as ``pack_filters`` lays them out. What
    ``taps`` computes, with the output tile held in registers over all taps (see ``tiles_apply`` for
    the shapes). Tiles follow the output's rows where that computes less than sweeping over all grid
    pixels up to the last output (``row_tile``); the padding pixels between are then left unwritten.
    A row's (or the sweep's) last tile may overlap the one before: its rows are written twice, with the
    same values."""
    T = shifts.size
    size = products.itemsize
    width_vectors = VECTOR_BYTES // size
    run = _adjacent_taps(shifts)
    run_shifts = shifts[::run].copy()   # each run's first tap (its address taken where used: alive there)
    a, out, shift_address = _address(grid), _address(products), _address(shifts)
    along_rows = row_tile(out_h, out_w, width, rows_per_image)
    widest = widest_span(out_h, out_w, width, rows_per_image)   # as ``packed`` was packed for
    starts_wide, whole_wide = _tile_starts(images, out_h, out_w, width, rows_per_image, along_rows or _SWEEP_ROWS[1],
                                           along_rows > 0)
    starts_one, whole_one = starts_wide, whole_wide
    if not along_rows and _SWEEP_ROWS[0] != _SWEEP_ROWS[1]:
        starts_one, whole_one = _tile_starts(images, out_h, out_w, width, rows_per_image, _SWEEP_ROWS[0], False)
    # Tiles go in panels: every span of outputs and every pass over the input channels for one panel of
    # pixels, then the next, so the panel's input rows and products stay in the level-2 cache through
    # all of them. A tile overlapping the one before comes last, with all its passes at once (a pass
    # added twice to the rows they share would count twice; the tile before is complete by then).
    panel_pixels = max(24, PANEL_BYTES // ((C + K) * size))
    count = ((images - 1) * rows_per_image + out_h - 1) * width + out_w   # every tile starts before it
    for panel_start in range(0, count, panel_pixels):
        for k0 in _span_starts(K, width_vectors, widest):
            vectors, rows, matrices, start, chunk = _span_plan(k0, K, C, T, size, along_rows, widest, packed, bias)
            starts, whole = (starts_wide, whole_wide) if vectors > 1 else (starts_one, whole_one)
            first = np.searchsorted(starts[:whole], panel_start)
            end = np.searchsorted(starts[:whole], panel_start + panel_pixels)
            for c0 in range(0, C, chunk):
                for n in range(first, end):
                    _span_tile(vectors, rows, zero, a, shift_address, _address(run_shifts), T, run, matrices, start,
                               chunk, C, K, k0, c0, starts[n], out, size)
    for k0 in _span_starts(K, width_vectors, widest):
        vectors, rows, matrices, start, chunk = _span_plan(k0, K, C, T, size, along_rows, widest, packed, bias)
        starts, whole = (starts_wide, whole_wide) if vectors > 1 else (starts_one, whole_one)
        for n in range(whole, starts.size):
            for c0 in range(0, C, chunk):
                _span_tile(vectors, rows, zero, a, shift_address, _address(run_shifts), T, run, matrices, start,
                           chunk, C, K, k0, c0, starts[n], out, size)


@_jit
def _span_starts(K, width_vectors, widest):
    """The first output of each span of outputs the tiles cover (``_span``)."""
    firsts = []
    k0 = 0
    while k0 < K:
        firsts.append(k0)
        k0 += _span(K - k0, width_vectors, widest)
    return firsts


@_jit
def _span_plan(k0, K, C, T, size, along_rows, widest, packed, bias):
    """For the span of outputs from ``k0`` in ``tiled_products``: its vectors (1-3), pixels a tile, the
    address of its packed matrices, the tiles' start (the bias' address, or 0), input channels a pass."""
    width = VECTOR_BYTES // size
    span = _span(K - k0, width, widest)
    vectors = span // width
    rows = along_rows if along_rows else _SWEEP_ROWS[min(vectors, 2) - 1]
    start = _address(bias) + k0 * size if bias.size > 0 else np.int64(0)
    # input channels per pass: this span's matrices for them stay in the level-2 cache
    chunk = max(CHANNEL_ROWS, MATRIX_BYTES_PER_PASS // (T * span * size))
    return vectors, rows, _address(packed) + T * C * k0 * size, start, chunk


@_jit
def _adjacent_taps(shifts):
    """The longest run length that divides the number of taps and puts every run of that many consecutive
    taps on adjacent grid pixels (``shifts`` one apart: a kernel row of a stride-1 convolution); 1 where no
    longer run does."""
    T = shifts.size
    run = 1
    while run < T and shifts[run] == shifts[0] + run:
        run += 1
    while run > 1:
        adjacent = T % run == 0
        for t in range(T):
            if adjacent and shifts[t] != shifts[t - t % run] + t % run:
                adjacent = False
        if adjacent:
            return run
        run -= 1
    return 1


@_jit
def _span_tile(vectors, rows, zero, a, shift_address, run_address, T, run, matrices, start, chunk, C, K, k0, c0, p0,
               out, size):
    """The tile at grid pixel ``p0`` of the span from ``k0``, over the pass of input channels from ``c0``: the
    ``T`` taps' shifts at ``shift_address``, in runs of ``run`` on adjacent pixels (each run's first shift at
    ``run_address``). Where one pass takes every input channel, a run's taps are one stretch of ``run * C``
    values of the grid (and of the packed matrices' rows): the tile's inner loop steps through all of them,
    where it would step through the ``C`` channels of each tap (3 for an RGB image's first layer) between the
    taps' loop overheads. The same products in the same order: the same bits."""
    span = vectors * (VECTOR_BYTES // size)
    if chunk >= C:
        _pixel_tile(vectors, rows, zero, a + p0 * C * size, C, 1, run_address, T // run, matrices, span,
                    run * C * span, run * C, start, out + (p0 * K + k0) * size, K)
    else:
        _pixel_tile(vectors, rows, zero, a + (p0 * C + c0) * size, C, 1, shift_address, T,
                    matrices + c0 * span * size, span, C * span, min(chunk, C - c0), start if c0 == 0 else np.int64(-1),
                    out + (p0 * K + k0) * size, K)


@_jit
def pointwise(shifts, width, rows_per_image, out_h, out_w, stride_h, stride_w, pool_h, pool_w):
    """Whether the blocks' convolution is pointwise (``pointwise_products``): one tap, stride 1, no padding (each
    output pixel is its input pixel: the grid would be the input itself, the products the output), images of
    a tile's pixels or more, not pooled."""
    return shifts.size == 1 and stride_h * stride_w == 1 and pool_h * pool_w == 1 and width == out_w \
        and rows_per_image == out_h and out_h * out_w >= POINTWISE_ROWS


@_jit
def pixel_step(x):
    """Elements from each pixel of x (B, H, W, C) to the next, row after row through an image, where that is one
    positive step (1 for a view of an NCHW array, C for a channels-last one) and the channels and images are
    positive steps apart too; else 0 (the pointwise kernels then read a copy)."""
    B, H, W = x.shape[:3]
    size = x.itemsize
    step = x.strides[2] if W > 1 else x.strides[1]
    if H > 1 and W > 1 and x.strides[1] != W * x.strides[2]:
        return 0
    if step <= 0 or x.strides[3] <= 0 or (B > 1 and x.strides[0] <= 0):
        return 0
    if step % size or x.strides[3] % size or x.strides[0] % size:
        return 0
    return step // size


@_jit
def _pixel_runs(x):
    """x's pixels (``pixel_step``) as runs at one step: (runs, pixels a run, pixel step, channel step, run step),
    in elements: one run where the images follow one another at that step (channels-last), else one per image."""
    B, H, W = x.shape[:3]
    size = x.itemsize
    pixel, channel = pixel_step(x), x.strides[3] // size
    if B == 1 or x.strides[0] == H * W * pixel * size:
        return 1, B * H * W, pixel, channel, 0
    return B, H * W, pixel, channel, x.strides[0] // size


@_jit
def pointwise_products(x, packed, widest, bias, out, rectify, positive, zero):
    """out (B * H * W, K) rows = bias + each pixel of x (B, H, W, C) @ the (C, K) matrix ``packed`` holds
    (``pack_filters`` for spans of up to ``widest`` vectors; ``bias`` may be empty): a 1x1 convolution with
    stride 1 and no padding (``pointwise``), x read in place in any ``pixel_step`` layout (NCHW's as well as
    channels-last) and the products written straight into ``out``; rectified if ``rectify`` (NaN stays NaN),
    the mask of positive values into a non-empty ``positive`` (as ``out``). Each output the same sum, in the
    same order, as ``tiled_products`` makes on the input's grid: the same bits. Tiles of 8 pixels along each
    run (``_pixel_runs``), a run's last tile moved back to end with it; in panels, as ``tiled_products``'."""
    C = x.shape[3]
    K = out.shape[1]
    size = out.itemsize
    runs, length, pixel, channel, run_step = _pixel_runs(x)
    no_shift = np.zeros(1, np.int64)
    panel_pixels = max(POINTWISE_ROWS, PANEL_BYTES // ((C + K) * size) // POINTWISE_ROWS * POINTWISE_ROWS)
    masked = positive.size > 0
    for run in range(runs):
        a = _address(x) + run * run_step * size
        first = run * length   # the output row of the run's first pixel
        for panel in range(0, length, panel_pixels):
            end = min(panel + panel_pixels, length)
            for k0 in _span_starts(K, VECTOR_BYTES // size, widest):
                vectors, rows, matrices, start, chunk = _span_plan(k0, K, C, 1, size, POINTWISE_ROWS, widest, packed,
                                                                   bias)
                span = vectors * (VECTOR_BYTES // size)
                for p in range(panel, end, rows):
                    p0 = min(p, length - rows)
                    for c0 in range(0, C, chunk):   # a tile's passes one after another: overlaps stay exact
                        _pixel_tile(vectors, rows, zero, a + (p0 * pixel + c0 * channel) * size, pixel, channel,
                                    _address(no_shift), 1, matrices + c0 * span * size, span, C * span,
                                    min(chunk, C - c0), start if c0 == 0 else np.int64(-1),
                                    _address(out) + ((first + p0) * K + k0) * size, K)
            if rectify:   # the panel's outputs, still in cache (and those its last tile wrote again before it)
                for q in range(first + min(panel, length - POINTWISE_ROWS), first + end):
                    for k in range(K):
                        v = out[q, k]
                        if v < zero:
                            v = zero
                        out[q, k] = v
                        if masked:
                            positive[q, k] = v > zero


@_jit
def weight_tiles_apply(channels, filters, count, itemsize, kernel_h, kernel_w):
    """Whether ``tiled_weight_sums`` handles a weight gradient: whole vectors of filters, outputs to sum
    over, and 8 input channels or more, or 4 or more with 3 taps a kernel row, or a kernel of at least
    3 x 3."""
    if filters % (VECTOR_BYTES // itemsize) != 0 or count <= 0:
        return False
    return channels >= CHANNEL_ROWS or (kernel_w == 3 and channels >= 4) or (kernel_h >= 3 and kernel_w >= 3)


@_jit
def _grid_origins(taps):
    """The first tap of each run of 3 that covers ``taps`` (at least 3) taps along a kernel axis: 0, 3, 6, ...,
    the last run ending at the last tap (overlapping the one before where 3 does not divide ``taps``)."""
    origins = list(range(0, taps - 2, 3))
    if origins[-1] != taps - 3:
        origins.append(taps - 3)
    return origins


@_jit
def tiled_weight_sums(grid, shifts, kernel_w, gradient, images, out_h, out_w, width, rows_per_image, sums, zero):
    """``sums[t] = sum over outputs o of outer(grid[o + shifts[t]], gradient at o)`` (C, K) for every tap t,
    ``gradient`` (images * out_h * out_w, K) the outputs' gradient rows, in order, the outputs' grid
    pixels ``o`` laid out ``width`` pixels a row and ``rows_per_image`` rows an image: what ``taps``
    computes with ``_TRANS`` over the gradient on the grid, but only over the outputs (not the
    padding between them, where that gradient is zero). ``shifts`` are the taps' in row-major order,
    ``kernel_w`` a row. Each tile is held in registers over all outputs (with AVX2, over chunks of them:
    ``WEIGHT_CHUNK_PIXELS``), one output row after another: with AVX-512, 3 taps of a kernel row x 4
    channels where kernel rows have 3 taps (3 channels for spans of 3 vectors of filters); for fewer
    channels than a one-tap tile holds, 3 x 3 taps of one channel, as many such grids as cover the kernel
    (where they overlap, a tap's sums are written twice, the same values), and with AVX2 any 4 or 3 of the
    (tap, channel) rows instead (``_table_weight_sums``); else 8 (AVX2: 4) channels of one tap; each x 1, 2
    or 3 vectors of filters (``weight_tiles_apply`` says which shapes)."""
    T, C, K = sums.shape
    size = sums.itemsize
    width_vectors = VECTOR_BYTES // size
    a, out, b = _address(grid), _address(sums), _address(gradient)
    runs = images * out_h
    tap_step = shifts[1] - shifts[0] if kernel_w > 1 else 0          # pixels from one tap to the next in a row
    row_step = shifts[kernel_w] - shifts[0] if T > kernel_w else 0   # ... and to the next kernel row
    offsets = np.empty(runs, np.int64)   # for each output row: its first pixel (under the tap of shift 0)
    for run in range(runs):
        offsets[run] = (run // out_h * rows_per_image + run % out_h) * width
    if not _WIDE and C < CHANNEL_ROWS:   # (AVX2) a tile's rows from tables, none computed twice
        _table_weight_sums(grid, shifts, gradient, runs, out_w, offsets, sums, zero)
        return
    if _WIDE and kernel_w == 3 and C >= 4:
        form, tile_channels = 1, 4   # 3 taps x 4 channels from each kernel row's first tap
        firsts = [3 * row for row in range(T // 3)]
    elif kernel_w >= 3 and T // kernel_w >= 3 and C < CHANNEL_ROWS:
        form, tile_channels = 2, 1   # 3 x 3 taps of each channel, from each grid's first tap
        firsts = [i * kernel_w + j for i in _grid_origins(T // kernel_w) for j in _grid_origins(kernel_w)]
    else:
        form, tile_channels = 0, CHANNEL_ROWS
        firsts = list(range(T))
    # Runs of outputs a chunk, so that a span's gradient rows stay in the level-1 cache through every tile
    # of the chunk; each tile adds the chunk into what the chunks before left in ``sums``: the same
    # steps in the same order as one pass over all runs, the same bits. Tiles that overlap others (the
    # last channels, a kernel's last 3 x 3 grid) would add twice: they come last, over all runs at once.
    chunk = runs if WEIGHT_CHUNK_PIXELS == 0 else max(1, WEIGHT_CHUNK_PIXELS // out_w)
    chunked = chunk < runs
    for last in range(2 if chunked else 1):   # 1: the overlapping tiles' pass
        for r0 in range(0, 1 if last else runs, chunk):
            count = runs if last else min(chunk, runs - r0)
            init = np.int64(0) if r0 == 0 else np.int64(-1)
            k0 = 0
            while k0 < K:
                vectors = _span(K - k0, width_vectors, 2 if form == 2 else 3) // width_vectors
                channels = 3 if form == 1 and vectors == 3 else tile_channels
                for t in firsts:
                    grid_overlaps = form == 2 and (t % kernel_w % 3 != 0 or t // kernel_w % 3 != 0)
                    for c0 in range(0, C, channels):
                        if chunked and (grid_overlaps or c0 + channels > C) != last:
                            continue
                        c = min(c0, C - channels)
                        _weight_tile(form, vectors, zero, a + (shifts[t] * C + c) * size, C, K, tap_step, row_step,
                                     kernel_w, _address(offsets) + r0 * 8, count,
                                     b + (r0 * out_w * K + k0) * size, out_w, init, out + ((t * C + c) * K + k0) * size)
                k0 += vectors * width_vectors


@_jit
def _table_weight_sums(grid, shifts, gradient, runs, out_w, offsets, sums, zero):
    """``tiled_weight_sums`` for fewer channels than a one-tap tile holds (AVX2): the T * C (tap, channel) rows
    of ``sums`` in row order, 4 or 3 a tile (as even as they divide), each row's offset on the grid and in
    ``sums`` from a table; the outputs in chunks of ``WEIGHT_CHUNK_PIXELS``, as there."""
    T, C, K = sums.shape
    size = sums.itemsize
    width_vectors = VECTOR_BYTES // size
    rows = T * C
    sources, targets = np.empty(rows, np.int64), np.empty(rows, np.int64)
    for q in range(rows):
        sources[q] = shifts[q // C] * C + q % C
        targets[q] = q * K
    tiles = (rows + 3) // 4
    a, b, out = _address(grid), _address(gradient), _address(sums)
    chunk = max(1, WEIGHT_CHUNK_PIXELS // out_w)
    for r0 in range(0, runs, chunk):
        count = min(chunk, runs - r0)
        init = np.int64(0) if r0 == 0 else np.int64(-1)
        k0 = 0
        while k0 < K:
            vectors = _span(K - k0, width_vectors, 3) // width_vectors
            q0 = 0
            for i in range(tiles):
                tile_rows = rows // tiles + (1 if i < rows % tiles else 0)
                _table_tile(vectors, tile_rows, zero, a, _address(sources) + q0 * 8, C, _address(offsets) + r0 * 8,
                            count, b + (r0 * out_w * K + k0) * size, K, out_w, init, out + k0 * size,
                            _address(targets) + q0 * 8)
                q0 += tile_rows
            k0 += vectors * width_vectors


@_jit
def _table_tile(vectors, rows, zero, source, sources, C, offsets, count, gradient, K, out_w, init, target, targets):
    """One tile of ``_table_weight_sums``: ``rows`` (4 or 3) rows of ``sums`` x ``vectors`` vectors of filters."""
    if rows == 4:   # (``weight_tiles_apply`` leaves at least 9 rows: tiles of 3 or 4)
        if vectors == 3:
            _TABLE_4_3(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                       targets, 0, 0)
        elif vectors == 2:
            _TABLE_4_2(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                       targets, 0, 0)
        else:
            _TABLE_4_1(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                       targets, 0, 0)
    elif vectors == 3:
        _TABLE_3_3(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                   targets, 0, 0)
    elif vectors == 2:
        _TABLE_3_2(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                   targets, 0, 0)
    else:
        _TABLE_3_1(zero, source, sources, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target,
                   targets, 0, 0)


@_jit
def _weight_tile(form, vectors, zero, source, C, K, tap_step, row_step, kernel_w, offsets, count, gradient, out_w,
                 init, target):
    """One tile of ``tiled_weight_sums`` over ``count`` runs of outputs (their first pixels at ``offsets``),
    their gradient rows from ``gradient``, the tile's start ``init`` (0, or -1: what ``target`` holds). Form 1
    and 2 are AVX-512's alone: their branches are compiled only there (``_WIDE``, a constant to numba)."""
    if form == 1:      # rows: 4 (or 3) channels (1 apart) in groups: 3 taps (tap_step pixels apart)
        if _WIDE:
            _taps_by_channels_tile(vectors, zero, source, C, K, tap_step, offsets, count, gradient, out_w, init,
                                   target)
    elif form == 2:    # rows: 3 taps of a kernel row in groups: 3 kernel rows
        if _WIDE:
            if vectors == 2:
                _TAP_GRID_2(zero, source, tap_step * C, C, offsets, C, count, gradient, K, out_w * K, out_w, init,
                            target, C * K, row_step * C, kernel_w * C * K)
            else:
                _TAP_GRID_1(zero, source, tap_step * C, C, offsets, C, count, gradient, K, out_w * K, out_w, init,
                            target, C * K, row_step * C, kernel_w * C * K)
    else:                # rows: 8 (or 4) channels of one tap
        _channels_tile(vectors, zero, source, 1, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target)


@_jit
def _taps_by_channels_tile(vectors, zero, source, C, K, tap_step, offsets, count, gradient, out_w, init, target):
    """``_weight_tile``'s form 1 (AVX-512): 4 (or 3) channels x 3 taps of a kernel row x ``vectors`` vectors."""
    if vectors == 3:
        _TAPS_BY_CHANNELS_3(zero, source, 1, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target, K,
                            tap_step * C, C * K)
    elif vectors == 2:
        _TAPS_BY_CHANNELS_2(zero, source, 1, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target, K,
                            tap_step * C, C * K)
    else:
        _TAPS_BY_CHANNELS_1(zero, source, 1, C, offsets, C, count, gradient, K, out_w * K, out_w, init, target, K,
                            tap_step * C, C * K)


@_jit
def pointwise_weight_sums(x, gradient, sums, zero):
    """sums (C, K) = sum over the pixels p of outer(x's pixel p, gradient[p]): a pointwise convolution's weight
    gradient (``pointwise``), x (B, H, W, C) read in place in any ``pixel_step`` layout, ``gradient`` (B * H * W,
    K) its output's gradient rows. Tiles of 8 (AVX2: 4) channels held in registers over all pixels, in pixel
    order: each sum the one ``tiled_weight_sums`` makes over the input's grid, the same bits."""
    C = x.shape[3]
    K = gradient.shape[1]
    size = sums.itemsize
    lanes = VECTOR_BYTES // size
    runs, length, pixel, channel, run_step = _pixel_runs(x)
    offsets = np.arange(runs) * run_step   # each run's first pixel
    a, out, b = _address(x), _address(sums), _address(gradient)
    no_shift = np.zeros(1, np.int64)
    # As ``tiled_weight_sums``: the pixels in chunks that keep a span's gradient rows in the level-1 cache
    # (each tile adding into what the chunks before left), a last overlapping tile over all pixels at once.
    chunked = WEIGHT_CHUNK_PIXELS > 0 and (runs > 1 or length > WEIGHT_CHUNK_PIXELS)
    chunk = WEIGHT_CHUNK_PIXELS if chunked else length
    for last in range(2 if chunked else 1):   # 1: the overlapping tile's pass
        for run in range(runs if chunked and not last else 1):
            for q0 in range(0, length if chunked and not last else 1, chunk):
                first = run == 0 and q0 == 0
                k0 = 0
                while k0 < K:
                    vectors = _span(K - k0, lanes, 3) // lanes
                    for c in range(0, C, CHANNEL_ROWS):
                        if chunked and (c + CHANNEL_ROWS > C) != last:
                            continue
                        c0 = min(c, C - CHANNEL_ROWS)
                        target, gradient_k = out + (c0 * K + k0) * size, b + k0 * size
                        if chunked and not last:   # taps: this run's chunk
                            _channels_tile(vectors, zero, a + (run * run_step + q0 * pixel + c0 * channel) * size,
                                           channel, pixel, _address(no_shift), 1, 1,
                                           gradient_k + (run * length + q0) * K * size, K, length * K,
                                           min(chunk, length - q0), np.int64(0) if first else np.int64(-1), target)
                        else:              # taps: the runs; steps: a run's pixels
                            _channels_tile(vectors, zero, a + c0 * channel * size, channel, pixel, _address(offsets), 1,
                                           runs, gradient_k, K, length * K, length, np.int64(0), target)
                    k0 += vectors * lanes


@_jit
def _channels_tile(vectors, zero, source, channel, pixel, offsets, scale, taps, gradient, K, tap_rows, steps, init,
                   target):
    """A weight tile of CHANNEL_ROWS channels (``channel`` apart) x ``vectors`` vectors of filters, over ``taps``
    runs (their first pixels at ``offsets`` times ``scale``) of ``steps`` pixels each (``pixel`` apart), their
    gradient rows ``tap_rows`` apart from ``gradient``; for ``tiled_weight_sums`` and ``pointwise_weight_sums``."""
    if vectors == 3:
        _CHANNELS_BY_3(zero, source, channel, pixel, offsets, scale, taps, gradient, K, tap_rows, steps, init, target,
                       K, 0, 0)
    elif vectors == 2:
        _CHANNELS_BY_2(zero, source, channel, pixel, offsets, scale, taps, gradient, K, tap_rows, steps, init, target,
                       K, 0, 0)
    else:
        _CHANNELS_BY_1(zero, source, channel, pixel, offsets, scale, taps, gradient, K, tap_rows, steps, init, target,
                       K, 0, 0)


@_jit
def masked_rows(values, positive, rows, sums, zero):
    """rows (B * h * w, C) = values (B, h, w, C), zero where a non-empty mask ``positive`` is False;
    the values written added to a non-empty float64 ``sums`` (C,)."""
    B, h, w, C = values.shape
    masked, summed = positive.size > 0, sums.size > 0
    p = 0
    for b in range(B):
        for i in range(h):
            for j in range(w):
                for c in range(C):
                    v = values[b, i, j, c]
                    if masked and not positive[b, i, j, c]:
                        v = zero
                    rows[p, c] = v
                    if summed:
                        sums[c] += v
                p += 1


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
def forward_block(gemm, x, grid, lead, width, rows_per_image, stride_h, stride_w, pad_top, pad_left, phase_pixels,
                  shifts, matrices, packed, bias, products, out_h, out_w, out, rectify, positive, pool_h, pool_w, one,
                  zero):
    """One block of ``forward_blocks``: x (B, H, W, C) -> out (B, H_out, W_out, K) (``_compiled.forward_blocks``);
    a pointwise convolution's straight from x into out (``pointwise``: no grid, no products)."""
    C, K = x.shape[3], out.shape[3]
    size = grid.itemsize
    if pointwise(shifts, width, rows_per_image, out_h, out_w, stride_h, stride_w, pool_h, pool_w):
        pointwise_products(x, packed, widest_span(out_h, out_w, width, rows_per_image), bias, out.reshape(-1, K),
                           rectify, positive.reshape(-1, K) if positive.size > 0 else positive.reshape(0, 0), zero)
        return
    count = ((out.shape[0] - 1) * rows_per_image + out_h - 1) * width + out_w   # grid pixels up to the last output
    _lay_out_input(x, grid, lead, width, rows_per_image, stride_h, stride_w, pad_top, pad_left, phase_pixels, zero)
    if packed.size > 0 and tiles_apply(K, count, size):
        tiled_products(grid, shifts, packed, C, K, bias, products, out.shape[0], out_h, out_w, width,
                       rows_per_image, zero)
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
def _input_gradient_phase(gemm, grid, width, rows_per_image, phase, shifts, matrices, packed, columns, products, dx,
                          stride_h, stride_w, one, zero):
    """One phase of a block's input gradient (``backward_block``): dx[:, r_h::stride_h, r_w::stride_w] (all of
    ``dx`` for stride 1), the stride-1 convolution of the output gradient's ``grid`` with the phase's taps,
    ``phase`` = (r_h, r_w, out_h, out_w, first tap, taps, first packed value, packed values) (no taps:
    rows and columns no tap reaches, zeros). Products by the tiles where they apply, else by the BLAS:
    through ``columns`` (``few_output_products``) where that scratch is given, else per tap."""
    r_h, r_w, out_h, out_w = phase[0], phase[1], phase[2], phase[3]
    t0, tap_count, k0, packed_count = phase[4], phase[5], phase[6], phase[7]
    B, C, K = dx.shape[0], dx.shape[3], grid.shape[1]
    size = grid.itemsize
    if tap_count == 0:
        target = dx[:, r_h::stride_h, r_w::stride_w]
        for b in range(B):
            for i in range(target.shape[1]):
                for j in range(target.shape[2]):
                    for c in range(C):
                        target[b, i, j, c] = zero
        return
    count = ((B - 1) * rows_per_image + out_h - 1) * width + out_w
    phase_shifts = shifts[t0:t0 + tap_count]
    if packed_count > 0 and tiles_apply(C, count, size):
        tiled_products(grid, phase_shifts, packed[k0:k0 + packed_count], K, C, np.empty(0, dx.dtype), products, B,
                       out_h, out_w, width, rows_per_image, zero)
    elif columns.size > 0:
        few_output_products(gemm, grid, phase_shifts, matrices[t0:t0 + tap_count], columns, count, products, one, zero)
    else:
        taps(gemm, _NO_TRANS, count, C, K, _address(grid), K, phase_shifts, K * size,
             _address(matrices) + t0 * K * C * size, K * C * size, C, _address(products), 0, C, one, zero, False)
    no_mask = np.empty((0, 0, 0, 0), np.bool_)
    if stride_h * stride_w == 1:
        copy_out(products, width, rows_per_image, dx, False, no_mask, zero)
    else:
        copy_out(products, width, rows_per_image, dx[:, r_h::stride_h, r_w::stride_w], False, no_mask, zero)


@_jit
def backward_block(gemm, x, dout, positive, dx, grid_x, grid_dout, grid_on_x, x_lead, x_width, x_rows, stride_h,
                   stride_w, pad_top, pad_left, phase_pixels, d_lead, d_width, d_rows, same, shifts, kernel_w,
                   dx_phases, dx_shifts, dx_matrices, dx_packed, dx_columns, products, rows, rows_ready, tap_sums,
                   count, db, one, zero):
    """One block of ``backward_blocks`` (see ``_compiled.backward_blocks``); ``count``: grid pixels up to the
    block's last output. A pointwise convolution's (``pointwise``) from x and the gradient's rows in place."""
    C, K = x.shape[3], dout.shape[3]
    size = x.itemsize
    no_sums = np.empty(0)
    tiled = rows.size > 0   # the caller gives the gradient's rows where ``weight_tiles_apply``
    if tiled and pointwise(shifts, x_width, x_rows, dout.shape[1], dout.shape[2], stride_h, stride_w, 1, 1):
        _pointwise_backward(gemm, x, dout, positive, dx, dx_shifts, dx_matrices, dx_packed, rows, rows_ready,
                            tap_sums[0], db, one, zero)
        return
    if dx.size > 0:
        lay_out(dout, grid_dout, d_lead, d_width, d_rows, positive, no_sums if tiled else db, zero)
        for p in range(dx_phases.shape[0]):
            _input_gradient_phase(gemm, grid_dout, d_width, d_rows, dx_phases[p], dx_shifts, dx_matrices, dx_packed,
                                  dx_columns, products, dx, stride_h, stride_w, one, zero)
    _lay_out_input(x, grid_x, x_lead, x_width, x_rows, stride_h, stride_w, pad_top, pad_left, phase_pixels, zero)
    if tiled:
        _gradient_rows(dout, positive, rows, rows_ready, db, zero)
        tiled_weight_sums(grid_x, shifts, kernel_w, rows, dout.shape[0], dout.shape[1], dout.shape[2], x_width,
                          x_rows, tap_sums, zero)
    else:
        if dx.size > 0 and same:   # the padded gradient is on the input's grid, ``d_lead`` rows on
            on_grid = _address(grid_dout) + d_lead * d_width * K * size
        else:
            lay_out(dout, grid_on_x, 0, x_width, x_rows, positive, db if dx.size == 0 else no_sums, zero)
            on_grid = _address(grid_on_x)
        taps(gemm, _TRANS, C, K, count, _address(grid_x), C, shifts, C * size, on_grid, 0, K,
             _address(tap_sums), C * K * size, K, one, zero, False)


@_jit
def _gradient_rows(dout, positive, rows, rows_ready, db, zero):
    """The block's output gradient as (pixels, K) ``rows`` for the weight-gradient tiles, through the ReLU
    mask ``positive`` (``masked_rows``), its bias gradient added into ``db`` (float64; empty without bias);
    where ``rows_ready``, ``rows`` is ``dout`` itself (no mask) and only the bias gradient is added up."""
    if not rows_ready:
        masked_rows(dout, positive, rows, db, zero)
        return
    for p in range(rows.shape[0]):
        for k in range(db.size):
            db[k] += rows[p, k]


@_jit
def _pointwise_backward(gemm, x, dout, positive, dx, dx_shifts, dx_matrices, dx_packed, rows, rows_ready, sums, db,
                        one, zero):
    """``backward_block`` for a pointwise convolution: the gradient's rows (through the ReLU mask, the bias
    gradient added up on the way) made once and read in place by the input gradient's products, written
    straight into ``dx`` (by the tiles, or by the BLAS where the input channels are not whole vectors), and
    by the weight gradient's tiles, which read x in place."""
    B, H, W, C = x.shape
    K = dout.shape[3]
    _gradient_rows(dout, positive, rows, rows_ready, db, zero)
    if dx.size > 0:
        if dx_packed.size > 0:
            pointwise_products(rows.reshape(B, H, W, K), dx_packed, widest_span(H, W, W, H), np.empty(0, dx.dtype),
                               dx.reshape(-1, C), False, np.empty((0, 0), np.bool_), zero)
        else:   # one product, its tap's shift (the gradient grid's lead) unused: the rows are the grid
            taps(gemm, _NO_TRANS, B * H * W, C, K, _address(rows), K, dx_shifts, 0, _address(dx_matrices), 0, C,
                 _address(dx), 0, C, one, zero, False)
    pointwise_weight_sums(x, rows, sums, zero)


@_jit
def _take_block(next_block, bounds, thread, taken):
    """The next block (of ``bounds``' blocks) not yet begun, from the counter at ``next_block`` that the
    threads share (atomically), marked in ``taken`` as ``thread``'s; -1 when none is left."""
    i = fetch_add(next_block, np.int64(1))
    if i >= bounds.size - 1:
        return np.int64(-1)
    taken[i] = thread
    return i


@_jit
def forward_blocks(gemm, next_block, bounds, x, grid, lead, width, rows_per_image, stride_h, stride_w, pad_top,
                   pad_left, phase_pixels, shifts, matrices, packed, bias, products, out_h, out_w, out, rectify,
                   positive, pool_h, pool_w, one, zero, thread, taken):
    """``forward_block`` for every block of images ``bounds[i]:bounds[i + 1]`` this thread takes: each takes
    the next block not yet begun from the counter at ``next_block`` (shared by the threads, atomically),
    until none is left, and writes ``thread`` into ``taken[i]``. No Python runs between blocks, so a
    thread never waits for the GIL between them."""
    masked = positive.size > 0
    while True:
        i = _take_block(next_block, bounds, thread, taken)
        if i < 0:
            return
        n0, n1 = bounds[i], bounds[i + 1]
        mask = positive[n0:n1] if masked else positive
        forward_block(gemm, x[n0:n1], grid, lead, width, rows_per_image, stride_h, stride_w, pad_top, pad_left,
                      phase_pixels, shifts, matrices, packed, bias, products, out_h, out_w, out[n0:n1], rectify, mask,
                      pool_h, pool_w, one, zero)


@_jit
def backward_blocks(gemm, next_block, bounds, x, dout, positive, dx, grid_x, grid_dout, grid_on_x, x_lead, x_width,
                    x_rows, stride_h, stride_w, pad_top, pad_left, phase_pixels, d_lead, d_width, d_rows, same, shifts,
                    kernel_w, dx_phases, dx_shifts, dx_matrices, dx_packed, dx_columns, products, rows, tiled, tap_sums,
                    db, one, zero, thread, taken):
    """``backward_block`` for every block this thread takes, as ``forward_blocks``: block i's weight-gradient
    sums into ``tap_sums[i]``, its bias gradient into ``db[i]`` (rows of zeros, or (blocks, 0) without
    bias); ``rows`` scratch for the largest block's gradient rows where ``tiled``."""
    masked, with_dx = positive.size > 0, dx.size > 0
    K = dout.shape[3]
    pixels = dout.shape[1] * dout.shape[2]
    while True:
        i = _take_block(next_block, bounds, thread, taken)
        if i < 0:
            return
        n0, n1 = bounds[i], bounds[i + 1]
        B = n1 - n0
        count = ((B - 1) * x_rows + dout.shape[1] - 1) * x_width + dout.shape[2]
        block_rows = rows[:B * pixels] if tiled else rows
        rows_ready = tiled and not masked
        if rows_ready:
            block_rows = dout[n0:n1].reshape(-1, K)
        mask = positive[n0:n1] if masked else positive
        block_dx = dx[n0:n1] if with_dx else dx
        backward_block(gemm, x[n0:n1], dout[n0:n1], mask, block_dx, grid_x, grid_dout, grid_on_x, x_lead, x_width,
                       x_rows, stride_h, stride_w, pad_top, pad_left, phase_pixels, d_lead, d_width, d_rows, same,
                       shifts, kernel_w, dx_phases, dx_shifts, dx_matrices, dx_packed, dx_columns, products,
                       block_rows, rows_ready, tap_sums[i], count, db[i], one, zero)


@_jit_threads
def forward_threads(gemm, threads, bounds, x, grids, lead, width, rows_per_image, stride_h, stride_w, pad_top,
                    pad_left, phase_pixels, shifts, matrices, packed, bias, products, out_h, out_w, out, rectify,
                    positive, pool_h, pool_w, one, zero, taken):
    """``forward_blocks`` on ``threads`` of numba's own threads at once (its threading layer's: no Python,
    so no GIL, between the calling thread and the others): thread i with scratch ``grids[i]`` and
    ``products[i]``, every thread taking blocks from one counter; block j's taker into ``taken[j]``."""
    counter = np.zeros(1, np.int64)
    for i in numba.prange(threads):
        forward_blocks(gemm, _address(counter), bounds, x, grids[i], lead, width, rows_per_image, stride_h, stride_w,
                       pad_top, pad_left, phase_pixels, shifts, matrices, packed, bias, products[i], out_h, out_w, out,
                       rectify, positive, pool_h, pool_w, one, zero, i, taken)


@_jit_threads
def backward_threads(gemm, threads, bounds, x, dout, positive, dx, grids_x, grids_dout, grids_on_x, x_lead, x_width,
                     x_rows, stride_h, stride_w, pad_top, pad_left, phase_pixels, d_lead, d_width, d_rows, same, shifts,
                     kernel_w, dx_phases, dx_shifts, dx_matrices, dx_packed, columns, products, rows, tiled, tap_sums,
                     db, one, zero, taken):
    """``backward_blocks`` on ``threads`` of numba's threads at once, as ``forward_threads``: thread i with the
    i-th of each stack of scratch arrays (``grids_x`` ... ``rows``)."""
    counter = np.zeros(1, np.int64)
    for i in numba.prange(threads):
        backward_blocks(gemm, _address(counter), bounds, x, dout, positive, dx, grids_x[i], grids_dout[i],
                        grids_on_x[i], x_lead, x_width, x_rows, stride_h, stride_w, pad_top, pad_left, phase_pixels,
                        d_lead, d_width, d_rows, same, shifts, kernel_w, dx_phases, dx_shifts, dx_matrices, dx_packed,
                        columns[i], products[i], rows[i], tiled, tap_sums, db, one, zero, i, taken)


@_jit
def weight_gradient(sums, kernel_w, first_channel, last_channel, dw):
    """dw[:, c] (K, kH, kW) for the input channels ``first_channel`` to ``last_channel`` (exclusive): the sum
    over the blocks' sums (blocks, kH*kW, C, K) in float64, one block after another, rounded once to dw's
    dtype (what ``_shifted.weight_gradient`` does with NumPy); taps row-major, ``kernel_w`` a row. A few
    channels at a time, all their taps at once: their sums in the level-2 cache, written to dw a filter's
    taps for those channels together (contiguous)."""
    S, T, K = sums.shape[0], sums.shape[1], sums.shape[3]
    kernel_h = T // kernel_w
    total = np.empty((T, _SUM_CHANNELS, K), np.float64)
    for c0 in range(first_channel, last_channel, _SUM_CHANNELS):
        c1 = min(c0 + _SUM_CHANNELS, last_channel)
        for t in range(T):
            for c in range(c0, c1):
                for k in range(K):
                    total[t, c - c0, k] = sums[0, t, c, k]
        for s in range(1, S):
            for t in range(T):
                for c in range(c0, c1):
                    for k in range(K):
                        total[t, c - c0, k] += sums[s, t, c, k]
        for k in range(K):
            for c in range(c0, c1):
                for i in range(kernel_h):
                    for j in range(kernel_w):
                        dw[k, c, i, j] = total[i * kernel_w + j, c - c0, k]


@_jit
def _max_pool_plane_forward(x, kh, kw, out):
    """``max_pool_tiled_forward`` for one channel (N, H, W, 1), a value at a time."""
    N, H_out, W_out = out.shape[:3]
    for n in range(N):
        for oy in range(H_out):
            for ox in range(W_out):
                y0, x0 = oy * kh, ox * kw
                m = x[n, y0, x0, 0]
                for i in range(kh):   # taps in row-major order (the first one again: no change)
                    for j in range(kw):
                        v = x[n, y0 + i, x0 + j, 0]
                        if v > m or v != v:
                            m = v
                out[n, oy, ox, 0] = m


@_jit
def _max_pool_plane_backward(dout, x, out, kh, kw, dx):
    """``max_pool_tiled_backward`` for one channel (N, H, W, 1), a value at a time."""
    N, H_out, W_out = out.shape[:3]
    H, W = x.shape[1], x.shape[2]
    zero = dx.dtype.type(0)
    for n in range(N):
        for y in range(H_out * kh, H):   # rows and columns no tile covers
            for xx in range(W):
                dx[n, y, xx, 0] = zero
        for y in range(H_out * kh):
            for xx in range(W_out * kw, W):
                dx[n, y, xx, 0] = zero
        for oy in range(H_out):
            y0 = oy * kh
            for ox in range(W_out):
                x0 = ox * kw
                m, g = out[n, oy, ox, 0], dout[n, oy, ox, 0]
                if m != m:   # a NaN in the tile (rare): its last NaN takes the gradient
                    last_y, last_x = y0, x0
                    for i in range(kh):
                        for j in range(kw):
                            v = x[n, y0 + i, x0 + j, 0]
                            if v != v:
                                last_y, last_x = y0 + i, x0 + j
                            dx[n, y0 + i, x0 + j, 0] = zero
                    dx[n, last_y, last_x, 0] = g
                    continue
                found = False   # the first maximum, chosen without branches (where the max lies is random)
                for i in range(kh):
                    for j in range(kw):
                        hit = (x[n, y0 + i, x0 + j, 0] == m) & (not found)
                        dx[n, y0 + i, x0 + j, 0] = g if hit else zero
                        found = found | hit


@_jit
def max_pool_tiled_forward(x, kh, kw, out):
    """out (N, H_out, W_out, C) = the max of each kh x kw tile of x (N, H, W, C), channels-last; NaN wins,
    as with ``np.maximum`` over the taps in row-major order (of a -0.0 and a 0.0, the first is kept)."""
    N, H_out, W_out, C = out.shape
    if C == 1:   # planes of an NCHW array (``pool._planes``): one value a pixel, no vector of channels
        _max_pool_plane_forward(x, kh, kw, out)
        return
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
    if C == 1:   # as ``max_pool_tiled_forward``
        _max_pool_plane_backward(dout, x, out, kh, kw, dx)
        return
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


@_jit
def channels_last(values, out):
    """out (N, P, K) = values (N, K, P) transposed image by image (an NCHW array's planes as channels-last
    rows), in tiles of 8 x 8 that LLVM keeps in registers where NumPy's strided copy reads one value a time;
    the edges where 8 does not divide P or K one value at a time."""
    N, K, P = values.shape
    full_p, full_k = P - P % 8, K - K % 8
    for n in range(N):
        plane, rows = values[n], out[n]
        for p0 in range(0, full_p, 8):
            for k0 in range(0, full_k, 8):
                for p in range(8):
                    for k in range(8):
                        rows[p0 + p, k0 + k] = plane[k0 + k, p0 + p]
            for k in range(full_k, K):
                for p in range(p0, p0 + 8):
                    rows[p, k] = plane[k, p]
        for p in range(full_p, P):
            for k in range(K):
                rows[p, k] = plane[k, p]


@_jit_threads
def channels_last_threads(values, out, bounds):
    """``channels_last`` for the images ``bounds[i]:bounds[i + 1]`` of every i at once, on numba's threads."""
    for i in numba.prange(bounds.size - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        channels_last(values[n0:n1], out[n0:n1])


@_jit_threads
def products_threads(gemm, calls, one, zero):
    """Independent matrix products at once, one on each of numba's threads (each a BLAS call on one thread):
    for every row of ``calls`` (int64), (trans_a, trans_b, rows, cols, inner, a, lda, b, ldb, out, ldc), row-major,
    the addresses in bytes: ``out = op(A) @ op(B)``."""
    for i in numba.prange(calls.shape[0]):
        gemm(_ROW_MAJOR, np.int32(calls[i, 0]), np.int32(calls[i, 1]), calls[i, 2], calls[i, 3], calls[i, 4], one,
             calls[i, 5], calls[i, 6], calls[i, 7], calls[i, 8], zero, calls[i, 9], calls[i, 10])


@_jit_threads
def weight_gradient_threads(sums, kernel_w, bounds, dw):
    """``weight_gradient`` for the input channels ``bounds[i]:bounds[i + 1]`` of every i at once, on numba's
    threads."""
    for i in numba.prange(bounds.size - 1):
        weight_gradient(sums, kernel_w, bounds[i], bounds[i + 1], dw)


@_jit_threads
def max_pool_tiled_forward_threads(x, kh, kw, out, bounds):
    """``max_pool_tiled_forward`` for the images ``bounds[i]:bounds[i + 1]`` of every i at once, on numba's threads."""
    for i in numba.prange(bounds.size - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        max_pool_tiled_forward(x[n0:n1], kh, kw, out[n0:n1])


@_jit_threads
def max_pool_tiled_backward_threads(dout, x, out, kh, kw, dx, bounds):
    """``max_pool_tiled_backward`` for the images ``bounds[i]:bounds[i + 1]`` of every i at once, on numba's
    threads."""
    for i in numba.prange(bounds.size - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        max_pool_tiled_backward(dout[n0:n1], x[n0:n1], out[n0:n1], kh, kw, dx[n0:n1])
