"""Pointwise convolutions on the compiled engine: a 1x1 kernel, stride 1, no padding, computed straight
from the input into the output (``_compiled_kernels.pointwise_products``, ``pointwise_weight_sums``),
with no grid and no products' scratch.

The kernels against the grid kernels they stand in for (``tiled_products``, ``tiled_weight_sums`` on
the input laid out as its grid), to the bit, and against naive float64 loops: NCHW views (one run of
pixels per image), channels-last arrays (one run for the whole block), channel slices of a wider
array, images whose pixels are not a whole number of tiles, spans of one to five vectors of
outputs, panels. Then the convolution end to end: every input layout the public API may hand over,
the fused ReLU, an input gradient whose channels are not whole vectors (the BLAS), no input gradient,
and the grids never made.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
from reference import naive
from reference.gradcheck import rel_error
from stridenet.functional import (
    conv2d_backward,
    conv2d_forward,
    conv2d_relu_forward,
    conv2d_relu_pool_forward,
    relu_backward,
)

TOLERANCE = {np.float32: 2e-6, np.float64: 1e-14}
NO_MASK4 = np.empty((0, 0, 0, 0), np.bool_)


@pytest.fixture(scope="module")
def kernels():
    if not (compiled.available(np.float32) and compiled.tiles_enabled()):
        pytest.skip("no compiled tiles here (numba missing, or no AVX-512 or AVX2): pointwise blocks never run")
    return compiled._kernels()


def lanes(dtype: type) -> int:
    return 64 // np.dtype(dtype).itemsize


def images(layout: str, shape: tuple[int, int, int, int], dtype: type, seed: int) -> np.ndarray:
    """A (B, H, W, C) view of random values: of an NCHW array, of a channels-last one, or of channels 3 to
    3 + C of a wider NCHW array (its images further apart than their pixels)."""
    B, H, W, C = shape
    rng = np.random.default_rng(seed)
    if layout == "nchw":
        return rng.standard_normal((B, C, H, W)).astype(dtype).transpose(0, 2, 3, 1)
    if layout == "channels_last":
        return rng.standard_normal(shape).astype(dtype)
    return rng.standard_normal((B, C + 5, H, W)).astype(dtype)[:, 3:3 + C].transpose(0, 2, 3, 1)


def on_grid(kernels, x: np.ndarray) -> np.ndarray:
    """x's pixels as the grid kernels read them: (pixels, C) rows, one image after another."""
    B, H, W, C = x.shape
    grid = np.empty((B * H * W, C), x.dtype)
    kernels.lay_out(x, grid, 0, W, H, NO_MASK4, np.empty(0), x.dtype.type(0))
    return grid


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice"])
@pytest.mark.parametrize(("B", "H", "W"), [(1, 2, 4), (3, 3, 5), (2, 8, 8), (2, 1, 9), (2, 9, 1)])
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rectify", [False, True])
def test_pointwise_products_are_the_grid_products_to_the_bit(kernels, dtype: type, layout: str, B: int, H: int,
                                                             W: int, vectors: int, rectify: bool) -> None:
    C, K = 13, vectors * lanes(dtype)
    x = images(layout, (B, H, W, C), dtype, seed=vectors + 10 * H)
    rng = np.random.default_rng(W)
    w = rng.standard_normal((K, C, 1, 1)).astype(dtype)
    bias = rng.standard_normal(K).astype(dtype)
    zero = dtype(0)
    widest = kernels.widest_span(H, W, W, H)
    packed = kernels.pack_filters(w, False, widest)
    assert kernels.pixel_step(x) > 0
    out = np.full((B * H * W + 2, K), 1234.5, dtype)   # two rows past the output: must stay as they are
    positive = np.zeros((B * H * W, K), np.bool_)
    kernels.pointwise_products(x, packed, widest, bias, out[:-2], rectify, positive, zero)

    count = B * H * W
    if count >= kernels.PIXEL_ROWS:   # the grid's tiles need 24 pixels; the pointwise tiles 8
        products = np.empty((count, K), dtype)
        kernels.tiled_products(on_grid(kernels, x), np.zeros(1, np.int64), packed, C, K, bias, products, B, H, W, W,
                               H, zero)
        np.testing.assert_array_equal(out[:-2], np.maximum(products, zero) if rectify else products)
    expected = x.reshape(-1, C).astype(np.float64) @ w[:, :, 0, 0].T.astype(np.float64) + bias
    if rectify:
        expected = np.maximum(expected, 0)
        np.testing.assert_array_equal(positive, out[:-2] > 0)
    else:
        assert not positive.any()
    assert rel_error(out[:-2], expected) < TOLERANCE[dtype]
    assert (out[-2:] == 1234.5).all()


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_pointwise_products_in_several_panels_and_passes(kernels, layout: str) -> None:
    """Pixels for several panels (``PANEL_BYTES``) and channels for several passes over the filters
    (``MATRIX_BYTES_PER_PASS``), 8-pixel tiles of 3 vectors: every pass added exactly once."""
    B, H, W, C, K = 3, 15, 13, 1500, 48
    assert 3 * 16 * C * 4 > kernels.MATRIX_BYTES_PER_PASS and H * W * (C + K) * 4 > kernels.PANEL_BYTES
    x = images(layout, (B, H, W, C), np.float32, seed=3)
    w = np.random.default_rng(4).standard_normal((K, C, 1, 1)).astype(np.float32)
    out = np.full((B * H * W, K), np.nan, np.float32)
    kernels.pointwise_products(x, kernels.pack_filters(w, False, 3), 3, np.empty(0, np.float32), out, False,
                               np.empty((0, 0), np.bool_), np.float32(0))
    expected = x.reshape(-1, C).astype(np.float64) @ w[:, :, 0, 0].T.astype(np.float64)
    assert rel_error(out, expected) < 1e-5


