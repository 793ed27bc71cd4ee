"""Stride-1 convolution as shifted matrix products (``functional._shifted``), through the public kernels.

Every case of the table is a geometry ``_shifted.applies`` accepts (stride 1, one group, more than 8
input channels so that ``conv.py`` does not take its channel-major path, padding within D(k-1) on
each side). Each is checked against the naive loops and against the im2col path (``applies``
switched off), forward, dx, dw and db, in float32 and float64, with the input NCHW-contiguous and
channels-last; a spy on ``_shifted.forward``/``backward`` makes sure the path under test is the one
that ran. Then the variations the table does not reach: the fused ReLU, ``need_dx=False``, blocks
of one and two images (the last one partial), a batch split across two threads, a strided input
and central differences. Last, the geometries ``applies`` must refuse, where the im2col path has
to give the right numbers instead.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import pytest

import stridenet.functional._blas as blas
import stridenet.functional._compiled as compiled
import stridenet.functional._im2col as im2col
import stridenet.functional._parallel as parallel
import stridenet.functional._shifted as shifted
from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from reference.layouts import cast
from stridenet.functional import conv2d_backward, conv2d_forward, conv2d_relu_forward, relu_backward
from stridenet.functional._layout import is_channels_last
from stridenet.functional.conv import resolve_padding
from stridenet.functional.geometry import WindowAxis, pair, window_axes

needs_blas = pytest.mark.skipif(not blas.available(np.float32),
                                reason="no cblas_sgemm/cblas_dgemm in NumPy's BLAS: the shifted path never runs")

Padding = int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str


class Case(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    K: int
    kernel: tuple[int, int]
    padding: Padding
    dilation: int | tuple[int, int] = 1
    bias: bool = True
    stride: int | tuple[int, int] = 1
    groups: int = 1


CASES = {
    "3x3-pad1": Case(2, 9, 6, 6, 4, (3, 3), 1),
    "3x3-valid-no-bias": Case(2, 10, 7, 5, 3, (3, 3), 0, bias=False),
    "3x3-full-pad2": Case(2, 9, 5, 6, 3, (3, 3), 2),                        # padding D(k-1): output > input
    "3x3-asymmetric": Case(2, 9, 6, 6, 4, (3, 3), ((0, 2), (1, 1))),
    "3x3-same-string": Case(1, 11, 7, 8, 5, (3, 3), "same"),
    "2x2-same": Case(2, 9, 5, 7, 4, (2, 2), "same"),                         # ((0, 1), (0, 1))
    "2x2-valid": Case(2, 12, 6, 5, 3, (2, 2), "valid", bias=False),
    "5x5-pad2": Case(1, 12, 8, 8, 5, (5, 5), 2),
    "5x5-whole-image": Case(2, 9, 5, 5, 3, (5, 5), 0),                       # a 1x1 output
    "1x3-pad-pair": Case(2, 11, 6, 7, 3, (1, 3), (0, 1)),
    "3x1-pad-pair": Case(2, 13, 7, 6, 4, (3, 1), (1, 0)),
    "3x3-dilation2-same": Case(1, 9, 9, 9, 3, (3, 3), 2, dilation=2),
    "3x3-dilation2-asymmetric": Case(2, 10, 8, 7, 4, (3, 3), ((0, 4), (3, 1)), dilation=2, bias=False),
    "2x3-dilation-1-2": Case(2, 9, 6, 9, 3, (2, 3), ((1, 0), (0, 4)), dilation=(1, 2)),
    "3x3-more-filters": Case(1, 9, 5, 5, 16, (3, 3), 1),
    "3x3-one-filter": Case(2, 16, 12, 12, 1, (3, 3), 1),
    # whole vectors of filters (16 float32, 8 float64): the compiled engine's register tiles
    "3x3-tiles": Case(2, 12, 9, 9, 32, (3, 3), 1),
    "3x3-tiles-48-no-bias": Case(1, 16, 7, 6, 48, (3, 3), 1, bias=False),   # dx tiled too (16 channels)
    "3x3-tiles-dilation2": Case(2, 32, 8, 8, 16, (3, 3), 2, dilation=2),
    "3x3-tiles-valid": Case(2, 10, 8, 7, 16, (3, 3), 0),     # the padded gradient is not on the input's grid
    # 8-pixel tiles along rows 8 and 16 wide: spans of 3 vectors of filters (float32: 3; float64: 3 + 3,
    # and 64 filters as 2 + 2, or 3 + 3 + 2)
    "3x3-tiles-8-wide": Case(2, 16, 8, 8, 48, (3, 3), 1),
    "3x3-tiles-16-wide": Case(1, 16, 5, 16, 64, (3, 3), 1),
}
DTYPES = [np.float32, np.float64]
# largest rel_error against the naive float64 loops, and between the shifted and the im2col path
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def explicit_padding(case: Case) -> tuple[tuple[int, int], tuple[int, int]]:
    """Any padding argument as ((top, bottom), (left, right)), computed without stridenet."""
    stride, dilation = pair(case.stride, "stride"), pair(case.dilation, "dilation")
    if case.padding == "valid":
        return (0, 0), (0, 0)
    if case.padding == "same":
        return tuple(naive.tf_same_padding((case.H, case.W)[d], case.kernel[d], stride[d], dilation[d])
                     for d in range(2))  # type: ignore[return-value]
    if isinstance(case.padding, tuple) and isinstance(case.padding[0], tuple):
        return case.padding  # type: ignore[return-value]
    ph, pw = pair(case.padding, "padding")  # type: ignore[arg-type]
    return (ph, ph), (pw, pw)


def stridenet_axes(case: Case) -> tuple[WindowAxis, WindowAxis]:
    """The window geometry ``conv.py`` hands to ``_shifted.applies`` for this case."""
    stride, dilation = pair(case.stride, "stride"), pair(case.dilation, "dilation")
    padding = resolve_padding(case.padding, case.kernel, stride, dilation, (case.H, case.W))
    return window_axes((case.N, case.C, case.H, case.W), case.kernel, stride, dilation, padding)


def applies(case: Case, dtype: type) -> bool:
    return shifted.applies(stridenet_axes(case), case.groups, case.C, case.K, np.dtype(dtype))


def output_shape(case: Case) -> tuple[int, int, int, int]:
    pad, stride, dilation = explicit_padding(case), pair(case.stride, "s"), pair(case.dilation, "d")
    return (case.N, case.K, *(naive.conv_output_size((case.H, case.W)[d], case.kernel[d], stride[d], dilation[d],
                                                     *pad[d]) for d in range(2)))


def make_arrays(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x, w, b, dout in float64, every value exact in float32 (so both dtypes share one reference)."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32).astype(np.float64)

    x = draw((case.N, case.C, case.H, case.W))
    w = draw((case.K, case.C // case.groups, *case.kernel))
    b = draw((case.K,)) if case.bias else None
    return x, w, b, draw(output_shape(case))


@functools.cache
def reference(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The naive loops' out, dx, dw, db for a case of ``CASES`` (computed once per case)."""
    case = CASES[name]
    x, w, b, dout = make_arrays(case)
    pad, stride, dilation = explicit_padding(case), pair(case.stride, "s"), pair(case.dilation, "d")
    out = naive.conv2d_forward(x, w, b, stride, pad, dilation, case.groups)
    return (out, *naive.conv2d_backward(dout, x, w, stride, pad, dilation, case.groups))


