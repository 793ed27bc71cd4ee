"""The compiled engine's register-tiled products (``_tiled_products`` through ``_compiled_kernels``),
against naive loops in float64: every tile width (one and two vectors, float32 and float64), tiles
along the output's rows and a sweep over all pixels, pixel and channel counts that leave a partial
last tile, and the rows past the output untouched.

The convolutions that use them are checked end to end in ``test_shifted_conv.py`` (its "tiles" cases).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
from reference.gradcheck import rel_error
from stridenet.functional._shifted import taps

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}
SHIFTS = np.array([0, 1, 7, 13, 2], np.int64)   # pixels on from the output pixel, per tap


@pytest.fixture(scope="module")
def kernels():
    if not compiled.available(np.float32):
        pytest.skip("numba (pip install 'stridenet[fast]') or a 64-bit-integer BLAS is missing: no compiled kernels")
    return compiled._kernels()


def lanes(dtype: type) -> int:
    """Values per vector of the tiles on this CPU (64 bytes with AVX-512, 32 with AVX2)."""
    return compiled._kernels().VECTOR_BYTES // np.dtype(dtype).itemsize


def wide(kernels) -> bool:
    """Whether the tiles are AVX-512's (else AVX2's: 4-pixel tiles, 4 channels a weight tile)."""
    return kernels.VECTOR_BYTES == 64


def packed_matrices(kernels, matrices: np.ndarray, layout: Layout) -> np.ndarray:
    """``matrices`` (T, C, K) as the tiles read them on ``layout``: packed as the filters of a (K, C, 1, T)
    kernel, in the spans the layout's tiles take."""
    T, C, K = matrices.shape
    w = np.ascontiguousarray(matrices.transpose(2, 1, 0)).reshape(K, C, 1, T)
    return kernels.pack_filters(w, False, kernels.widest_span(*layout[1:]))


def naive_products(grid: np.ndarray, matrices: np.ndarray, bias: np.ndarray | None, pixels: list[int],
                   shifts: np.ndarray = SHIFTS) -> np.ndarray:
    out = np.zeros((len(pixels), matrices.shape[2]))
    for row, p in enumerate(pixels):
        for t, shift in enumerate(shifts):
            out[row] += grid[p + shift].astype(np.float64) @ matrices[t].astype(np.float64)
    return out if bias is None else out + bias


class Layout(NamedTuple):
    images: int
    out_h: int
    out_w: int
    width: int            # grid pixels a row (out_w and padding)
    rows_per_image: int

    def outputs(self) -> list[int]:
        """The grid pixels of the outputs."""
        return [(b * self.rows_per_image + i) * self.width + j
                for b in range(self.images) for i in range(self.out_h) for j in range(self.out_w)]


# layout -> pixels per tile along the output's rows (0: one sweep over all pixels up to the last output), with
# AVX-512's tiles (8, 12 or 14 pixels) and with AVX2's (4)
LAYOUTS = {
    Layout(1, 1, 24, 24, 1): (0, 0), Layout(1, 1, 25, 25, 1): (0, 0), Layout(1, 2, 37, 37, 2): (0, 0),  # no padding:
    Layout(2, 3, 5, 7, 4): (0, 4), Layout(3, 2, 9, 10, 3): (0, 4),   # rows too short for 8 pixels   # a sweep
    Layout(2, 5, 14, 16, 6): (14, 4), Layout(3, 4, 8, 10, 5): (8, 4), Layout(1, 3, 12, 15, 4): (12, 4),  # padding
    Layout(1, 2, 30, 32, 3): (8, 4), Layout(1, 2, 13, 16, 3): (8, 4), Layout(1, 2, 26, 29, 3): (14, 4),  # skipped
}                                                                              # and rows' last tiles overlapping


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5])     # 8-pixel tiles: 3, 2 + 2, 3 + 2; else 2 + 1, 2 + 2...
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("channels", [8, 13, 40])
@pytest.mark.parametrize("with_bias", [True, False])
def test_tiled_products_match_the_naive_loops(kernels, dtype: type, vectors: int, layout: Layout, channels: int,
                                              with_bias: bool) -> None:
    rng = np.random.default_rng(layout.out_w + 7 * vectors)
    K = vectors * lanes(dtype)
    outputs = layout.outputs()
    count = outputs[-1] + 1
    row_tile = LAYOUTS[layout][0 if wide(kernels) else 1]
    assert kernels.row_tile(*layout[1:]) == row_tile
    assert kernels.widest_span(*layout[1:]) == (3 if row_tile == 8 or not wide(kernels) else 2)   # AVX2: 3 always
    grid = rng.standard_normal((count + SHIFTS.max(), channels)).astype(dtype)
    matrices = rng.standard_normal((SHIFTS.size, channels, K)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype) if with_bias else None
    products = np.full((count + 3, K), 1234.5, dtype)   # three rows past the output: must stay as they are
    assert kernels.tiles_apply(K, count, products.itemsize)
    kernels.tiled_products(grid, SHIFTS, packed_matrices(kernels, matrices, layout), channels, K,
                           np.empty(0, dtype) if bias is None else bias, products, *layout, dtype(0))
    assert rel_error(products[outputs], naive_products(grid, matrices, bias, outputs)) < TOLERANCE[dtype]
    assert (products[count:] == 1234.5).all()