@pytest.mark.parametrize("tail", [3, 8, 11])
def test_a_last_panel_shorter_than_a_tile_is_rectified_whole(kernels, tail: int) -> None:
    """A run one panel and ``tail`` pixels long: with fewer than 8 pixels left, the last tile reaches back into
    the panel before, already rectified, and writes those outputs again; they must come out rectified."""
    C = K = 16
    panel = kernels.PANEL_BYTES // ((C + K) * 4) // kernels.POINTWISE_ROWS * kernels.POINTWISE_ROWS
    x = images("channels_last", (1, 1, panel + tail, C), np.float32, seed=tail)
    w = np.random.default_rng(tail).standard_normal((K, C, 1, 1)).astype(np.float32)
    out = np.empty((panel + tail, K), np.float32)
    positive = np.zeros(out.shape, np.bool_)
    kernels.pointwise_products(x, kernels.pack_filters(w, False, 2), 2, np.empty(0, np.float32), out, True, positive,
                               np.float32(0))
    expected = np.maximum(x.reshape(-1, C).astype(np.float64) @ w[:, :, 0, 0].T.astype(np.float64), 0)
    assert (out >= 0).all()
    np.testing.assert_array_equal(positive, out > 0)
    assert rel_error(out, expected) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "channel_slice"])
@pytest.mark.parametrize(("B", "H", "W"), [(1, 2, 4), (3, 3, 5), (2, 8, 8), (2, 8, 6)])   # (with AVX2: chunked
@pytest.mark.parametrize("vectors", [1, 2, 3, 4, 5])                                    # at other pixels here
@pytest.mark.parametrize("channels", [8, 13, 24])                                       # than on the grid)
def test_pointwise_weight_sums_are_the_grid_sums_to_the_bit(kernels, dtype: type, layout: str, B: int, H: int,
                                                            W: int, vectors: int, channels: int) -> None:
    K = vectors * lanes(dtype)
    x = images(layout, (B, H, W, channels), dtype, seed=channels + H)
    gradient = np.random.default_rng(vectors).standard_normal((B * H * W, K)).astype(dtype)
    sums = np.full((channels, K), np.nan, dtype)
    kernels.pointwise_weight_sums(x, gradient, sums, dtype(0))
    grid_sums = np.full((1, channels, K), np.nan, dtype)
    kernels.tiled_weight_sums(on_grid(kernels, x), np.zeros(1, np.int64), 1, gradient, B, H, W, W, H, grid_sums,
                              dtype(0))
    np.testing.assert_array_equal(sums, grid_sums[0])
    expected = x.reshape(-1, channels).astype(np.float64).T @ gradient.astype(np.float64)
    assert rel_error(sums, expected) < TOLERANCE[dtype]