def convolve(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dout: np.ndarray,
             need_dx: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """out, dx, dw, db from the public kernels."""
    out, cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    return (out, *conv2d_backward(dout, cache, need_dx=need_dx))


def assert_close(ours: np.ndarray | None, expected: np.ndarray | None, dtype: type, what: str) -> None:
    """Same shape, ``dtype``, and values within the dtype's tolerance; or both None."""
    if expected is None:
        assert ours is None, f"{what}: expected None"
        return
    assert ours is not None, f"{what}: got None"
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype} != {np.dtype(dtype)}"
    error = rel_error(ours, expected)
    assert error < TOLERANCE[dtype], f"{what}: scaled error {error:.3g} >= {TOLERANCE[dtype]:g}"


class Spy(NamedTuple):
    forward: list[int]    # images handed to each _shifted.forward call
    backward: list[int]   # ... and to each _shifted.backward call
    blocks: list[int]     # images of each block's padded input grid ("grid_x"), forward and backward alike

    def images(self) -> tuple[int, int]:
        """Images the shifted forward and backward passes went through, over all their calls."""
        return sum(self.forward), sum(self.backward)

    def clear(self) -> None:
        for calls in self:
            calls.clear()


@pytest.fixture
def spy(monkeypatch) -> Spy:
    """Records which shifted-path functions ran, on how many images, and the images of every block."""
    calls = Spy([], [], [])
    for name, record in (("forward", calls.forward), ("backward", calls.backward)):
        original = getattr(shifted, name)

        def recorded(x, *args, _original=original, _record=record, **kwargs):
            _record.append(x.shape[0])
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(shifted, name, recorded)
    bordered = shifted._bordered

    def recorded_block(name: str, values: np.ndarray, *args, **kwargs) -> np.ndarray:
        if name == "grid_x":
            calls.blocks.append(values.shape[0])
        return bordered(name, values, *args, **kwargs)

    monkeypatch.setattr(shifted, "_bordered", recorded_block)
    for name in ("forward_blocks", "backward_blocks"):   # the compiled engine: one call per pass
        original = getattr(compiled, name)

        def recorded_compiled(threads, bounds, *args, _original=original, **kwargs):
            calls.blocks.extend(np.diff(bounds).tolist())
            taken = _original(threads, bounds, *args, **kwargs)
            assert ((taken >= 0) & (taken < threads)).all(), f"blocks not taken, or by no thread: {taken}"
            return taken

        monkeypatch.setattr(compiled, name, recorded_compiled)
    return calls


@pytest.fixture(autouse=True)
def _under_both_engines(engine: str) -> None:
    """Every test here runs twice: with the blocks as NumPy and BLAS calls, and as compiled calls
    (``_compiled``; conftest's ``engine``)."""