def kernel_shifts(layout: Layout, kernel: tuple[int, int], dilation: tuple[int, int]) -> np.ndarray:
    """The taps' shifts (row-major) of a kernel on the layout's grid."""
    return np.array([i * dilation[0] * layout.width + j * dilation[1]
                     for i in range(kernel[0]) for j in range(kernel[1])], np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", [Layout(2, 20, 30, 32, 22), Layout(1, 40, 37, 37, 40)])   # rows, and a sweep
def test_tiled_products_in_several_panels_match_the_naive_loops(kernels, dtype: type, layout: Layout) -> None:
    """Enough pixels for several panels (``PANEL_BYTES``), several passes over parts of the channels
    (``MATRIX_BYTES_PER_PASS``), overlapping last tiles: each panel's passes, then the overlapping
    tiles, must add up exactly once."""
    rng = np.random.default_rng(11)
    channels, K = 420, 3 * lanes(dtype)
    assert SHIFTS.size * channels * 2 * 64 > kernels.MATRIX_BYTES_PER_PASS   # two passes or more
    outputs = layout.outputs()
    count = outputs[-1] + 1
    assert count * (channels + K) * np.dtype(dtype).itemsize > kernels.PANEL_BYTES
    grid = rng.standard_normal((count + SHIFTS.max(), channels)).astype(dtype)
    matrices = rng.standard_normal((SHIFTS.size, channels, K)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype)
    products = np.full((count, K), np.nan, dtype)
    packed = packed_matrices(kernels, matrices, layout)
    kernels.tiled_products(grid, SHIFTS, packed, channels, K, bias, products, *layout, dtype(0))
    assert rel_error(products[outputs], naive_products(grid, matrices, bias, outputs)) < TOLERANCE[dtype]


@pytest.mark.parametrize(("shifts", "expected"), [
    ([0, 1, 2, 20, 21, 22, 40, 41, 42], 3), ([5, 6, 7, 8, 9, 10, 11, 12, 13], 9), ([0, 1, 2, 3, 7, 8], 2),
    ([0, 1, 7, 13, 2], 1), ([4], 1), ([0, 2, 4, 6], 1), ([0, 1, 2, 10, 11], 1)])
def test_adjacent_taps_are_runs_of_one_pixel_steps_that_divide_the_taps(kernels, shifts: list[int],
                                                                       expected: int) -> None:
    assert kernels._adjacent_taps(np.array(shifts, np.int64)) == expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("kernel", "channels"), [((3, 3), 3), ((7, 7), 3), ((3, 3), 1), ((1, 5), 8), ((3, 3), 420)])
