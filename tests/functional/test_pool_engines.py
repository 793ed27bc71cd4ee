"""Max pooling over tiling windows, under both engines.

With numba installed, windows that tile the input (stride = kernel, no padding or dilation: the 2x2 pools
of most CNNs) are pooled by one compiled pass forward and one backward (``functional._compiled``): a
channels-last input with each pixel's channels as the vector, an NCHW-contiguous one plane by plane
(``pool._planes``); otherwise by the NumPy code of ``pool.py``. Every case here runs under both engines
and both layouts, against the naive loops, and the two engines must agree bit for bit, NaN, infinities,
ties included.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
from reference import naive
from reference.layouts import channels_last
from stridenet.functional import max_pool2d_backward, max_pool2d_forward
from stridenet.functional._layout import is_channels_last

# (N, C, H, W), kernel: sizes that leave rows and columns no window covers, one-row windows, 1x1
CASES = {
    "2x2": ((3, 5, 8, 6), (2, 2)),
    "2x2-uncovered-edges": ((2, 4, 9, 7), (2, 2)),
    "3x3": ((2, 3, 10, 9), (3, 3)),
    "2x3": ((2, 6, 6, 8), (2, 3)),
    "1x1": ((2, 3, 4, 4), (1, 1)),
    "whole-image": ((2, 3, 4, 5), (4, 5)),
}


def _inputs(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    """ReLU-like values: many exact zeros, so most windows tie."""
    return np.maximum(np.random.default_rng(seed).standard_normal(shape), 0).astype(dtype)


def _both_engines(x: np.ndarray, kernel: tuple[int, int], dout: np.ndarray, monkeypatch):
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv("STRIDENET_NUMBA", setting)
        out, cache = max_pool2d_forward(x, kernel)
        results.append((out, max_pool2d_backward(dout, cache)))
    return results


LAYOUTS = {"channels_last": channels_last, "nchw": np.ascontiguousarray}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_tiled_max_pool_matches_the_naive_loops(name: str, dtype: type, layout: str, engine: str) -> None:
    shape, kernel = CASES[name]
    x = _inputs(shape, dtype, seed=1)
    arrange = LAYOUTS[layout]
    out, cache = max_pool2d_forward(arrange(x), kernel)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(dtype)
    dx = max_pool2d_backward(arrange(dout), cache)
    np.testing.assert_array_equal(out, naive.max_pool2d_forward(x, kernel, kernel))
    np.testing.assert_array_equal(dx, naive.max_pool2d_backward(dout, x, kernel, kernel))
    in_layout = is_channels_last if layout == "channels_last" else (lambda a: a.flags.c_contiguous)
    assert in_layout(out) and in_layout(dx) and out.dtype == dx.dtype == dtype


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", CASES)
def test_the_engines_agree_on_nan_infinities_and_signed_zeros(name: str, layout: str, monkeypatch) -> None:
    """NaN wins its window and takes its gradient (the last NaN, as PyTorch); infinite maxima and
    infinite or NaN gradients are routed, not multiplied; -0.0 and 0.0 tie and the first takes the
    gradient (the max's own sign is IEEE's choice: NumPy's SIMD max and the compiled loop may differ)."""
    monkeypatch.delenv("STRIDENET_NUMBA", raising=False)
    if not compiled.available(np.float32):
        pytest.skip("numba is not installed (pip install 'stridenet[fast]'): only one engine to compare")
    shape, kernel = CASES[name]
    x = _inputs(shape, np.float32, seed=3)
    x[0, 0, 0, 0] = np.nan
    x[0, 1, 0, :2] = np.nan
    x[1, 0, :, 0] = np.inf
    x[1, 1, 0, 0], x[1, 1, 0, 1] = -0.0, 0.0
    x[-1, -1] = -np.inf
    out_shape = (*shape[:2], shape[2] // kernel[0], shape[3] // kernel[1])
    dout = np.random.default_rng(4).standard_normal(out_shape).astype(np.float32)
    dout[0, 0, 0, 0], dout[-1, -1, -1, -1], dout[1, 0, 0, 0] = np.inf, np.nan, -np.inf
    arrange = LAYOUTS[layout]
    (out_c, dx_c), (out_n, dx_n) = _both_engines(arrange(x), kernel, arrange(dout), monkeypatch)
    np.testing.assert_array_equal(out_c, out_n)
    np.testing.assert_array_equal(dx_c, dx_n)
    assert np.isnan(out_c[0, 0, 0, 0]) and np.isnan(out_c[0, 1, 0, 0])
    if kernel[1] > 1:   # the second NaN of the row takes the window's gradient
        assert dx_c[0, 1, 0, 1] == dout[0, 1, 0, 0] and dx_c[0, 1, 0, 0] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_gradient_in_the_other_layout_and_an_nchw_input_still_pool_right(dtype: type, engine: str) -> None:
    """A gradient in the other layout than the input's, and an NCHW view that is not contiguous, pool right."""
    x = _inputs((2, 3, 6, 6), dtype, seed=5)
    dout = np.random.default_rng(6).standard_normal((2, 3, 3, 3)).astype(dtype)
    expected = naive.max_pool2d_backward(dout, x, (2, 2), (2, 2))
    wider = np.zeros((2, 3, 6, 9), dtype)
    wider[..., :6] = x
    for layout in (np.ascontiguousarray, channels_last, lambda a: wider[..., :6]):
        out, cache = max_pool2d_forward(layout(x), 2)
        np.testing.assert_array_equal(out, naive.max_pool2d_forward(x, (2, 2), (2, 2)))
        np.testing.assert_array_equal(max_pool2d_backward(dout, cache), expected)   # dout NCHW-contiguous


@pytest.mark.parametrize("name", ["2x2", "2x2-uncovered-edges", "3x3"])
def test_ranges_on_numbas_threads_match_pythons(name: str, monkeypatch) -> None:
    """The batch in ranges of an image or two (no size threshold), all pooled at once on numba's threads
    (``_compiled._native_ranges``), forward and backward: the bits of each range a Python thread's task."""
    import stridenet.functional._parallel as parallel
    monkeypatch.setenv("STRIDENET_NUMBA", "1")
    if not (compiled.available(np.float32) and compiled._threading_layer_is_safe()):
        pytest.skip("numba's threads do not run the compiled kernels here")
    shape, kernel = CASES[name]
    x = channels_last(_inputs((5, *shape[1:]), np.float32, seed=4))
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    monkeypatch.setattr(parallel, "RANGES_PER_THREAD", 2)
    results = {}
    with parallel.num_threads(2):
        assert len(parallel.image_slices(5, x.size)) == 4
        for native in (True, False):
            monkeypatch.setitem(compiled._state, "native", native)
            assert (compiled._native_ranges(parallel.image_slices(5, x.size)) is not None) is native
            out, cache = max_pool2d_forward(x, kernel)
            dout = channels_last(np.random.default_rng(5).standard_normal(out.shape).astype(np.float32))
            results[native] = (out, max_pool2d_backward(dout, cache))
    for ours, theirs in zip(results[True], results[False], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(results[True][0], naive.max_pool2d_forward(x, kernel, kernel))