@contextmanager
def im2col_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside the block ``_shifted.applies`` is False, so ``conv.py`` takes its im2col path."""
    with monkeypatch.context() as patch:
        patch.setattr(shifted, "applies", lambda *args, **kwargs: False)
        yield


# -- the table ----------------------------------------------------------------------------------
@needs_blas
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_shifted_convolution_matches_the_naive_loops_and_the_im2col_path(name: str, dtype: type, layout: str,
                                                                         spy: Spy, monkeypatch) -> None:
    case = CASES[name]
    assert case.C > 8 and applies(case, dtype), "the case must be one the shifted path takes"
    x, w, b, dout = cast(make_arrays(case), dtype, layout)
    got = convolve(case, x, w, b, dout)
    assert spy.images() == (case.N, case.N), "the shifted path did not run"
    assert is_channels_last(got[0]) and is_channels_last(got[1])
    for ours, expected, what in zip(got, reference(name), ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, expected if what != "db" or case.bias else None, dtype, f"{what} vs naive")

    spy.clear()
    with im2col_only(monkeypatch):
        fallback = convolve(case, x, w, b, dout)
    assert spy.images() == (0, 0), "the im2col path was not taken"
    for ours, theirs, what in zip(got, fallback, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, f"{what} vs im2col")


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", CASES)
def test_fused_relu_matches_relu_then_the_naive_loops(name: str, dtype: type, spy: Spy) -> None:
    case = CASES[name]
    x, w, b, dout = cast(make_arrays(case, seed=1), dtype)
    plain, _ = conv2d_forward(x, w, b, 1, case.padding, case.dilation)
    out, cache, mask = conv2d_relu_forward(x, w, b, 1, case.padding, case.dilation)
    np.testing.assert_array_equal(out, np.maximum(plain, 0))      # bit for bit, as the unfused pair
    np.testing.assert_array_equal(mask, plain > 0)
    assert mask.any() and not mask.all()
    x64, w64, b64, dout64 = make_arrays(case, seed=1)
    pad, dilation = explicit_padding(case), pair(case.dilation, "d")
    assert_close(out, np.maximum(naive.conv2d_forward(x64, w64, b64, (1, 1), pad, dilation), 0), dtype, "out")

    expected = naive.conv2d_backward(dout64 * mask, x64, w64, (1, 1), pad, dilation)
    for need_dx in (True, False):
        dx, dw, db = conv2d_backward(dout, cache, need_dx=need_dx, positive=mask)
        assert_close(dx, expected[0] if need_dx else None, dtype, f"dx (need_dx={need_dx})")
        assert_close(dw, expected[1], dtype, f"dw (need_dx={need_dx})")
        assert_close(db, expected[2] if case.bias else None, dtype, f"db (need_dx={need_dx})")
    assert spy.images() == (2 * case.N, 2 * case.N)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["3x3-pad1", "3x3-valid-no-bias", "3x3-asymmetric", "3x3-dilation2-asymmetric"])
def test_without_dx_the_weight_gradients_are_unchanged(name: str, dtype: type, spy: Spy) -> None:
    """``need_dx=False`` builds the gradient grid itself instead of reusing dx's padded copy."""
    case = CASES[name]
    x, w, b, dout = cast(make_arrays(case), dtype)
    full = convolve(case, x, w, b, dout)
    _, dx, dw, db = convolve(case, x, w, b, dout, need_dx=False)
    assert dx is None
    tight = {np.float32: 1e-6, np.float64: 1e-14}[dtype]
    np.testing.assert_allclose(dw, full[2], rtol=tight, atol=tight * np.abs(full[2]).max())
    if case.bias:
        np.testing.assert_allclose(db, full[3], rtol=tight, atol=tight * np.abs(full[3]).max())
    else:
        assert db is None
    assert_close(dw, reference(name)[2], dtype, "dw vs naive")
    assert spy.images() == (2 * case.N, 2 * case.N)


# -- blocks, threads, strides --------------------------------------------------------------------
def _grid_bytes(case: Case, dtype: type) -> int:
    """Bytes of one image's share of the zero-padded grid with C + K values a pixel: each row and each
    image followed by the larger of its two paddings (the padding after one is the padding before the next)."""
    (top, bottom), (left, right) = explicit_padding(case)
    return (case.H + max(top, bottom)) * (case.W + max(left, right)) * (case.C + case.K) * np.dtype(dtype).itemsize


