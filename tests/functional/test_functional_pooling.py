"""Max, average and global average pooling three ways: naive loops, central differences, PyTorch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from stridenet.functional import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

PARITY_SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


class PoolCase(NamedTuple):
    x_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False
    count_include_pad: bool = True

    def max_args(self) -> tuple:
        return self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode

    def avg_args(self) -> tuple:
        return self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad

    def out_shape(self) -> tuple[int, int, int, int]:
        return (*self.x_shape[:2], *(naive.pool_output_size(self.x_shape[2 + d], self.kernel[d], self.stride[d],
                                                            self.padding[d], self.dilation[d], self.ceil_mode)
                                     for d in range(2)))


MAX_CASES = {
    "2x2": PoolCase((2, 3, 8, 8), (2, 2), (2, 2)),
    "3x3-s2-overlapping": PoolCase((1, 2, 7, 7), (3, 3), (2, 2)),
    "3x3-s1-pad1": PoolCase((1, 2, 5, 6), (3, 3), (1, 1), (1, 1)),
    "rect-pad": PoolCase((1, 2, 7, 9), (2, 3), (1, 2), (1, 1)),
    "ceil": PoolCase((1, 2, 7, 7), (2, 2), (2, 2), ceil_mode=True),
    "ceil-pad": PoolCase((1, 2, 8, 8), (3, 3), (2, 2), (1, 1), ceil_mode=True),
    "ceil-drops-window-in-padding": PoolCase((1, 1, 5, 5), (2, 2), (2, 2), (1, 1), ceil_mode=True),
    "dilation": PoolCase((1, 2, 7, 7), (2, 2), (1, 1), dilation=(2, 2)),
    "dilation-pad-ceil": PoolCase((1, 2, 8, 8), (3, 3), (2, 2), (1, 1), (2, 2), True),
    "dilation-rect": PoolCase((1, 2, 9, 8), (2, 3), (2, 1), (1, 0), (3, 1)),
    "stride-above-kernel": PoolCase((1, 2, 9, 9), (2, 2), (3, 3)),
    "whole-input": PoolCase((2, 2, 4, 5), (4, 5), (4, 5)),
}
AVG_CASES = {
    **{name: case for name, case in MAX_CASES.items() if case.dilation == (1, 1)},
    "pad-exclude": PoolCase((1, 2, 5, 6), (3, 3), (1, 1), (1, 1), count_include_pad=False),
    "ceil-pad-exclude": PoolCase((1, 2, 8, 8), (3, 3), (2, 2), (1, 1), ceil_mode=True, count_include_pad=False),
    "ceil-past-padding": PoolCase((1, 2, 6, 6), (3, 3), (2, 2), (1, 1), ceil_mode=True),
    "ceil-no-pad-exclude": PoolCase((1, 2, 7, 6), (3, 2), (2, 2), ceil_mode=True, count_include_pad=False),
}


def distinct_values(shape: tuple[int, ...], seed: int, dtype=np.float64) -> np.ndarray:
    """Values at least 0.1 apart: no ties, and a 1e-6 nudge never changes which value is largest."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0).astype(dtype)


