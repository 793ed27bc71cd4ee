"""Strided convolution on the stride phases (``functional._phases``), through the public kernels.

Each case of the table is a geometry ``_phases.applies`` accepts with the compiled engine's tiles
(stride above 1 on at least one axis, dilation 1, one group, 8 input channels or more, whole vectors
of filters): out, dx, dw and db against the naive loops and against the im2col path (``applies``
switched off), float32 and float64, NCHW and channels-last input, with a spy making sure the phases
ran. Then the fused ReLU and its mask, blocks and a batch split across two threads (the same bits),
the phases' layout itself, and the geometries and engines that must not take this path.
"""

from __future__ import annotations

import itertools
import threading
from typing import NamedTuple

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
import stridenet.functional._im2col as im2col
import stridenet.functional._parallel as parallel
import stridenet.functional._phases as phases
import stridenet.functional.conv as conv
from reference import naive
from reference.gradcheck import rel_error
from reference.layouts import cast
from stridenet.functional import conv2d_backward, conv2d_forward, conv2d_relu_forward
from stridenet.functional.geometry import pair, window_axes

TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]


class Case(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    K: int
    kernel: tuple[int, int]
    stride: int | tuple[int, int]
    padding: int | tuple[tuple[int, int], tuple[int, int]]
    bias: bool = True

    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if isinstance(self.padding, int):
            return (self.padding, self.padding), (self.padding, self.padding)
        return self.padding

    def out_shape(self) -> tuple[int, int, int, int]:
        stride = pair(self.stride, "stride")
        return (self.N, self.K, *(naive.conv_output_size((self.H, self.W)[d], self.kernel[d], stride[d], 1,
                                                         *self.pads()[d]) for d in range(2)))


CASES = {
    "3x3-s2-pad1-odd": Case(3, 16, 9, 10, 32, (3, 3), 2, 1),          # floor: the last column never read
    "3x3-s2-valid": Case(2, 8, 8, 8, 16, (3, 3), 2, 0, bias=False),
    "3x3-s2-8x8-out-48": Case(2, 32, 16, 16, 48, (3, 3), 2, 1),       # 8-pixel tiles x 3 vectors (float32);
    # dx phases of 32 channels: stride-1 convolutions on the tiles too
    "1x1-s2": Case(2, 8, 7, 7, 16, (1, 1), 2, 0),                      # one phase of four read
    "2x2-s2": Case(2, 9, 8, 6, 16, (2, 2), 2, 0),                      # each tap its own phase
    "5x5-s2-pad2": Case(1, 10, 11, 9, 16, (5, 5), 2, 2),
    "3x3-s3": Case(2, 8, 11, 11, 16, (3, 3), 3, 1),                    # nine phases
    "3x3-s2x1": Case(2, 8, 8, 9, 32, (3, 3), (2, 1), 1),               # strided along one axis only
    "3x3-s2-asymmetric": Case(2, 8, 9, 8, 16, (3, 3), 2, ((0, 1), (1, 0))),
    "3x3-s2-tiny-images": Case(3, 8, 4, 4, 16, (3, 3), 2, 1),          # 2x2 outputs: too few for a tile
}


def make_arrays(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x, w, b, dout in float64, every value exact in float32."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32).astype(np.float64)

    return (draw((case.N, case.C, case.H, case.W)), draw((case.K, case.C, *case.kernel)),
            draw((case.K,)) if case.bias else None, draw(case.out_shape()))


def assert_close(ours: np.ndarray | None, expected: np.ndarray | None, dtype: type, what: str) -> None:
    if expected is None:
        assert ours is None, f"{what}: expected None"
        return
    assert ours is not None and ours.shape == expected.shape and ours.dtype == dtype, what
    error = rel_error(ours, expected)
    assert error < TOLERANCE[dtype], f"{what}: scaled error {error:.3g}"


def axes_of(case: Case):
    stride = pair(case.stride, "stride")
    return window_axes((case.N, case.C, case.H, case.W), case.kernel, stride, (1, 1), case.pads())


@pytest.fixture
def tiles(monkeypatch) -> None:
    """The compiled engine, with its tiles: what this path needs."""
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    if not compiled.available(np.float32):
        pytest.skip("numba is not installed (pip install 'stridenet[fast]'): the phases never run")
    if not compiled.tiles_enabled():
        pytest.skip("no AVX-512 or AVX2 here: the tiles are off, and strided convolutions take the im2col path")


@pytest.fixture
def calls(monkeypatch) -> dict[str, list[int]]:
    """Images handed to each ``_phases.forward`` and ``_phases.backward`` call."""
    seen: dict[str, list[int]] = {"forward": [], "backward": []}
    for name in seen:
        original = getattr(phases, name)

        def recorded(x, *args, _original=original, _name=name, **kwargs):
            seen[_name].append(x.shape[0])
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(phases, name, recorded)
    return seen


def convolve(case: Case, x, w, b, dout, need_dx: bool = True):
    out, cache = conv2d_forward(x, w, b, case.stride, case.padding)
    return (out, *conv2d_backward(dout, cache, need_dx=need_dx))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_phases_match_the_naive_loops_and_the_im2col_path(name: str, dtype: type, layout: str, tiles,
                                                          calls, monkeypatch) -> None:
    case = CASES[name]
    assert phases.applies(axes_of(case), 1, case.C, case.K, np.dtype(dtype)), "a case the phases must take"
    x, w, b, dout = cast(make_arrays(case), dtype, layout)
    got = convolve(case, x, w, b, dout)
    assert sum(calls["forward"]) == case.N and sum(calls["backward"]) == case.N, "the phases did not run"
    x64, w64, b64, dout64 = make_arrays(case)
    stride = pair(case.stride, "stride")
    expected = (naive.conv2d_forward(x64, w64, b64, stride, case.pads()),
                *naive.conv2d_backward(dout64, x64, w64, stride, case.pads()))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs if what != "db" or case.bias else None, dtype, f"{what} vs naive")

    with monkeypatch.context() as patch:
        patch.setattr(phases, "applies", lambda *args, **kwargs: False)
        fallback = convolve(case, x, w, b, dout)
    assert sum(calls["forward"]) == case.N, "the im2col path was not taken"
    for ours, theirs, what in zip(got, fallback, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, f"{what} vs im2col")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["3x3-s2-pad1-odd", "2x2-s2", "3x3-s2x1"])