BLOCK_CASE = Case(5, 9, 6, 5, 4, (3, 3), ((0, 2), (1, 1)))   # not 'same': backward builds a second grid
# COLS_BUDGET as a fraction of one image's padded grid (C + K values a pixel), and the images of each
# block in forward (a quarter of the budget, ``FORWARD_BUDGET_SHARE``: at most 1, 2 or 4 images a block)
# and backward (grids of 2C + 2K values: at most 1, 4 or 8): as few blocks as that allows, an even number
# where there are several (unless there are not enough images), sizes within one image of each other.
# Half a grid is the least ``applies`` accepts.
BUDGETS = {"half-a-grid": (0.5, [1] * 5, [1] * 5), "eight-grids": (8, [1, 1, 1, 2], [2, 3]),
           "sixteen-grids": (16, [2, 3], [5])}


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("budget", BUDGETS)
def test_blocks_of_a_few_images_give_the_same_numbers(budget: str, dtype: type, spy: Spy, monkeypatch) -> None:
    case = BLOCK_CASE
    fraction, forward_blocks, backward_blocks = BUDGETS[budget]
    x, w, b, dout = cast(make_arrays(case, seed=3), dtype, "channels_last")
    whole = convolve(case, x, w, b, dout)
    assert spy.blocks == [case.N, case.N], "by default the batch is one block"
    spy.clear()
    monkeypatch.setattr(im2col, "COLS_BUDGET", int(fraction * _grid_bytes(case, dtype)))
    assert applies(case, dtype)
    got = convolve(case, x, w, b, dout)
    assert spy.blocks == forward_blocks + backward_blocks
    for ours, theirs, what in zip(got, whole, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, f"{what}, blocks vs whole batch")

    x64, w64, b64, dout64 = make_arrays(case, seed=3)
    pad = explicit_padding(case)
    expected = (naive.conv2d_forward(x64, w64, b64, (1, 1), pad), *naive.conv2d_backward(dout64, x64, w64, (1, 1), pad))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, f"{what} vs naive")


def _meet_once_per_thread(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                          when: Callable[[tuple], bool] = lambda args: True) -> set[int]:
    """Each thread's first call of ``module.<name>`` (for which ``when(args)``) waits for a second thread's:
    returns the threads seen.

    With two threads the call returns only once both have taken blocks, so the split is certain (an
    implementation that stopped splitting would fail here instead of passing quietly).
    """
    both, seen = threading.Barrier(2), set()
    inner = getattr(module, name)

    def meet(*args, **kwargs):
        if when(args) and threading.get_ident() not in seen:
            seen.add(threading.get_ident())
            both.wait(timeout=10)
        return inner(*args, **kwargs)

    monkeypatch.setattr(module, name, meet)
    return seen


@needs_blas
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_batch_split_across_two_threads_gives_the_same_numbers(dtype: type, relu: bool, spy: Spy, engine: str,
                                                                 monkeypatch) -> None:
    """Blocks of one image and no size threshold: the five images are shared out between two threads, and
    every number is the one a single thread gives, to the bit. (The compiled engine's threads, Python's
    here, take blocks inside one compiled call each; the NumPy engine's blocks are tasks, each with one
    forward product and one set of weight sums.)"""
    case = BLOCK_CASE
    x, w, b, dout = cast(make_arrays(case, seed=4), dtype, "channels_last")

    def run() -> list[np.ndarray]:
        if not relu:
            return list(convolve(case, x, w, b, dout))
        out, cache, mask = conv2d_relu_forward(x, w, b, 1, case.padding)
        return [out, mask, *conv2d_backward(dout, cache, positive=mask)]

    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    monkeypatch.setattr(im2col, "COLS_BUDGET", int(BUDGETS["half-a-grid"][0] * _grid_bytes(case, dtype)))
    with parallel.num_threads(1):
        alone = run()
    assert spy.images() == (case.N, case.N)
    spy.clear()
    if engine == "compiled":   # Python's threads here (numba's: test_numba_threads_share_the_blocks)
        monkeypatch.setitem(compiled._state, "native", False)
        threads = [_meet_once_per_thread(monkeypatch, compiled, name) for name in ("forward_thread", "backward_thread")]
    else:
        forward_products = lambda args: args[5] == "shifted_out"   # noqa: E731  (not the input gradient's)
        threads = [_meet_once_per_thread(monkeypatch, shifted, "_sum_of_shifted", forward_products),
                   _meet_once_per_thread(monkeypatch, shifted, "_weight_sums")]
    with parallel.num_threads(2):
        split = run()
    assert spy.images() == (case.N, case.N)
    assert [len(seen) for seen in threads] == [2, 2], "both threads ran the forward and the backward pass"
    for ours, theirs in zip(split, alone, strict=True):   # the same blocks, summed in the same order: same bits
        np.testing.assert_array_equal(ours, theirs, err_msg="two threads vs one")

    x64, w64, b64, dout64 = make_arrays(case, seed=4)
    pad = explicit_padding(case)
    if relu:
        dout64 = dout64 * split[1]
    expected = (naive.conv2d_forward(x64, w64, b64, (1, 1), pad), *naive.conv2d_backward(dout64, x64, w64, (1, 1), pad))
    for ours, theirs, what in zip(split[:1] + split[-3:], expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, np.maximum(theirs, 0) if relu and what == "out" else theirs, dtype, f"{what} vs naive")


