"""Grouped convolutions (several channels a group) on the shifted path, one group after another
(``conv._forward_grouped``, ``conv._backward_grouped``), through the public kernels on both engines
(conftest's ``engine``): where the compiled tiles cover a group the path is "grouped", on the NumPy
engine (and for groups the tiles do not cover) it stays im2col ("nhwc").

Every case against the naive loops in float64 (forward, dx, dw, db) and in float32 to rounding; then the
fused ReLU and its mask, ``need_dx=False``, the same bits on one thread and two and for NCHW and
channels-last inputs, and central differences. PyTorch parity is in ``test_functional_conv2d``
("groups2-tiled").
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
import stridenet.functional._parallel as parallel
from reference import naive
from reference.gradcheck import assert_results_close, assert_same_weight_gradients_without_dx, gradient_errors
from stridenet.functional import conv2d_backward, conv2d_forward, conv2d_relu_forward, relu_backward
from stridenet.functional.conv import resolve_padding


class Case(NamedTuple):
    N: int
    C: int
    K: int
    H: int
    W: int
    groups: int
    kernel: tuple[int, int]
    padding: object = 0
    bias: bool = True


# 16 filters a group: whole vectors in float32 and float64, so the tiles take every case on the compiled engine
CASES = {
    "3x3-pad1-2-groups": Case(2, 16, 32, 8, 7, 2, (3, 3), 1),
    "3x3-valid-3-groups-no-bias": Case(3, 24, 48, 7, 9, 3, (3, 3), 0, bias=False),
    "3x3-asymmetric-padding": Case(2, 32, 32, 6, 6, 2, (3, 3), ((1, 0), (2, 1))),
    "5x5-same-2-groups": Case(1, 8, 32, 9, 8, 2, (5, 5), "same"),
    "1x1-4-groups": Case(2, 32, 64, 5, 6, 4, (1, 1)),
    "3x3-two-channels-a-group": Case(2, 4, 32, 7, 8, 2, (3, 3), ((0, 1), (1, 1))),
}
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}


def arrays(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """x, w, b, dout in float64, every value exact in float32."""
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32).astype(np.float64)

    x, w = draw((case.N, case.C, case.H, case.W)), draw((case.K, case.C // case.groups, *case.kernel))
    b = draw((case.K,)) if case.bias else None
    out = conv2d_forward(x, w, b, 1, case.padding, 1, case.groups)[0]
    return x, w, b, draw(out.shape)


def expected_path(engine: str) -> str:
    """The compiled engine's tiles cover every case here; without them (NumPy engine, or no AVX-512 or AVX2) im2col."""
    return "grouped" if engine == "compiled" and compiled.tiles_enabled() else "nhwc"


def convolve(case: Case, x: np.ndarray, w: np.ndarray, b: np.ndarray | None, dout: np.ndarray, engine: str,
             need_dx: bool = True) -> tuple[np.ndarray, ...]:
    out, cache = conv2d_forward(x, w, b, 1, case.padding, 1, case.groups)
    assert cache.path == expected_path(engine)
    return (out, *conv2d_backward(dout, cache, need_dx=need_dx))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", CASES)
def test_grouped_convolution_matches_the_naive_loops(name: str, dtype: type, engine: str) -> None:
    case = CASES[name]
    x, w, b, dout = arrays(case, seed=len(name))
    pad = resolve_padding(case.padding, case.kernel, (1, 1), (1, 1), (case.H, case.W))
    expected = (naive.conv2d_forward(x, w, b, (1, 1), pad, (1, 1), case.groups),
                *naive.conv2d_backward(dout, x, w, (1, 1), pad, (1, 1), case.groups))
    cast = [None if a is None else a.astype(dtype) for a in (x, w, b, dout)]
    assert_results_close(convolve(case, *cast, engine), expected, dtype, TOLERANCE[dtype], case.bias)