def test_pixel_step_reads_nchw_and_channels_last_in_place_and_nothing_else(kernels) -> None:
    nchw = np.zeros((2, 5, 3, 4), np.float32)
    last = np.zeros((2, 3, 4, 5), np.float32)
    assert kernels.pixel_step(nchw.transpose(0, 2, 3, 1)) == 1
    assert kernels.pixel_step(last) == 5
    assert kernels.pixel_step(nchw[:, 1:4].transpose(0, 2, 3, 1)) == 1          # a channel slice
    assert kernels.pixel_step(np.zeros((2, 5, 6, 1), np.float32).transpose(0, 2, 3, 1)) == 1   # one column
    assert kernels.pixel_step(last[:, :, ::2]) == 10                            # every other column: one step
    assert kernels.pixel_step(last[:, :, 1:3]) == 0                             # rows further apart than pixels
    assert kernels.pixel_step(last[:, ::2]) == 0                                # every other row
    assert kernels.pixel_step(last[:, :, ::-1]) == 0                            # backwards
    assert kernels.pixel_step(np.broadcast_to(last[:1], last.shape)) == 0       # every image the same memory
    assert compiled.pixel_rows(last) is last
    assert compiled.pixel_rows(last[:, :, ::2]).base is last
    copy = compiled.pixel_rows(last[:, :, 1:3])
    assert copy.flags.c_contiguous and np.array_equal(copy, last[:, :, 1:3])


# -- end to end ---------------------------------------------------------------------------------
INPUTS = ["nchw", "channels_last", "channel_slice", "every_other_column", "column_slice"]