@needs_blas
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_numba_threads_share_the_blocks(relu: bool, engine: str, monkeypatch) -> None:
    """With numba's own threads (``_compiled.native_threads``): sixteen blocks of one image between two
    threads, both take some, every block is taken once, and the numbers are Python threads' and one
    thread's, to the bit. (Blocks of a millisecond or so: on a busy host the second thread may start
    late, and a few short blocks would all go to the first.)"""
    if engine != "compiled" or not compiled.native_threads():
        pytest.skip("numba's threads run the compiled engine's blocks only, where a thread-safe layer is there")
    case = Case(16, 64, 24, 24, 64, (3, 3), 1)
    x, w, b, dout = cast(make_arrays(case, seed=5), np.float32, "channels_last")
    taken: list[np.ndarray] = []
    for name in ("forward_blocks", "backward_blocks"):
        original = getattr(compiled, name)

        def recorded(*args, _original=original, **kwargs):
            taken.append(_original(*args, **kwargs))
            return taken[-1]

        monkeypatch.setattr(compiled, name, recorded)

    def run() -> list[np.ndarray]:
        if not relu:
            return list(convolve(case, x, w, b, dout))
        out, cache, mask = conv2d_relu_forward(x, w, b, 1, case.padding)
        return [out, mask, *conv2d_backward(dout, cache, positive=mask)]

    monkeypatch.setattr(im2col, "COLS_BUDGET", int(0.5 * _grid_bytes(case, np.float32)))
    with parallel.num_threads(1):
        alone = run()
    with parallel.num_threads(2):
        monkeypatch.setitem(compiled._state, "native", False)
        python = run()
        monkeypatch.setitem(compiled._state, "native", True)
        for _ in range(20):   # a busy machine may start the second thread late: both take blocks in most runs
            taken.clear()
            native = run()
            if all(set(t) == {0, 1} for t in taken):
                break
    assert [len(t) for t in taken] == [case.N, case.N] and all(set(t) == {0, 1} for t in taken), taken
    for ours, theirs, solo in zip(native, python, alone, strict=True):
        np.testing.assert_array_equal(ours, theirs, err_msg="numba's threads vs Python's")
        np.testing.assert_array_equal(ours, solo, err_msg="numba's threads vs one thread")


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_strided_view_as_input(dtype: type, spy: Spy) -> None:
    """Every other column and a slice of channels of a larger array: neither NCHW nor channels-last."""
    case = Case(2, 10, 6, 5, 3, (3, 3), ((1, 0), (2, 1)))
    rng = np.random.default_rng(5)
    big = rng.standard_normal((2, 13, 6, 9)).astype(dtype)
    x = big[:, 2:12, :, ::2]
    w = rng.standard_normal((3, 10, 3, 3)).astype(dtype)
    b = rng.standard_normal(3).astype(dtype)
    dout = rng.standard_normal(output_shape(case)).astype(dtype)
    out, dx, dw, db = convolve(case, x, w, b, dout)
    assert spy.images() == (2, 2)
    x64, w64, b64, dout64 = (a.astype(np.float64) for a in (x, w, b, dout))
    pad = explicit_padding(case)
    assert_close(out, naive.conv2d_forward(x64, w64, b64, (1, 1), pad), dtype, "out")
    for ours, expected, what in zip((dx, dw, db), naive.conv2d_backward(dout64, x64, w64, (1, 1), pad),
                                    ("dx", "dw", "db"), strict=True):
        assert_close(ours, expected, dtype, what)


GRADIENT_CASES = {
    "3x3-asymmetric": Case(1, 9, 4, 5, 2, (3, 3), ((0, 2), (1, 1))),
    "2x3-dilated": Case(2, 9, 5, 5, 2, (2, 3), ((1, 0), (2, 3)), dilation=(1, 2)),
}


@needs_blas
@pytest.mark.parametrize("name", GRADIENT_CASES)
def test_gradients_match_central_differences(name: str, spy: Spy) -> None:
    case = GRADIENT_CASES[name]
    assert applies(case, np.float64)
    x, w, b, _ = make_arrays(case, seed=6)
    arrays = {"x": x, "w": w, "b": b}

    def forward() -> np.ndarray:
        return conv2d_forward(x, w, b, 1, case.padding, case.dilation)[0]

    def backward(dout: np.ndarray) -> dict[str, np.ndarray]:
        cache = conv2d_forward(x, w, b, 1, case.padding, case.dilation)[1]
        return dict(zip(("x", "w", "b"), conv2d_backward(dout, cache), strict=True))

    errors = gradient_errors(forward, backward, arrays)
    assert max(errors.values()) < 1e-7, errors
    assert spy.images()[1] == case.N


# -- where the shifted path must not be taken ---------------------------------------------------
REFUSED = {
    "stride2": (Case(2, 9, 7, 6, 4, (3, 3), 1, stride=2), np.float64),
    "stride-1-2": (Case(2, 9, 6, 7, 3, (3, 3), 1, stride=(1, 2)), np.float32),
    "groups2": (Case(2, 10, 6, 6, 4, (3, 3), 1, groups=2), np.float64),
    "1x1": (Case(2, 12, 5, 5, 4, (1, 1), 0), np.float32),
    "3x3-pad3": (Case(2, 9, 5, 5, 3, (3, 3), 3), np.float64),                 # beyond D(k-1) = 2
    "3x3-bottom-pad3": (Case(2, 9, 5, 6, 3, (3, 3), ((0, 3), (1, 1))), np.float64),
    "dilation2-pad5": (Case(1, 9, 6, 6, 3, (3, 3), (1, 5), dilation=2), np.float64),   # beyond D(k-1) = 4
    "float16": (Case(2, 9, 5, 5, 3, (3, 3), 1), np.float16),
}
# the largest rel_error against the naive loops
REFUSED_TOLERANCE = {np.float16: 2e-2, **TOLERANCE}