def test_tiled_products_over_kernel_rows_of_adjacent_taps(kernels, dtype: type, kernel: tuple[int, int],
                                                          channels: int) -> None:
    """A stride-1 kernel's rows lie on adjacent grid pixels: where one pass takes every input channel, the tiles
    step through a kernel row's taps and channels as one stretch (``_span_tile``); 420 channels need several
    passes, tap by tap."""
    rng = np.random.default_rng(channels)
    layout = Layout(2, 5, 14, 14 + kernel[1] - 1, 5 + kernel[0] - 1)
    shifts = kernel_shifts(layout, kernel, (1, 1))
    assert kernels._adjacent_taps(shifts) == kernel[1]
    K = 3 * lanes(dtype)
    outputs = layout.outputs()
    count = outputs[-1] + 1
    grid = rng.standard_normal((count + shifts.max(), channels)).astype(dtype)
    matrices = rng.standard_normal((shifts.size, channels, K)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype)
    products = np.full((count, K), np.nan, dtype)
    kernels.tiled_products(grid, shifts, packed_matrices(kernels, matrices, layout), channels, K, bias, products,
                           *layout, dtype(0))
    assert rel_error(products[outputs], naive_products(grid, matrices, bias, outputs, shifts)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5])   # spans of 3 (3 taps x 3 channels, or 8 channels), 2 + 2, 3 + 2
@pytest.mark.parametrize(("channels", "kernel", "dilation"), [
    (8, (1, 5), (1, 1)), (12, (2, 2), (1, 1)), (33, (1, 1), (1, 1)),   # 8 channels of one tap (12, 33: overlap)
    (4, (3, 3), (1, 1)), (6, (2, 3), (2, 1)), (13, (3, 3), (1, 2)),    # 3 taps of a row x 4 channels
    (1, (3, 3), (1, 1)), (3, (3, 3), (2, 2)),                          # the 3 x 3 taps of each channel
    (3, (7, 7), (1, 1)), (5, (5, 4), (1, 2)), (2, (4, 6), (2, 1)),     # ... grids of them, overlapping
    (2, (3, 5), (1, 1)),                                               # (AVX2: 4 and 3 (tap, channel) rows a tile)
])
@pytest.mark.parametrize("layout", [Layout(1, 1, 24, 24, 1), Layout(2, 5, 14, 18, 8), Layout(3, 2, 9, 13, 6)])
def test_tiled_weight_sums_match_the_naive_loops(kernels, dtype: type, vectors: int, channels: int,
                                                 kernel: tuple[int, int], dilation: tuple[int, int],
                                                 layout: Layout) -> None:
    rng = np.random.default_rng(channels + layout.out_w)
    K = vectors * lanes(dtype)
    outputs = layout.outputs()
    shifts, kernel_w = kernel_shifts(layout, kernel, dilation), kernel[1]
    assert kernels.weight_tiles_apply(channels, K, len(outputs), np.dtype(dtype).itemsize, *kernel)
    grid = rng.standard_normal((outputs[-1] + 1 + shifts.max(), channels)).astype(dtype)
    gradient = rng.standard_normal((len(outputs), K)).astype(dtype)
    sums = np.full((shifts.size, channels, K), np.nan, dtype)
    kernels.tiled_weight_sums(grid, shifts, kernel_w, gradient, *layout, sums, dtype(0))
    expected = np.stack([grid[np.add(outputs, s)].astype(np.float64).T @ gradient.astype(np.float64) for s in shifts])
    assert rel_error(sums, expected) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("vectors", "rows"), [(3, 4), (2, 4), (1, 4), (3, 3), (2, 3), (1, 3)])