def public_input(layout: str, x: np.ndarray) -> np.ndarray:
    """x (N, C, H, W) as a caller may hand it over, the same values."""
    if layout == "nchw":
        return np.ascontiguousarray(x)
    if layout == "channels_last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if layout == "channel_slice":
        wider = np.zeros((x.shape[0], x.shape[1] + 4, *x.shape[2:]), x.dtype)
        wider[:, 2:2 + x.shape[1]] = x
        return wider[:, 2:2 + x.shape[1]]
    if layout == "every_other_column":   # pixels two apart: still one step through each image
        spread = np.zeros((*x.shape[:3], 2 * x.shape[3]), x.dtype)
        spread[..., ::2] = x
        return spread[..., ::2]
    wider = np.zeros((*x.shape[:3], x.shape[3] + 3), x.dtype)   # rows further apart than pixels: read a copy
    wider[..., 1:1 + x.shape[3]] = x
    return wider[..., 1:1 + x.shape[3]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", INPUTS)
@pytest.mark.parametrize(("C", "K", "H", "W"), [(16, 32, 6, 7), (24, 48, 3, 3), (12, 32, 8, 8), (40, 80, 1, 9)])
@pytest.mark.parametrize("relu", [False, True])
def test_a_pointwise_convolution_matches_the_naive_loops(kernels, dtype: type, layout: str, C: int, K: int, H: int,
                                                         W: int, relu: bool, monkeypatch) -> None:
    """Forward, dx, dw, db of a 1x1 convolution on the pointwise blocks (no grid, no products: the scratch
    handed to the blocks is empty), against the naive loops; with the fused ReLU, against the ReLU after
    them. 12 channels: dx by the BLAS (not whole vectors); 1x9 images: 9 pixels, one tile and an overlap."""
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    rng = np.random.default_rng(C + H)
    x64 = rng.standard_normal((3, C, H, W)).astype(np.float32).astype(np.float64)
    w64 = rng.standard_normal((K, C, 1, 1)).astype(np.float32).astype(np.float64)
    b64 = rng.standard_normal(K).astype(np.float32).astype(np.float64)
    dout64 = rng.standard_normal((3, K, H, W)).astype(np.float32).astype(np.float64)
    x, w, b, dout = (public_input(layout, x64.astype(dtype)), w64.astype(dtype), b64.astype(dtype),
                     dout64.astype(dtype))
    scratch = []
    for name in ("forward_blocks", "backward_blocks"):
        original = getattr(compiled, name)

        def recorded(*args, _original=original, _name=name, **kwargs):
            scratch.append(args[3] if _name == "forward_blocks" else args[6])   # the grids (a tuple backward)
            return _original(*args, **kwargs)

        monkeypatch.setattr(compiled, name, recorded)
    if relu:
        out, cache, positive = conv2d_relu_forward(x, w, b)
        dx, dw, db = conv2d_backward(dout, cache, positive=positive)
        expected_out = np.maximum(naive.conv2d_forward(x64, w64, b64), 0)
        dout64 = relu_backward(dout64, expected_out > 0)
    else:
        out, cache = conv2d_forward(x, w, b)
        dx, dw, db = conv2d_backward(dout, cache)
        expected_out = naive.conv2d_forward(x64, w64, b64)
    assert cache.path == "shifted"
    assert len(scratch) == 2 and scratch[0].size == 0 and all(grid.size == 0 for grid in scratch[1])
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for ours, theirs in zip((out, dx, dw, db), (expected_out, *naive.conv2d_backward(dout64, x64, w64)), strict=True):
        assert ours.dtype == dtype and ours.shape == theirs.shape
        assert rel_error(ours, theirs) < tolerance


def float32_arrays(seed: int, shape: tuple[int, int, int, int], filters: int) -> tuple[np.ndarray, ...]:
    """x (shape), 1x1 filters, bias and an output gradient for a pointwise convolution, random float32."""
    rng = np.random.default_rng(seed)
    N, C, H, W = shape
    return tuple(rng.standard_normal(size).astype(np.float32)
                 for size in (shape, (filters, C, 1, 1), (filters,), (N, filters, H, W)))


def test_every_input_layout_gives_the_same_bits(kernels, monkeypatch) -> None:
    """Runs per image (NCHW, a channel slice) or one per block (channels-last, a copy): the same sums."""
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    x, w, b, dout = float32_arrays(9, (4, 32, 5, 6), 48)
    results = []
    for layout in INPUTS:
        out, cache, positive = conv2d_relu_forward(public_input(layout, x), w, b)
        results.append((out, *conv2d_backward(dout, cache, positive=positive)))
    for other in results[1:]:
        for ours, theirs in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_without_dx_the_weight_gradients_are_unchanged(kernels, monkeypatch) -> None:
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    x, w, _, dout = float32_arrays(2, (5, 16, 4, 4), 32)
    cache = conv2d_forward(x, w, None)[1]
    _, dw, db = conv2d_backward(dout, cache)
    none, dw_alone, db_alone = conv2d_backward(dout, cache, need_dx=False)
    assert none is None and db is None and db_alone is None
    np.testing.assert_array_equal(dw, dw_alone)


def test_a_pooled_pointwise_convolution_takes_the_grid_and_matches_the_steps(kernels, monkeypatch) -> None:
    """Inference's conv -> ReLU -> pool in one pass keeps the grid's products (the pool reads them)."""
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    x, w, b, _ = float32_arrays(6, (3, 16, 8, 6), 32)
    pooled = conv2d_relu_pool_forward(x, w, b, (2, 2))
    steps = np.maximum(conv2d_forward(x, w, b)[0], 0).reshape(3, 32, 4, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(pooled, steps)


def test_images_of_fewer_pixels_than_a_tile_keep_the_grid(kernels, monkeypatch) -> None:
    """1 x 3 images: fewer pixels than a pointwise tile; the blocks lay out the grid as for any kernel."""
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 16, 1, 3))
    w = rng.standard_normal((32, 16, 1, 1))
    b = rng.standard_normal(32)
    dout = rng.standard_normal((5, 32, 1, 3))
    grids = []
    original = compiled.forward_blocks

    def recorded(*args, **kwargs):
        grids.append(args[3])
        return original(*args, **kwargs)

    monkeypatch.setattr(compiled, "forward_blocks", recorded)
    out, cache = conv2d_forward(x, w, b)
    dx, dw, db = conv2d_backward(dout, cache)
    assert grids[0].size > 0
    for ours, theirs in zip((out, dx, dw, db), (naive.conv2d_forward(x, w, b), *naive.conv2d_backward(dout, x, w)),
                            strict=True):
        assert rel_error(ours, theirs) < 1e-12