def _assert_fallback_matches_naive(case: Case, dtype: type, spy: Spy) -> None:
    """The public kernels, on the im2col path (the spy sees no shifted call), against the naive loops."""
    x64, w64, b64, dout64 = make_arrays(case, seed=8)
    if dtype == np.float16:   # values exact in float16, as make_arrays makes them exact in float32
        x64, w64, b64, dout64 = (a.astype(np.float16).astype(np.float64) for a in (x64, w64, b64, dout64))
    x, w, b, dout = cast((x64, w64, b64, dout64), dtype)
    got = convolve(case, x, w, b, dout)
    assert spy.images() == (0, 0), "the shifted path ran where it must not"
    pad, stride, dilation = explicit_padding(case), pair(case.stride, "s"), pair(case.dilation, "d")
    expected = (naive.conv2d_forward(x64, w64, b64, stride, pad, dilation, case.groups),
                *naive.conv2d_backward(dout64, x64, w64, stride, pad, dilation, case.groups))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert ours.dtype == dtype and ours.shape == theirs.shape, what
        error = rel_error(ours, theirs)
        assert error < REFUSED_TOLERANCE[dtype], f"{what}: scaled error {error:.3g}"


@pytest.mark.parametrize("name", REFUSED)
def test_refused_geometries_take_the_im2col_path_and_stay_correct(name: str, spy: Spy) -> None:
    case, dtype = REFUSED[name]
    assert not applies(case, dtype)
    _assert_fallback_matches_naive(case, dtype, spy)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex64])
def test_applies_refuses_dtypes_without_a_gemm(dtype: type) -> None:
    assert not applies(CASES["3x3-pad1"], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_without_a_blas_the_im2col_path_stays_correct(dtype: type, spy: Spy, monkeypatch) -> None:
    case = CASES["3x3-asymmetric"]
    monkeypatch.setattr(blas, "_routines", {})
    assert not applies(case, dtype)
    _assert_fallback_matches_naive(case, dtype, spy)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
def test_an_image_too_large_for_the_budget_takes_the_im2col_path(dtype: type, spy: Spy, monkeypatch) -> None:
    """A padded grid over MAX_BUDGETS_PER_IMAGE budgets: im2col, which can cut an image into bands."""
    case = CASES["3x3-asymmetric"]
    monkeypatch.setattr(im2col, "COLS_BUDGET", 1)
    assert not applies(case, dtype)
    _assert_fallback_matches_naive(case, dtype, spy)


@needs_blas
def test_eight_channels_or_fewer_take_the_channel_major_path(spy: Spy) -> None:
    """``applies`` accepts the geometry, but conv.py's first check sends few-channel inputs elsewhere."""
    case = Case(2, 8, 6, 6, 3, (3, 3), 1)
    assert applies(case, np.float64)
    _assert_fallback_matches_naive(case, np.float64, spy)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("channels", "kernel"), [(1, (3, 3)), (3, (3, 3)), (4, (1, 3)), (8, (2, 2)), (3, (7, 7)),
                                                   (2, (5, 4)), (5, (4, 5))])
def test_few_channels_take_the_shifted_path_where_the_compiled_tiles_cover_them(channels: int, kernel: tuple[int, int],
                                                                                dtype: type, engine: str,
                                                                                spy: Spy) -> None:
    """Eight channels or fewer go to the channel-major path, except with the compiled engine where its
    tiles compute the products and the weight gradient (whole vectors of filters; a kernel of 3 x 3 or
    more, 3 taps a row and 4 channels, or 8 channels): then the shifted path, which must match the naive
    loops (its input gradient, of fewer channels than a vector, through ``few_output_products``)."""
    case = Case(2, channels, 7, 6, 16, kernel, "same")
    x64, w64, b64, dout64 = make_arrays(case, seed=9)
    got = convolve(case, *cast((x64, w64, b64, dout64), dtype, "channels_last"))
    assert spy.images() == ((case.N, case.N) if engine == "compiled" else (0, 0))
    pad = explicit_padding(case)
    expected = (naive.conv2d_forward(x64, w64, b64, (1, 1), pad, (1, 1), 1),
                *naive.conv2d_backward(dout64, x64, w64, (1, 1), pad, (1, 1), 1))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, what)


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize(("channels", "filters", "shifted_with_tiles"), [(16, 32, True), (24, 48, True),
                                                                          (16, 18, False)])
def test_a_1x1_kernel_takes_the_shifted_path_where_the_compiled_tiles_compute_it(
        channels: int, filters: int, shifted_with_tiles: bool, layout: str, dtype: type, engine: str,
        spy: Spy) -> None:
    """A 1x1 convolution is one matrix product: the im2col path reads the input's rows as its columns.
    With the compiled tiles (whole vectors of filters, 8 channels or more) it takes the shifted path,
    one tap, instead; both must give the naive loops' numbers."""
    case = Case(3, channels, 6, 7, filters, (1, 1), 0)
    x64, w64, b64, dout64 = make_arrays(case, seed=5)
    x, w, b, dout = cast((x64, w64, b64, dout64), dtype, layout)
    shifted_path = engine == "compiled" and shifted_with_tiles and compiled.tiles_enabled()
    assert conv2d_forward(x, w, b)[1].path == ("shifted" if shifted_path else "nhwc")
    spy.clear()
    got = convolve(case, x, w, b, dout)
    assert spy.backward == ([case.N] if shifted_path else []), "the shifted backward pass ran (or not)"
    expected = (naive.conv2d_forward(x64, w64, b64), *naive.conv2d_backward(dout64, x64, w64))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, dtype, what)


