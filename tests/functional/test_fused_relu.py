"""A convolution with its ReLU fused in: the same numbers as the two kernels one after the other.

``conv2d_relu_forward`` rectifies each block of output as its product writes it, and
``conv2d_backward(..., positive=)`` takes the output gradient back through the ReLU block by block.
Both must give exactly what ``relu_forward(conv2d_forward(...))`` and
``conv2d_backward(relu_backward(dout, mask), cache)`` give, on every path the convolution has
(the stride-1 shifted products, channel-major and channels-last columns, the stride-1 shared backward,
phases, groups, 1x1), with
blocks of one row, bands of an image and whole images, and with NaN inputs and infinite gradients
where the ReLU cut them off.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._im2col as im2col
from reference import naive
from reference.gradcheck import rel_error
from reference.layouts import channels_last
from stridenet.errors import ShapeError
from stridenet.functional import (
    conv2d_backward,
    conv2d_forward,
    conv2d_relu_forward,
    relu_backward,
    relu_forward,
)
from stridenet.functional._layout import is_channels_last

# (x shape, w shape, stride, padding ((top, bottom), (left, right)), dilation, groups)
CASES = [
    ((3, 10, 7, 6), (4, 10, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),   # shifted products (im2col: small budgets)
    ((2, 2, 9, 8), (3, 2, 3, 2), (1, 1), ((2, 0), (1, 1)), (1, 1), 1),   # channel-major columns
    ((2, 3, 8, 7), (4, 3, 2, 3), (2, 3), ((1, 0), (1, 1)), (1, 2), 1),   # channel-major, strided dx
    ((2, 6, 9, 9), (4, 3, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 2),   # groups, stride-2 phases
    ((2, 12, 6, 6), (6, 12, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1),  # 1x1: the rows are the columns
    ((2, 9, 4, 5), (3, 9, 3, 3), (1, 1), ((4, 3), (0, 0)), (1, 1), 1),   # padding wider than the kernel
]
BUDGETS = [1, 300, None]   # im2col bytes per block: one row, bands of an image, the default


def _arrays(case, layout: str, dtype, seed: int = 0):
    x_shape, w_shape = case[:2]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return (channels_last(x) if layout == "channels_last" else x), w, b


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("budget", BUDGETS, ids=["rows", "bands", "default"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: f"x{case[0]}-w{case[1]}-s{case[2]}-g{case[5]}")
def test_fused_forward_and_backward_equal_the_two_kernels(case, layout, budget, dtype, monkeypatch) -> None:
    if budget is not None:
        monkeypatch.setattr(im2col, "COLS_BUDGET", budget)
    stride, padding, dilation, groups = case[2:]
    x, w, b = _arrays(case, layout, dtype)
    conv_out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    out, mask = relu_forward(conv_out)
    fused_out, fused_cache, fused_mask = conv2d_relu_forward(x, w, b, stride, padding, dilation, groups)
    np.testing.assert_array_equal(fused_out, out)
    np.testing.assert_array_equal(fused_mask, mask)
    assert is_channels_last(fused_out) and is_channels_last(fused_mask)
    assert (fused_out >= 0).all() and fused_mask.any() and not fused_mask.all()

    dout = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    for need_dx in (True, False):
        expected = conv2d_backward(relu_backward(dout, mask), cache, need_dx)
        got = conv2d_backward(dout, fused_cache, need_dx, positive=fused_mask)
        for ours, theirs in zip(got, expected, strict=True):
            if theirs is None:
                assert ours is None
            else:
                np.testing.assert_allclose(ours, theirs, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=0)
    # and against the naive loops: ReLU's gradient, then the convolution's
    masked = np.where(mask, dout, 0).astype(np.float64)
    reference = naive.conv2d_backward(masked, np.ascontiguousarray(x, np.float64), w.astype(np.float64), stride,
                                      padding, dilation, groups)
    for ours, theirs in zip(conv2d_backward(dout, fused_cache, positive=fused_mask), reference, strict=True):
        assert rel_error(ours, theirs) < (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[5], CASES[1], CASES[3]],
                         ids=["shifted", "shared", "channel-major", "phases"])
def test_infinite_gradients_where_the_relu_was_off_give_zero(case) -> None:
    """``inf * 0`` would be NaN: a gradient the ReLU blocks must vanish exactly, as in relu_backward."""
    stride, padding, dilation, groups = case[2:]
    x, w, b = _arrays(case, "nchw", np.float64, seed=2)
    x[0, 0, 0, 0] = np.nan                                     # a NaN input: NaN output, mask False
    out, cache, mask = conv2d_relu_forward(x, w, b, stride, padding, dilation, groups)
    assert np.isnan(out).any() and not mask[np.isnan(out)].any()
    dout = np.ones(out.shape)
    dout[~mask] = np.inf
    ours = conv2d_backward(dout, cache, positive=mask)
    expected = conv2d_backward(relu_backward(dout, mask), conv2d_forward(x, w, b, stride, padding, dilation,
                                                                          groups)[1])
    for a, e in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(a, e)                    # NaN where the input's NaN reached, same as unfused
    assert np.isfinite(ours[1]).any()


def test_without_the_mask_only_the_output_is_rectified() -> None:
    x, w, b = _arrays(CASES[0], "nchw", np.float32)
    out, _, mask = conv2d_relu_forward(x, w, b, padding=1, keep_mask=False)
    assert mask is None
    np.testing.assert_array_equal(out, np.maximum(conv2d_forward(x, w, b, padding=1)[0], 0))


def test_a_mask_of_the_wrong_shape_is_refused() -> None:
    x, w, b = _arrays(CASES[0], "nchw", np.float32)
    out, cache, mask = conv2d_relu_forward(x, w, b, padding=1)
    with pytest.raises(ShapeError, match=r"expected a ReLU mask of shape \(3, 4, 7, 6\) \(the output's\), "
                                         r"received \(3, 4, 7, 5\)"):
        conv2d_backward(np.ones(out.shape, np.float32), cache, positive=mask[..., :5])
