"""The fast kernels' own paths: im2col blocks and bands, layouts, scratch buffers, phases, pooling shortcuts.

The public-API tests cover the maths over random shapes; these pin down the implementation choices
that those shapes may not reach: a column budget small enough to force several images per block or
bands of rows inside one image, channels-last inputs and gradients, the stride > 1 input gradient
("phases"), the channel-major path of few-channel inputs, and max pooling's tiled shortcut with ties.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._im2col as im2col
from reference import naive
from reference.gradcheck import rel_error
from reference.layouts import channels_last
from stridenet.functional import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    conv2d_backward,
    conv2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    relu_backward,
    relu_forward,
)
from stridenet.functional._layout import is_channels_last

# (x shape, w shape, stride, padding ((top, bottom), (left, right)), dilation, groups)
# More than CM_MAX_CHANNELS (8) input channels per group take the channels-last path.
CONV_CASES = [
    ((3, 10, 7, 6), (4, 10, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),    # channels-last columns
    ((2, 2, 9, 8), (3, 2, 3, 2), (1, 1), ((2, 0), (1, 1)), (1, 1), 1),      # channel-major columns
    ((2, 3, 8, 7), (4, 3, 2, 3), (2, 3), ((1, 0), (1, 1)), (1, 2), 1),      # channel-major, strided dx
    ((2, 6, 9, 9), (4, 3, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 2),      # groups, stride-2 phases
    ((2, 9, 11, 10), (3, 9, 3, 3), (3, 2), ((0, 2), (1, 0)), (2, 1), 1),    # stride 3 with dilation 2
    ((2, 12, 6, 6), (6, 12, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),    # 1x1: no im2col at all
    ((2, 12, 6, 6), (6, 4, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 3),     # 1x1 with groups
    ((2, 9, 5, 5), (3, 9, 2, 2), (3, 3), ((0, 0), (0, 0)), (1, 1), 1),      # phases that no tap reaches
    ((2, 9, 4, 5), (3, 9, 3, 3), (1, 1), ((4, 3), (0, 0)), (1, 1), 1),      # padding wider than the kernel
]
# bytes of im2col columns per block: one row at a time, part of an image, the default
BUDGETS = [1, 300, None]


@pytest.mark.parametrize("budget", BUDGETS, ids=["rows", "bands", "default"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda case: f"x{case[0]}-w{case[1]}-s{case[2]}-g{case[5]}")
def test_conv_blocks_match_the_naive_kernel(case, layout, budget, monkeypatch) -> None:
    if budget is not None:
        monkeypatch.setattr(im2col, "COLS_BUDGET", budget)
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    if layout == "channels_last":
        x = channels_last(x)
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout if layout == "nchw" else channels_last(dout), cache)
    expected = naive.conv2d_backward(dout, np.ascontiguousarray(x), w, stride, padding, dilation, groups)
    assert rel_error(out, naive.conv2d_forward(np.ascontiguousarray(x), w, b, stride, padding, dilation,
                                               groups)) < 1e-12
    for ours, theirs in zip((dx, dw, db), expected, strict=True):
        assert rel_error(ours, theirs) < 1e-12


@pytest.mark.parametrize("channels", [3, 12])
def test_conv_output_is_channels_last_and_owns_its_memory(channels: int) -> None:
    """The output is a fresh array (not a view of a reused buffer) laid out channels-last; dx keeps
    the layout each path works in (channel-major for few channels)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, channels, 8, 8)).astype(np.float32)
    w = rng.standard_normal((5, channels, 3, 3)).astype(np.float32)
    out, cache = conv2d_forward(x, w, None, padding=1)
    first = out.copy()
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    conv2d_forward(x * 2, w, None, padding=1)          # reuses the scratch buffers
    assert np.array_equal(out, first)
    assert is_channels_last(out) and is_channels_last(dx) == (channels > 8)
    assert out.dtype == dx.dtype == dw.dtype == np.float32 and db is None


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_conv_without_input_gradient(channels: int) -> None:
    """``need_dx=False`` (a first layer) skips dx and leaves dw and db unchanged."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, channels, 7, 7))
    w = rng.standard_normal((4, channels, 3, 3))
    out, cache = conv2d_forward(x, w, np.zeros(4), padding=1)
    dout = rng.standard_normal(out.shape)
    full = conv2d_backward(dout, cache)
    dx, dw, db = conv2d_backward(dout, cache, need_dx=False)
    assert dx is None
    assert np.array_equal(dw, full[1]) and np.array_equal(db, full[2])


def test_conv_keeps_the_input_not_its_columns() -> None:
    """The cache holds the input (a view, no copy for channels-last input), never the im2col matrix."""
    x = channels_last(np.random.default_rng(3).standard_normal((4, 16, 10, 10)).astype(np.float32))
    _, cache = conv2d_forward(x, np.ones((8, 16, 3, 3), np.float32), None, padding=1)
    arrays = [value for value in cache if isinstance(value, np.ndarray)]
    assert sum(a.nbytes for a in arrays if a.base is None) <= x.nbytes  # no 9x-sized matrix
    assert np.shares_memory(cache.x, x)


def test_blocks_cover_every_output_row_once() -> None:
    for N, H_out, row_bytes, budget in [(5, 4, 10, 100), (3, 7, 50, 120), (2, 3, 1000, 10), (4, 1, 8, 8)]:
        seen = []
        for n0, n1, parts in im2col.blocks(N, H_out, row_bytes, budget):
            assert all(n0 <= a and b <= n1 for a, b, _, _ in parts)
            for a, b, h0, h1 in parts:
                assert (b - a) * (h1 - h0) * row_bytes <= budget or (b - a == 1 and h1 - h0 == 1)
                seen += [(n, h) for n in range(a, b) for h in range(h0, h1)]
        assert sorted(seen) == [(n, h) for n in range(N) for h in range(H_out)]


# -- pooling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
@pytest.mark.parametrize("kernel", [2, 3])
@pytest.mark.parametrize("dout_layout", ["nchw", "channels_last"])
def test_max_pool_tiled_path_routes_ties_to_the_first_maximum(size, kernel, dout_layout) -> None:
    """Channels-last input with stride = kernel takes the reshaped path; after a ReLU many windows
    are all zeros, and the first tap (row-major) must get the whole gradient."""
    rng = np.random.default_rng(4)
    x = np.maximum(np.round(rng.standard_normal((2, 5, *size))), 0)
    out, cache = max_pool2d_forward(channels_last(x), kernel)
    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout if dout_layout == "nchw" else channels_last(dout), cache)
    assert is_channels_last(out) and is_channels_last(dx)
    assert np.array_equal(out, naive.max_pool2d_forward(x, (kernel,) * 2, (kernel,) * 2))
    assert np.array_equal(dx, naive.max_pool2d_backward(dout, x, (kernel,) * 2, (kernel,) * 2))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("args", [(3, 2, 1), (2, 1, 0), (3, 3, 1)])
def test_max_pool_general_path_with_ties(layout, args) -> None:
    kernel, stride, padding = args
    rng = np.random.default_rng(5)
    x = np.maximum(np.round(rng.standard_normal((2, 3, 7, 6))), 0)
    out, cache = max_pool2d_forward(x if layout == "nchw" else channels_last(x), kernel, stride, padding)
    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    pair = (kernel, kernel), (stride, stride), (padding, padding)
    assert np.array_equal(out, naive.max_pool2d_forward(x, *pair))
    assert rel_error(dx, naive.max_pool2d_backward(dout, x, *pair)) < 1e-15


def test_max_pool_non_finite_gradients_stay_in_their_window() -> None:
    """An inf or NaN gradient goes to the maximum only (a 0/1 mask would spread NaN over the window)."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    for layout in (np.ascontiguousarray, channels_last):
        cache = max_pool2d_forward(layout(x), 2)[1]
        dout = np.array([[[[np.inf, np.nan], [1.0, -np.inf]]]])
        dx = max_pool2d_backward(dout, cache)
        expected = np.zeros((4, 4))
        expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = np.inf, np.nan, 1.0, -np.inf
        assert np.array_equal(dx[0, 0], expected, equal_nan=True)