@needs_blas
@pytest.mark.parametrize("name", ["3x3-tiles", "3x3-tiles-48-no-bias", "3x3-tiles-valid"])
def test_without_wide_vector_registers_the_blas_computes_the_tiled_cases(name: str, engine: str, spy: Spy,
                                                                         monkeypatch) -> None:
    """On a CPU without AVX-512 or AVX2 the tiles are off (``_compiled.tiles_enabled``): the same cases, the BLAS's
    products, the same numbers to rounding."""
    monkeypatch.setitem(compiled._state, "tiles", False)
    assert compiled.pack_filters(np.ones((32, 8, 3, 3), np.float32), False, 3).size == 0
    assert not compiled.weight_tiles_apply(8, 32, 100, np.float32, (3, 3))
    case = CASES[name]
    x, w, b, dout = cast(make_arrays(case), np.float32, "channels_last")
    got = convolve(case, x, w, b, dout)
    assert spy.images() == (case.N, case.N)
    for ours, expected, what in zip(got, reference(name), ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, expected if what != "db" or case.bias else None, np.float32, f"{what} vs naive")


@needs_blas
def test_grids_reused_without_rezeroing_stay_correct(spy: Spy) -> None:
    """A thread re-zeroes a scratch grid only when its layout changes (``_shifted._bordered``): the same
    geometry with new values, another geometry in the same buffers, then the first again, all exact."""
    first, second = CASES["3x3-pad1"], CASES["3x3-asymmetric"]          # same C, H, W; other padding
    for case, seed in ((first, 1), (first, 2), (second, 3), (first, 4)):
        _assert_matches_naive_in_float64(case, seed, f"seed {seed}")
    assert spy.forward and spy.backward


def _assert_matches_naive_in_float64(case: Case, seed: int, label: str) -> None:
    """out, dx, dw, db of the channels-last float64 arrays of ``seed`` against the naive loops."""
    x, w, b, dout = make_arrays(case, seed)
    got = convolve(case, *cast((x, w, b, dout), np.float64, "channels_last"))
    pad = explicit_padding(case)
    expected = (naive.conv2d_forward(x, w, b, (1, 1), pad), *naive.conv2d_backward(dout, x, w, (1, 1), pad))
    for ours, theirs, what in zip(got, expected, ("out", "dx", "dw", "db"), strict=True):
        assert_close(ours, theirs, np.float64, f"{what}, {label}")


# -- the fused ReLU's gradient grid, the bias and the sums -------------------------------------------
@needs_blas
@pytest.mark.parametrize("need_dx", [True, False], ids=["with-dx", "without-dx"])
@pytest.mark.parametrize("name", ["3x3-pad1", "3x3-asymmetric"])
def test_non_finite_gradients_through_the_fused_relu_match_the_unfused_pass(name: str, need_dx: bool,
                                                                            spy: Spy) -> None:
    """The fused backward multiplies by the mask and checks the block's sums: an infinite gradient the
    ReLU blocks (``inf * 0`` would be NaN) and a NaN it lets through must give what ``relu_backward``
    then the convolution give."""
    case = CASES[name]
    x, w, b, _ = make_arrays(case)
    out, cache, mask = conv2d_relu_forward(x, w, b, case.stride, case.padding, case.dilation)
    dout = np.ones(out.shape)
    dout[~mask] = np.inf
    dout.flat[np.flatnonzero(mask)[0]] = np.nan                 # where the ReLU passed: NaN must reach
    fused = conv2d_backward(dout, cache, need_dx=need_dx, positive=mask)
    unfused = conv2d_backward(relu_backward(dout, mask), conv2d_forward(x, w, b, 1, case.padding)[1],
                              need_dx=need_dx)
    for ours, theirs in zip(fused, unfused, strict=True):
        if theirs is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)   # NaN where the NaN reached, in both
    assert np.isnan(fused[1]).any() and not np.isnan(fused[1]).all()
    dout[0, 0, 0, 0] = 1.0                                       # finite now: the multiply alone is exact
    dout[~mask] = 1e30
    finite = conv2d_backward(dout, cache, need_dx=need_dx, positive=mask)
    expected = conv2d_backward(np.where(mask, dout, 0.0), conv2d_forward(x, w, b, 1, case.padding)[1],
                               need_dx=need_dx)
    for ours, theirs in zip(finite, expected, strict=True):
        if theirs is not None:
            np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert spy.backward