def tied_values(shape: tuple[int, ...], seed: int, dtype=np.float64) -> np.ndarray:
    """Small integers: most windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(dtype)


def _dout(case: PoolCase, seed: int, dtype=np.float64) -> np.ndarray:
    return np.random.default_rng(seed + 1).standard_normal(case.out_shape()).astype(dtype)


# -- naive references ----------------------------------------------------------------------------
@pytest.mark.parametrize("values", [distinct_values, tied_values])
@pytest.mark.parametrize("name", MAX_CASES)
def test_max_pool_matches_naive_loops(name: str, values) -> None:
    case = MAX_CASES[name]
    x, dout = values(case.x_shape, seed=3), _dout(case, seed=3)
    out, cache = max_pool2d_forward(x, *case.max_args())
    np.testing.assert_array_equal(out, naive.max_pool2d_forward(x, *case.max_args()))
    dx = max_pool2d_backward(dout, cache)
    assert rel_error(dx, naive.max_pool2d_backward(dout, x, *case.max_args())) < 1e-15


@pytest.mark.parametrize("name", AVG_CASES)
def test_avg_pool_matches_naive_loops(name: str) -> None:
    case = AVG_CASES[name]
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal(case.x_shape), _dout(case, seed=4)
    out, cache = avg_pool2d_forward(x, *case.avg_args())
    assert rel_error(out, naive.avg_pool2d_forward(x, *case.avg_args())) < 1e-14
    dx = avg_pool2d_backward(dout, cache)
    assert rel_error(dx, naive.avg_pool2d_backward(dout, x, *case.avg_args())) < 1e-14


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 1, 6)])
def test_global_avg_pool_matches_naive_loops(shape: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(5)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape[:2])
    out, cache = global_avg_pool2d_forward(x)
    assert rel_error(out, naive.global_avg_pool2d_forward(x)) < 1e-14
    assert rel_error(global_avg_pool2d_backward(dout, cache), naive.global_avg_pool2d_backward(dout, x)) < 1e-14


# -- the max-pooling gradient rules, spelled out ----------------------------------------------------
def test_max_pool_gradient_goes_to_the_first_maximum_in_row_major_order() -> None:
    x = np.array([[[[0.0, 5.0], [5.0, 5.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    out, cache = max_pool2d_forward(x, 2)
    np.testing.assert_array_equal(out.ravel(), [5.0, 2.0])
    dx = max_pool2d_backward(np.array([[[[3.0]]], [[[7.0]]]]), cache)
    np.testing.assert_array_equal(dx, [[[[0.0, 3.0], [0.0, 0.0]]], [[[7.0, 0.0], [0.0, 0.0]]]])


def test_overlapping_max_pool_windows_accumulate_gradients() -> None:
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0                                  # the maximum of all four 2x2 windows
    out, cache = max_pool2d_forward(x, 2, stride=1)
    np.testing.assert_array_equal(out, np.ones((1, 1, 2, 2)))
    dx = max_pool2d_backward(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), cache)
    expected = np.zeros((1, 1, 3, 3))
    expected[0, 0, 1, 1] = 10.0
    np.testing.assert_array_equal(dx, expected)


def test_max_pool_never_picks_padding() -> None:
    x = -np.ones((1, 1, 2, 2))
    out, cache = max_pool2d_forward(x, 3, stride=1, padding=1)
    np.testing.assert_array_equal(out, -np.ones((1, 1, 2, 2)))
    assert max_pool2d_backward(np.ones((1, 1, 2, 2)), cache).sum() == 4.0


# -- central differences -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAX_CASES)
def test_max_pool_gradient_matches_central_differences(name: str) -> None:
    case = MAX_CASES[name]
    x = distinct_values(case.x_shape, seed=6)
    errors = gradient_errors(lambda: max_pool2d_forward(x, *case.max_args())[0],
                             lambda d: {"x": max_pool2d_backward(d, max_pool2d_forward(x, *case.max_args())[1])},
                             {"x": x})
    assert errors["x"] < 1e-7


@pytest.mark.parametrize("name", AVG_CASES)
def test_avg_pool_gradient_matches_central_differences(name: str) -> None:
    case = AVG_CASES[name]
    x = np.random.default_rng(7).standard_normal(case.x_shape)
    errors = gradient_errors(lambda: avg_pool2d_forward(x, *case.avg_args())[0],
                             lambda d: {"x": avg_pool2d_backward(d, avg_pool2d_forward(x, *case.avg_args())[1])},
                             {"x": x})
    assert errors["x"] < 1e-7


def test_global_avg_pool_gradient_matches_central_differences() -> None:
    x = np.random.default_rng(8).standard_normal((2, 3, 3, 4))
    errors = gradient_errors(lambda: global_avg_pool2d_forward(x)[0],
                             lambda d: {"x": global_avg_pool2d_backward(d, global_avg_pool2d_forward(x)[1])},
                             {"x": x})
    assert errors["x"] < 1e-7


# -- PyTorch -----------------------------------------------------------------------------------------
def check_max_against_torch(parity, case: PoolCase, x: np.ndarray, dout: np.ndarray) -> None:
    out, cache = max_pool2d_forward(x, *case.max_args())
    xt = torch.tensor(x, requires_grad=True)
    out_t = F.max_pool2d(xt, case.kernel, case.stride, case.padding, case.dilation, case.ceil_mode)
    out_t.backward(torch.tensor(dout))
    parity.check("max_pool2d", "out", out, out_t)
    parity.check("max_pool2d", "dx", max_pool2d_backward(dout, cache), xt.grad)


def check_avg_against_torch(parity, case: PoolCase, x: np.ndarray, dout: np.ndarray) -> None:
    out, cache = avg_pool2d_forward(x, *case.avg_args())
    xt = torch.tensor(x, requires_grad=True)
    out_t = F.avg_pool2d(xt, case.kernel, case.stride, case.padding, case.ceil_mode, case.count_include_pad)
    out_t.backward(torch.tensor(dout))
    parity.check("avg_pool2d", "out", out, out_t)
    parity.check("avg_pool2d", "dx", avg_pool2d_backward(dout, cache), xt.grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("values", [distinct_values, tied_values])
@pytest.mark.parametrize("name", MAX_CASES)
def test_max_pool_matches_torch_on_grid(parity, name: str, values, dtype) -> None:
    """Tied values included: both pick the first maximum, so even those gradients agree exactly."""
    case = MAX_CASES[name]
    check_max_against_torch(parity, case, values(case.x_shape, 9, dtype), _dout(case, 9, dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", AVG_CASES)
def test_avg_pool_matches_torch_on_grid(parity, name: str, dtype) -> None:
    case = AVG_CASES[name]
    x = np.random.default_rng(10).standard_normal(case.x_shape).astype(dtype)
    check_avg_against_torch(parity, case, x, _dout(case, 10, dtype))


@st.composite
def pool_cases(draw, dilated: bool) -> PoolCase:
    """PyTorch's constraints: padding at most half the kernel; sizes leave an output of at least 1."""
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    size = tuple(max(1, dilation[d] * (kernel[d] - 1) + 1 - 2 * padding[d]) + draw(st.integers(0, 5))
                 for d in range(2))
    return PoolCase((draw(st.integers(1, 2)), draw(st.integers(1, 3)), *size), kernel,
                    (draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding, dilation,
                    draw(st.booleans()), draw(st.booleans()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PARITY_SETTINGS
@given(case=pool_cases(dilated=True), seed=st.integers(0, 2**16))
def test_max_pool_matches_torch_on_generated_cases(parity, dtype, case: PoolCase, seed: int) -> None:
    x = distinct_values(case.x_shape, seed, dtype)
    # a dilated window can fall entirely in the padding; both give -inf there, but PyTorch's
    # gradient index for such a window is arbitrary
    assume(np.isfinite(naive.max_pool2d_forward(x, *case.max_args())).all())
    check_max_against_torch(parity, case, x, _dout(case, seed, dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PARITY_SETTINGS
@given(case=pool_cases(dilated=False), seed=st.integers(0, 2**16))
def test_avg_pool_matches_torch_on_generated_cases(parity, dtype, case: PoolCase, seed: int) -> None:
    x = np.random.default_rng(seed).standard_normal(case.x_shape).astype(dtype)
    check_avg_against_torch(parity, case, x, _dout(case, seed, dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (4, 2, 7, 3)])
def test_global_avg_pool_matches_torch(parity, shape: tuple[int, int, int, int], dtype) -> None:
    rng = np.random.default_rng(11)
    x, dout = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape[:2]).astype(dtype)
    out, cache = global_avg_pool2d_forward(x)
    xt = torch.tensor(x, requires_grad=True)
    out_t = F.adaptive_avg_pool2d(xt, 1).flatten(1)
    out_t.backward(torch.tensor(dout))
    parity.check("global_avg_pool2d", "out", out, out_t)
    parity.check("global_avg_pool2d", "dx", global_avg_pool2d_backward(dout, cache), xt.grad)