@pytest.mark.parametrize("adding", [False, True], ids=["from-zero", "adding"])
def test_a_tile_with_row_tables_reads_and_writes_the_rows_they_name(kernels, dtype: type, vectors: int, rows: int,
                                                                    adding: bool) -> None:
    """``tile_product(..., table=True)`` (the AVX2 weight tiles of few channels): row r of the tile read at the
    offset ``a_row[r]`` names and written at ``out_row[r]``'s, rows out of order, the other rows untouched."""
    if not compiled.tiles_enabled():
        pytest.skip("no AVX-512 or AVX2 and FMA here: the tiles do not run")
    import numba

    from stridenet.functional._tiled_products import tile_product
    tile = tile_product(vectors, rows, table=True)

    @numba.njit
    def run(zero, a, a_rows, shifts, b, init, out, out_rows, a_step, b_step, b_tap, steps):
        tile(zero, a.ctypes.data, a_rows.ctypes.data, a_step, shifts.ctypes.data, 3, shifts.size, b.ctypes.data,
             b_step, b_tap, steps, init, out.ctypes.data, out_rows.ctypes.data, 0, 0)

    rng = np.random.default_rng(vectors * 10 + rows)
    width = vectors * lanes(dtype)
    a = rng.standard_normal(400).astype(dtype)
    shifts = np.array([0, 9, 4], np.int64)                       # times 3: each tap's first value of A
    a_rows = np.array([17, 3, 40, 8][:rows], np.int64)
    steps, a_step, b_step = 5, 7, width + 3
    b_tap = steps * b_step
    b = rng.standard_normal(shifts.size * b_tap + width).astype(dtype)
    out_rows = np.array([2, 0, 5, 3][:rows], np.int64) * width   # rows 1 and 4 (and 3 of 3) not the tile's
    start = rng.standard_normal((6, width)).astype(dtype)
    out = start.copy()
    run(dtype(0), a, a_rows, shifts, b, np.int64(-1 if adding else 0), out.reshape(-1), out_rows, a_step, b_step,
        b_tap, steps)
    expected = start.astype(np.float64)
    for r in range(rows):
        row = out_rows[r] // width
        expected[row] = start[row] if adding else 0
        for t in range(shifts.size):
            for j in range(steps):
                b_row = b[t * b_tap + j * b_step:][:width].astype(np.float64)
                expected[row] += a[shifts[t] * 3 + a_rows[r] + j * a_step] * b_row
    assert rel_error(out, expected) < TOLERANCE[dtype]
    untouched = [i for i in range(6) if i * width not in out_rows]
    np.testing.assert_array_equal(out[untouched], start[untouched])


@pytest.mark.parametrize(("channels", "kernel", "expected"), [   # (AVX-512: 8 channels of a tap; AVX2: 4)
    (8, (1, 1), (True, True)), (7, (1, 1), (False, True)), (4, (1, 3), (True, True)), (3, (1, 3), (False, False)),
    (3, (3, 3), (True, True)), (1, (3, 3), (True, True)), (2, (3, 2), (False, False)), (3, (7, 7), (True, True)),
    (5, (5, 4), (True, True)), (7, (2, 5), (False, True)), (3, (2, 5), (False, False))])
def test_weight_tiles_apply_to_these_kernels(kernels, channels: int, kernel: tuple[int, int],
                                             expected: tuple[bool, bool]) -> None:
    assert kernels.weight_tiles_apply(channels, 16, 100, 4, *kernel) is expected[0 if wide(kernels) else 1]
    assert not kernels.weight_tiles_apply(channels, 20, 100, 4, *kernel)   # not whole vectors of filters
    assert not kernels.weight_tiles_apply(channels, 16, 0, 4, *kernel)     # nothing to sum


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("summed", [True, False])
def test_masked_rows_copy_the_gradient_through_its_mask_and_add_it_up(kernels, masked: bool, summed: bool) -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    positive = rng.random(values.shape) > 0.5
    rows = np.full((24, 5), np.nan, np.float32)
    sums = np.zeros(5 if summed else 0)
    kernels.masked_rows(values, positive if masked else np.empty((0, 0, 0, 0), np.bool_), rows, sums, np.float32(0))
    expected = np.where(positive, values, 0) if masked else values
    np.testing.assert_array_equal(rows, expected.reshape(24, 5))
    if summed:
        np.testing.assert_allclose(sums, expected.reshape(24, 5).astype(np.float64).sum(axis=0), rtol=1e-12)


def test_non_finite_values_propagate_as_in_a_matrix_product(kernels) -> None:
    K, count = lanes(np.float32), 30
    layout = Layout(1, 1, count, count, 1)
    grid = np.ones((count + SHIFTS.max(), 8), np.float32)
    grid[5, 3], grid[9, 0] = np.inf, np.nan
    matrices = np.ones((SHIFTS.size, 8, K), np.float32)
    products = np.empty((count, K), np.float32)
    packed = packed_matrices(kernels, matrices, layout)
    kernels.tiled_products(grid, SHIFTS, packed, 8, K, np.empty(0, np.float32), products, *layout, np.float32(0))
    with np.errstate(invalid="ignore"):
        expected = naive_products(grid, matrices, None, layout.outputs())
    np.testing.assert_array_equal(np.isnan(products), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(products), np.isposinf(expected))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5, 6, 7])