@pytest.mark.parametrize(("rows", "width"), [(1, 4), (4095, 1), (4097, 3), (300, 32), (7, 5000), (0, 8)])
def test_fill_rows_sets_every_row_and_nothing_else(rows: int, width: int) -> None:
    """The bias copy into the products: whole tiles, then the rows left over (or a row wider than a tile)."""
    values = np.arange(1, width + 1, dtype=np.float32)
    buffer = np.full((rows + 2, width), -7.0, np.float32)
    shifted._fill_rows(buffer[1:rows + 1], values)
    np.testing.assert_array_equal(buffer[1:rows + 1], np.broadcast_to(values, (rows, width)))
    np.testing.assert_array_equal(buffer[[0, -1]], -7.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_column_sums_add_the_first_rows_in_the_grids_precision(dtype: type) -> None:
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((9000, 6)).astype(dtype)
    for count in (1, 17, 4096, 8999):
        sums = shifted._column_sums(rows, count)
        assert sums.dtype == np.float64 and sums.shape == (6,)
        exact = rows[:count].astype(np.float64).sum(axis=0)
        assert np.abs(sums - exact).max() <= (1e-4 if dtype == np.float32 else 1e-12) * np.sqrt(count)
    ones = shifted._ones(5000, dtype)
    assert ones.shape == (5000,) and not ones.flags.writeable and (ones == 1).all()


@needs_blas
def test_a_grid_the_compiled_engine_wrote_is_zeroed_again_for_the_numpy_engine(monkeypatch) -> None:
    """The NumPy engine skips re-zeroing a grid whose layout it laid out last; the compiled engine writes
    its own layout into the same scratch, so it must void that record, or the old layout's gaps would
    keep the other's values. (The test switches engines itself; under either setting of the module's
    fixture it runs the same sequence.)"""
    first, smaller = CASES["3x3-pad1"], Case(2, 9, 6, 6, 4, (3, 3), 0)   # padding 0: a smaller grid, other gaps
    for case, seed, setting in ((first, 1, "0"), (smaller, 2, "1"), (first, 3, "0")):
        monkeypatch.setenv("STRIDENET_NUMBA", setting)
        _assert_matches_naive_in_float64(case, seed, f"seed {seed}, STRIDENET_NUMBA={setting}")


@pytest.mark.parametrize("shape", [(1, 9, 3, 16), (5, 9, 20, 32), (3, 6, 17, 48), (2, 1, 1, 1)],
                         ids=["one-block", "five-blocks", "2x3-kernel-odd-channels", "1x1-kernel"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_blocks_weight_sums_are_added_in_float64_block_after_block(shape: tuple[int, int, int, int],
                                                                       dtype: type) -> None:
    """``weight_gradient``: dw[k, c, i, j] is the float64 sum of the blocks' sums for tap (i, j), block 0
    first, rounded once, to the bit (what makes the numbers the same however many threads wrote the
    blocks); the taps are row-major."""
    blocks, taps, C, K = shape
    kernel = {9: (3, 3), 6: (2, 3), 1: (1, 1)}[taps]
    rng = np.random.default_rng(7)
    sums = (rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 6, shape)).astype(dtype)
    w = np.zeros((K, C, *kernel), dtype)
    expected = np.empty(w.shape, dtype)
    for k, c, i, j in np.ndindex(*w.shape):
        total = np.float64(0.0)
        for b in range(blocks):
            total = total + np.float64(sums[b, i * kernel[1] + j, c, k])
        expected[k, c, i, j] = total
    dw = shifted.weight_gradient(sums, w)
    assert dw.dtype == dtype and dw.flags.c_contiguous
    np.testing.assert_array_equal(dw, expected)
    with parallel.num_threads(2), pytest.MonkeyPatch.context() as patch:   # input channels in ranges, however few
        patch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
        patch.setattr(parallel, "RANGES_PER_THREAD", 2)
        for native in (True, False):   # numba's threads (where the compiled engine runs on them), Python's
            patch.setitem(compiled._state, "native", native and compiled._threading_layer_is_safe())
            np.testing.assert_array_equal(shifted.weight_gradient(sums, w), expected)


@pytest.mark.parametrize(("size", "tiled", "widest"), [(8, True, 3), (3, False, 2), (14, True, 2)],
                         ids=["8x8-images", "3x3-images", "14x14-images"])
@pytest.mark.parametrize("flip", [False, True], ids=["forward", "input-gradient"])
def test_tap_matrices_are_made_only_where_a_block_needs_the_blas(size: int, tiled: bool, widest: int, flip: bool,
                                                                 engine: str) -> None:
    """``filters``: with the compiled tiles, an 8x8 image fills a tile (24 grid pixels), so no block calls
    the BLAS and the tap matrices are not made; a 3x3 image does not, so they are. The NumPy engine always
    takes the matrices. The tiles' packing spans 3 vectors of outputs for 8-pixel tiles (8x8 images), 2
    for 14-pixel ones."""
    w = np.random.default_rng(3).standard_normal((32, 32, 3, 3)).astype(np.float32)
    axes = window_axes((1, 32, size, size), (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1)))
    made = shifted.filters(w, axes, flip)
    if engine == "numpy":
        assert made.packed is None
        np.testing.assert_array_equal(made.matrices, shifted.taps(w, flip))
        return
    if not compiled.tiles_enabled():
        pytest.skip("no AVX-512 or AVX2 here: the tiles are off, the BLAS computes every block")
    np.testing.assert_array_equal(made.packed, compiled.pack_filters(w, flip, widest))
    if tiled:
        assert made.matrices is None
    else:
        np.testing.assert_array_equal(made.matrices, shifted.taps(w, flip))