def test_fused_relu_and_its_mask(name: str, dtype: type, tiles, calls) -> None:
    """``conv2d_relu_forward`` rectifies in the blocks (bit for bit the unfused pair's), and the backward
    pass takes the output gradient through the mask, with and without ``dx``."""
    case = CASES[name]
    x, w, b, dout = cast(make_arrays(case, seed=1), dtype)
    plain, _ = conv2d_forward(x, w, b, case.stride, case.padding)
    out, cache, mask = conv2d_relu_forward(x, w, b, case.stride, case.padding)
    np.testing.assert_array_equal(out, np.maximum(plain, 0))
    np.testing.assert_array_equal(mask, plain > 0)
    assert mask.any() and not mask.all()
    x64, w64, _, dout64 = make_arrays(case, seed=1)
    expected = naive.conv2d_backward(dout64 * mask, x64, w64, pair(case.stride, "stride"), case.pads())
    for need_dx in (True, False):
        dx, dw, db = conv2d_backward(dout, cache, need_dx=need_dx, positive=mask)
        assert_close(dx, expected[0] if need_dx else None, dtype, f"dx (need_dx={need_dx})")
        assert_close(dw, expected[1], dtype, f"dw (need_dx={need_dx})")
        assert_close(db, expected[2], dtype, f"db (need_dx={need_dx})")
    assert calls["forward"] and calls["backward"]


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_blocks_and_two_threads_give_the_same_numbers(dtype: type, relu: bool, tiles, calls, monkeypatch) -> None:
    """A budget of two images a block: four blocks of 1, 1, 1 and 2 images (on grids laid out for two:
    the phases of a block of one lie as far apart as a block of two's), shared by two threads, the same
    bits as one thread, and the whole batch's numbers to rounding; with and without the fused ReLU."""
    case = Case(5, 8, 9, 9, 16, (3, 3), 2, 1)
    x, w, b, dout = cast(make_arrays(case, seed=2), dtype, "channels_last")

    def run() -> list[np.ndarray]:
        if not relu:
            return list(convolve(case, x, w, b, dout))
        out, cache, mask = conv2d_relu_forward(x, w, b, case.stride, case.padding)
        return [out, mask, *conv2d_backward(dout, cache, positive=mask)]

    whole = run()
    assert calls["forward"] == [case.N] and calls["backward"] == [case.N], "by default one block"
    monkeypatch.setattr(im2col, "COLS_BUDGET", 2 * phases._image_bytes(axes_of(case), case.C, case.K, x.itemsize))
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    blocks = phases.blocks(case.N, axes_of(case), case.C, case.K, x.itemsize)
    assert [s.stop - s.start for s in blocks] == [1, 1, 1, 2]
    with parallel.num_threads(1):
        alone = run()
    monkeypatch.setitem(compiled._state, "native", False)   # Python's threads, which can wait for each other
    threads = {name: set() for name in ("forward_thread", "backward_thread")}
    both = {name: threading.Barrier(2) for name in threads}
    inner = {name: getattr(compiled, name) for name in threads}
    for name in threads:   # each thread's call waits for the other's: the split is certain
        def meet(*args, _name=name, **kwargs):
            threads[_name].add(threading.get_ident())
            both[_name].wait(timeout=10)
            return inner[_name](*args, **kwargs)

        monkeypatch.setattr(compiled, name, meet)
    with parallel.num_threads(2):
        split = run()
    assert [len(seen) for seen in threads.values()] == [2, 2], "both threads took blocks"
    if compiled._threading_layer_is_safe():   # and numba's threads (no Python per thread): the same bits
        monkeypatch.setitem(compiled._state, "native", True)
        with parallel.num_threads(2):
            for ours, theirs in zip(run(), split, strict=True):
                np.testing.assert_array_equal(ours, theirs, err_msg="numba's threads vs Python's")
    for ours, theirs, solo in zip(split, alone, whole, strict=True):
        np.testing.assert_array_equal(ours, theirs, err_msg="two threads vs one")
        assert_close(ours, solo, dtype, "blocks vs the whole batch") if ours.dtype != bool else \
            np.testing.assert_array_equal(ours, solo)


