"""Depthwise convolutions (``functional._depthwise``): one group per input channel, through the public
kernels, on both engines (conftest's ``engine``: the compiled kernels of ``_depthwise_kernels`` and the
NumPy fallback).

Every case against the naive loops in float64 (forward, dx, dw, db) and in float32 to rounding: strides,
dilations, asymmetric and 'same' padding, several filters per channel (the depth multiplier), 1x1 and
kernels wider than the image. Then the fused ReLU and its mask, ``need_dx=False``, the same bits on one
thread and two and for NCHW and channels-last inputs, central differences, and the geometries that are
not depthwise (fewer groups than channels) staying off this path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import stridenet.functional._parallel as parallel
from reference import naive
from reference.gradcheck import assert_results_close, assert_same_weight_gradients_without_dx, gradient_errors
from stridenet.functional import conv2d_backward, conv2d_forward, conv2d_relu_forward, relu_backward
from stridenet.functional.conv import resolve_padding
from stridenet.functional.geometry import pair


class Case(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    multiplier: int
    kernel: tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: object = 0
    dilation: int | tuple[int, int] = 1
    bias: bool = True


CASES = {
    "3x3-pad1": Case(2, 5, 7, 6, 1, (3, 3), 1, 1),
    "3x3-stride2": Case(3, 4, 9, 8, 1, (3, 3), 2, 1),
    "multiplier-2-stride-1-2": Case(2, 3, 8, 9, 2, (3, 3), (1, 2), 1, bias=False),
    "multiplier-3-dilated": Case(2, 4, 10, 7, 3, (2, 3), 1, ((1, 0), (0, 2)), (2, 1)),
    "5x5-same": Case(1, 6, 6, 7, 1, (5, 5), 1, "same"),
    "same-stride2": Case(2, 3, 7, 8, 2, (3, 3), 2, "same"),
    "1x1": Case(2, 8, 4, 5, 1, (1, 1)),
    "stride3-dilation2": Case(2, 4, 11, 9, 1, (3, 3), 3, 0, 2),
    "kernel-wider-than-image": Case(2, 3, 3, 4, 1, (5, 5), 1, 2),
    "one-image-one-pixel": Case(1, 2, 1, 1, 2, (3, 3), 1, 1),
}
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def arrays(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x, w, b, dout in float64, every value exact in float32."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32).astype(np.float64)

    K = case.C * case.multiplier
    x, w = draw((case.N, case.C, case.H, case.W)), draw((K, 1, *case.kernel))
    b = draw((K,)) if case.bias else None
    out = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)[0]
    return x, w, b, draw(out.shape)


def naive_gradients(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray | None,
                    dout: np.ndarray) -> tuple[np.ndarray, ...]:
    stride, dilation = pair(case.stride, "stride"), pair(case.dilation, "dilation")
    pad = resolve_padding(case.padding, case.kernel, stride, dilation, (case.H, case.W))
    out = naive.conv2d_forward(x, w, b, stride, pad, dilation, case.C)
    return (out, *naive.conv2d_backward(dout, x, w, stride, pad, dilation, case.C))


def convolve(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dout: np.ndarray,
             need_dx: bool = True) -> tuple[np.ndarray, ...]:
    out, cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)
    assert cache.path == "depthwise"
    return (out, *conv2d_backward(dout, cache, need_dx=need_dx))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_depthwise_convolution_matches_the_naive_loops(name: str, dtype: type, engine: str) -> None:
    case = CASES[name]
    x, w, b, dout = arrays(case, seed=len(name))
    expected = naive_gradients(case, x, w, b, dout)
    cast = [None if a is None else a.astype(dtype) for a in (x, w, b, dout)]
    assert_results_close(convolve(case, *cast), expected, dtype, TOLERANCE[dtype], case.bias)


@pytest.mark.parametrize("name", ["3x3-stride2", "multiplier-3-dilated"])
def test_the_fused_relu_matches_the_relu_after_the_convolution(name: str, engine: str) -> None:
    case = CASES[name]
    x, w, b, dout = arrays(case, seed=3)
    out, cache, positive = conv2d_relu_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)
    plain = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)[0]
    np.testing.assert_array_equal(out, np.maximum(plain, 0))
    np.testing.assert_array_equal(positive, plain > 0)
    fused = conv2d_backward(dout, cache, positive=positive)
    unfused = conv2d_backward(relu_backward(dout, positive), cache)
    for ours, theirs in zip(fused, unfused, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_without_dx_the_weight_gradients_are_the_same(engine: str) -> None:
    case = CASES["same-stride2"]
    x, w, b, dout = arrays(case, seed=4)
    assert_same_weight_gradients_without_dx(convolve(case, x, w, b, dout), convolve(case, x, w, b, dout, need_dx=False))


def test_one_thread_or_two_and_any_input_layout_give_the_same_bits(engine: str, monkeypatch) -> None:
    """Each image's weight-gradient sums are added in image order, whichever thread made them."""
    case = Case(8, 16, 12, 10, 2, (3, 3), 1, 1)
    x, w, b, dout = (a.astype(np.float32) for a in arrays(case, seed=5))
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 1)   # small arrays split between threads too
    results = []
    for threads, layout in ((1, "nchw"), (2, "nchw"), (2, "channels_last")):
        parallel.set_num_threads(threads)
        try:
            assert len(parallel.image_slices(case.N, x.size)) == threads
            given = x if layout == "nchw" else np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            results.append(convolve(case, given, w, b, dout))
        finally:
            parallel.set_num_threads(None)
    for other in results[1:]:
        for ours, theirs in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["3x3-stride2", "multiplier-2-stride-1-2", "multiplier-3-dilated"])
def test_gradients_match_central_differences(name: str, engine: str) -> None:
    case = CASES[name]
    x, w, b, _ = arrays(case, seed=6)
    values = {"x": x, "w": w} | ({"b": b} if case.bias else {})

    def forward() -> np.ndarray:
        return conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)[0]

    def backward(dout: np.ndarray) -> dict[str, np.ndarray]:
        cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.C)[1]
        return dict(zip(("x", "w", "b"), conv2d_backward(dout, cache), strict=True))

    errors = gradient_errors(forward, backward, values)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize(("channels", "groups"), [(4, 2), (6, 3), (1, 1), (3, 1)])
def test_fewer_groups_than_channels_stay_off_the_depthwise_path(channels: int, groups: int) -> None:
    x = np.ones((1, channels, 5, 5))
    w = np.ones((2 * groups, channels // groups, 3, 3))
    assert conv2d_forward(x, w, None, groups=groups)[1].path != "depthwise"