@pytest.mark.parametrize("name", ["3x3-pad1-2-groups", "1x1-4-groups"])
def test_the_fused_relu_matches_the_relu_after_the_convolution(name: str, engine: str) -> None:
    """Forward to the bit (each group's output and mask copied into its channels); backward through the mask
    as the ReLU's gradient followed by the convolution's."""
    case = CASES[name]
    x, w, b, dout = (a.astype(np.float32) for a in arrays(case, seed=3))
    out, cache, positive = conv2d_relu_forward(x, w, b, 1, case.padding, 1, case.groups)
    assert cache.path == expected_path(engine)
    plain = conv2d_forward(x, w, b, 1, case.padding, 1, case.groups)[0]
    np.testing.assert_array_equal(out, np.maximum(plain, 0))
    np.testing.assert_array_equal(positive, plain > 0)
    fused = conv2d_backward(dout, cache, positive=positive)
    unfused = conv2d_backward(relu_backward(dout, positive), cache)
    for ours, theirs in zip(fused[:2], unfused[:2], strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_allclose(fused[2], unfused[2], rtol=1e-6)   # db's float64 sum, added up in blocks


def test_without_dx_the_weight_gradients_are_the_same(engine: str) -> None:
    case = CASES["3x3-pad1-2-groups"]
    x, w, b, dout = arrays(case, seed=4)
    assert_same_weight_gradients_without_dx(convolve(case, x, w, b, dout, engine),
                                            convolve(case, x, w, b, dout, engine, need_dx=False))


def test_one_thread_or_two_and_any_input_layout_give_the_same_bits(engine: str, monkeypatch) -> None:
    """Each group's blocks' weight-gradient sums are added in block order, whichever thread made them; a group's
    channels are read from either layout in place. (The im2col path adds its weight gradient up per thread's
    range of images: its last bits depend on the threads.)"""
    if expected_path(engine) != "grouped":
        pytest.skip("the grouped path runs on the compiled engine's tiles only")
    case = Case(8, 32, 32, 10, 9, 2, (3, 3), 1)
    x, w, b, dout = (a.astype(np.float32) for a in arrays(case, seed=5))
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 1)   # small arrays split between threads too
    results = []
    for threads, layout in ((1, "nchw"), (2, "nchw"), (2, "channels_last")):
        parallel.set_num_threads(threads)
        try:
            given = x if layout == "nchw" else np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            gradient = dout if layout == "nchw" else np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).transpose(
                0, 3, 1, 2)
            results.append(convolve(case, given, w, b, gradient, engine))
        finally:
            parallel.set_num_threads(None)
    for other in results[1:]:
        for ours, theirs in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", ["3x3-asymmetric-padding", "1x1-4-groups"])
def test_gradients_match_central_differences(name: str, engine: str) -> None:
    case = CASES[name]._replace(N=1, H=5, W=5)
    x, w, b, _ = arrays(case, seed=6)
    values = {"x": x, "w": w} | ({"b": b} if case.bias else {})

    def forward() -> np.ndarray:
        out, cache = conv2d_forward(x, w, b, 1, case.padding, 1, case.groups)
        assert cache.path == expected_path(engine)
        return out

    def backward(dout: np.ndarray) -> dict[str, np.ndarray]:
        cache = conv2d_forward(x, w, b, 1, case.padding, 1, case.groups)[1]
        return dict(zip(("x", "w", "b"), conv2d_backward(dout, cache), strict=True))

    errors = gradient_errors(forward, backward, values)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize(("channels", "filters", "groups"), [(12, 12, 2), (32, 24, 2), (8, 16, 2)],
                         ids=["6-filters-a-group", "12-filters-a-group", "stride-2"])
def test_groups_the_tiles_do_not_cover_stay_on_im2col(channels: int, filters: int, groups: int) -> None:
    """Filters a group not a whole number of vectors: no tiles, so the im2col path; a strided grouped
    convolution is not the shifted path's at all."""
    stride = 2 if filters == 16 else 1
    x = np.ones((1, channels, 6, 6), np.float32)
    w = np.ones((filters, channels // groups, 3, 3), np.float32)
    assert conv2d_forward(x, w, None, stride, 1, groups=groups)[1].path == "nhwc"