def test_max_pool_nan_input_takes_the_gradient() -> None:
    """A NaN is the max of its window (it propagates) and gets the window's gradient, as in PyTorch."""
    x = np.array([[[[1.0, np.nan], [5.0, 2.0]]]])
    out, cache = max_pool2d_forward(x, 2)
    assert np.isnan(out[0, 0, 0, 0])
    assert np.array_equal(max_pool2d_backward(np.ones((1, 1, 1, 1)), cache)[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_ceil_mode_window_past_the_input_end() -> None:
    """A dilated window that starts inside the input but reaches past its end still counts (PyTorch)."""
    x = np.arange(4.0).reshape(1, 1, 4, 1)
    out, _ = max_pool2d_forward(x, (3, 1), stride=(3, 1), dilation=(2, 1), ceil_mode=True)
    assert out.shape == (1, 1, 1, 1) and out[0, 0, 0, 0] == 2.0


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_avg_pool_keeps_the_layout(layout) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    x_in = x if layout == "nchw" else channels_last(x)
    out, cache = avg_pool2d_forward(x_in, 3, 2, 1)
    dx = avg_pool2d_backward(np.ones(out.shape, np.float32), cache)
    assert is_channels_last(out) == is_channels_last(dx) == (layout == "channels_last")
    assert rel_error(out, naive.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1))) < 1e-6


def test_relu_backward_with_non_finite_or_huge_gradients_is_exact() -> None:
    """Where the input was negative the gradient is 0 even for an infinite or NaN output gradient (as
    PyTorch); gradients whose sum overflows float32 take the exact slow path and lose nothing."""
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    _, positive = relu_forward(x)
    dx = relu_backward(np.array([[np.inf, np.nan, np.nan, -np.inf]], np.float32), positive)
    assert np.array_equal(dx, [[0.0, np.nan, 0.0, -np.inf]], equal_nan=True)
    huge = np.full((1, 4), 3e38, np.float32)
    assert np.array_equal(relu_backward(huge, positive), huge * positive)


def test_max_pool_backward_with_infinite_maxima_and_huge_gradients() -> None:
    """+inf maxima still route by the mask; a gradient sum that overflows takes the general rule."""
    x = np.array([[[[np.inf, 1.0], [2.0, 3.0]]], [[[0.0, -1.0], [-np.inf, 5.0]]]], np.float32)
    for layout in (np.ascontiguousarray, channels_last):
        out, cache = max_pool2d_forward(layout(x), 2)
        assert out.ravel().tolist() == [np.inf, 5.0]
        at_max = np.zeros((2, 1, 2, 2), np.float32)
        at_max[0, 0, 0, 0] = at_max[1, 0, 1, 1] = 1
        for value in (1.0, 3e38):
            dx = max_pool2d_backward(np.full((2, 1, 1, 1), value, np.float32), cache)
            assert np.array_equal(dx, at_max * np.float32(value))


def test_relu_without_the_mask_gives_the_same_output() -> None:
    """Inference (``no_grad``) asks for no mask: the output is the same, and nothing else is computed."""
    x = channels_last(np.random.default_rng(7).standard_normal((2, 3, 4, 5)).astype(np.float32))
    out, mask = relu_forward(x, keep_mask=False)
    assert mask is None
    np.testing.assert_array_equal(out, relu_forward(x)[0])
    assert is_channels_last(out)