@pytest.mark.parametrize("flip", [False, True], ids=["forward", "input-gradient"])
@pytest.mark.parametrize("widest", [2, 3])
def test_packed_filters_hold_each_span_of_outputs_contiguously(kernels, dtype: type, vectors: int, flip: bool,
                                                               widest: int) -> None:
    """``pack_filters``: the tap matrices (``_shifted.taps``: w's (C, K) per tap, or the input gradient's
    flipped (K, C)), span after span of their outputs, each span's (T, inputs, span) values contiguous;
    spans of 2 vectors (and a last of 1) or, with ``widest`` 3, of 3 except that 4 vectors left go as 2 + 2."""
    width = lanes(dtype)
    w = np.arange(4 * vectors * width * 2 * 3, dtype=dtype).reshape(4, vectors * width, 2, 3)
    if not flip:
        w = np.ascontiguousarray(w.transpose(1, 0, 2, 3))   # (outputs, 4 inputs, 2, 3)
    matrices = taps(w, flip)
    packed, k0, spans = kernels.pack_filters(w, flip, widest), 0, []
    while k0 < matrices.shape[2]:
        left = (matrices.shape[2] - k0) // width
        span = 3 if widest == 3 and left >= 3 and left != 4 else min(left, 2)
        spans.append(matrices[:, :, k0:k0 + span * width])
        k0 += spans[-1].shape[2]
    np.testing.assert_array_equal(packed, np.concatenate([span.reshape(-1) for span in spans]))


@pytest.mark.parametrize("flip", [False, True])
def test_no_packing_where_outputs_are_not_whole_vectors(kernels, flip: bool) -> None:
    w = np.ones((8, 20, 3, 3), np.float32) if flip else np.ones((20, 8, 3, 3), np.float32)   # 20 outputs
    assert kernels.pack_filters(w, flip, 3).size == 0


@pytest.mark.parametrize(("vectors", "extra", "pixels", "itemsize", "expected"), [
    (1, 0, 24, 4, True), (2, 0, 1000, 4, True), (1, 0, 24, 8, True),
    (1, 4, 24, 4, False),      # not a whole number of vectors
    (1, 2, 24, 8, False),
    (1, 0, 23, 4, False),      # fewer pixels than a tile
])
def test_tiles_apply_to_whole_vectors_and_enough_pixels(kernels, vectors: int, extra: int, pixels: int, itemsize: int,
                                                        expected: bool) -> None:
    outputs = vectors * kernels.VECTOR_BYTES // itemsize + extra
    assert kernels.tiles_apply(outputs, pixels, itemsize) is expected


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("channels", "count"), [(1, 100), (3, 4100), (7, 2048), (5, 2049)])
def test_few_output_products_match_the_naive_loops(kernels, dtype: type, channels: int, count: int) -> None:
    """``few_output_products``: every tap's product for outputs fewer than a vector, through columns a
    chunk of pixels at a time (``COLUMN_CHUNK``: one chunk, three, exactly one, one and a pixel): the
    first ``count`` rows, and nothing past them."""
    rng = np.random.default_rng(count)
    K, shifts = 20, np.array([0, 3, 50, 51, 130], np.int64)
    grid = rng.standard_normal((count + shifts.max(), K)).astype(dtype)
    matrices = rng.standard_normal((shifts.size, K, channels)).astype(dtype)
    columns = np.full((kernels.COLUMN_CHUNK + shifts.max(), shifts.size * channels + 3), np.nan, dtype)  # wider: ldc
    products = np.full((count + 5, channels), np.nan, dtype)
    gemm = compiled._routines()[np.dtype(dtype)]
    kernels.few_output_products(gemm, grid, shifts, matrices, columns, count, products, dtype(1), dtype(0))
    expected = sum(grid[s:s + count].astype(np.float64) @ matrices[t].astype(np.float64) for t, s in enumerate(shifts))
    assert rel_error(products[:count], expected) < TOLERANCE[dtype]
    assert np.isnan(products[count:]).all()