@pytest.mark.parametrize("stride", [(2, 2), (3, 2), (2, 1)])
@pytest.mark.parametrize("pads", [(1, 1), (0, 2)])
def test_the_phases_hold_every_strided_row_and_column_of_the_padded_images(kernels, stride, pads) -> None:
    """``lay_out_phases``: phase (a, c) of image b, at (r, q), is the zero-padded input at (S*r + a, S*q + c),
    zero outside it; phases one after another."""
    B, H, W, C, width, rows = 2, 7, 6, 3, 5, 4
    x = np.random.default_rng(0).standard_normal((B, H, W, C)).astype(np.float32)
    (sh, sw), (top, left) = stride, pads
    grid = np.full((sh * sw * B * rows * width, C), np.nan, np.float32)
    kernels.lay_out_phases(x, grid, sh, sw, top, left, width, rows, B * rows * width, np.float32(0))
    padded = np.zeros((B, rows * sh + top + H, width * sw + left + W, C), np.float32)
    padded[:, top:top + H, left:left + W] = x
    expected = [padded[:, a::sh, c::sw][:, :rows, :width] for a in range(sh) for c in range(sw)]
    np.testing.assert_array_equal(grid.reshape(sh * sw, B, rows, width, C), np.stack(expected))


@pytest.fixture
def kernels(tiles):
    return compiled._kernels()


@pytest.mark.parametrize(("C", "K", "kernel", "stride", "dilation", "groups", "expected"), [
    (8, 16, (3, 3), (2, 2), (1, 1), 1, "phases"),
    (96, 96, (3, 3), (2, 2), (1, 1), 1, "phases"),
    (8, 32, (1, 1), (2, 2), (1, 1), 1, "phases"),
    (3, 16, (2, 2), (2, 2), (1, 1), 1, "cm"),        # too few channels for the weight-gradient tiles
    (16, 20, (3, 3), (2, 2), (1, 1), 1, "nhwc"),     # filters not whole vectors
    (16, 16, (3, 3), (2, 2), (2, 2), 1, "nhwc"),     # dilated
    (16, 16, (3, 3), (2, 2), (1, 1), 2, "nhwc"),     # grouped
    (8, 16, (3, 3), (1, 1), (1, 1), 1, "shifted"),   # stride 1
])
def test_which_convolutions_take_the_phases(C, K, kernel, stride, dilation, groups, expected, tiles) -> None:
    x = np.zeros((2, C, 12, 12), np.float32)
    w = np.zeros((K, C // groups, *kernel), np.float32)
    axes = window_axes(x.shape, kernel, stride, dilation, ((1, 1), (1, 1)))
    assert conv._path(x, w, axes, groups) == expected


def test_the_numpy_engine_keeps_the_im2col_path(monkeypatch) -> None:
    monkeypatch.setenv("STRIDENET_NUMBA", "0")
    axes = window_axes((2, 8, 12, 12), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1)))
    assert not phases.applies(axes, 1, 8, 16, np.dtype(np.float32))


def test_every_phase_of_the_input_gradient_fits_one_grid() -> None:
    """What the compiled input gradient relies on, over every small geometry (paddings up to k + 1): on the
    output gradient's grid (``_gradient_geometry``), each phase's outputs fit within an image's rows and
    columns, and each tap of each phase reads inside the grid, before the next image's rows."""
    for size, k, stride in itertools.product(range(1, 16), range(1, 7), range(2, 5)):
        for pad_lo, pad_hi in itertools.product(range(k + 2), repeat=2):
            if size + pad_lo + pad_hi < k:
                continue
            axes = window_axes((1, 8, size, size + 1), (k, k), (stride, stride), (1, 1),
                               ((pad_lo, pad_hi), (pad_hi, pad_lo)))
            layout, phases_h, phases_w = phases._gradient_geometry(axes)
            for (_, taps_h, a), (_, taps_w, b) in itertools.product(phases_h, phases_w):
                if not (taps_h and taps_w):
                    continue
                assert a.out <= layout.rows_per_image and b.out <= layout.width
                shifts = layout.shifts((a, b))
                last = (a.out - 1) * layout.width + b.out - 1   # the first image's last output
                assert min(shifts) >= 0, "a tap reads before the grid"
                assert last + max(shifts) < layout.pixels(1), "a tap reads past the image's rows"
