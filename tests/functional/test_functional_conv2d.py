"""conv2d_forward / conv2d_backward three ways: naive loops, central differences, PyTorch."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from stridenet.functional import conv2d_backward, conv2d_forward

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

PARITY_SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture])


class ConvCase(NamedTuple):
    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: int | tuple[int, int] = 1
    padding: object = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    bias: bool = True


def as_pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def is_asymmetric(padding) -> bool:
    return isinstance(padding, tuple) and isinstance(padding[0], tuple)


def explicit_padding(case: ConvCase) -> tuple[tuple[int, int], tuple[int, int]]:
    """Any padding argument as ((top, bottom), (left, right)), computed without stridenet."""
    stride, dilation = as_pair(case.stride), as_pair(case.dilation)
    if case.padding == "valid":
        return (0, 0), (0, 0)
    if case.padding == "same":
        return tuple(naive.tf_same_padding(case.x_shape[2 + d], case.w_shape[2 + d], stride[d], dilation[d])
                     for d in range(2))
    if is_asymmetric(case.padding):
        return case.padding
    ph, pw = as_pair(case.padding)
    return (ph, ph), (pw, pw)


def output_shape(case: ConvCase) -> tuple[int, int, int, int]:
    pad = explicit_padding(case)
    stride, dilation = as_pair(case.stride), as_pair(case.dilation)
    return (case.x_shape[0], case.w_shape[0],
            *(naive.conv_output_size(case.x_shape[2 + d], case.w_shape[2 + d], stride[d], dilation[d], *pad[d])
              for d in range(2)))


def make_arrays(case: ConvCase, seed: int, dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.x_shape).astype(dtype)
    w = rng.standard_normal(case.w_shape).astype(dtype)
    b = rng.standard_normal(case.w_shape[0]).astype(dtype) if case.bias else None
    dout = rng.standard_normal(output_shape(case)).astype(dtype)
    return x, w, b, dout


CONV_CASES = {
    "3x3": ConvCase((2, 3, 7, 7), (4, 3, 3, 3)),
    "stride2-pad1": ConvCase((2, 3, 8, 7), (4, 3, 3, 3), stride=2, padding=1),
    "rect-kernel-stride-pad": ConvCase((1, 2, 7, 9), (3, 2, 3, 2), stride=(2, 1), padding=(1, 0)),
    "asymmetric-pad": ConvCase((1, 2, 6, 6), (3, 2, 3, 3), padding=((1, 0), (2, 1))),
    "same-even-kernel": ConvCase((2, 3, 6, 6), (2, 3, 4, 4), padding="same"),
    "same-stride2": ConvCase((1, 2, 7, 8), (3, 2, 3, 3), stride=2, padding="same"),
    "same-stride3-even": ConvCase((1, 2, 8, 7), (2, 2, 2, 4), stride=(3, 2), padding="same"),
    "same-dilation2": ConvCase((1, 2, 8, 8), (2, 2, 3, 3), padding="same", dilation=2),
    "valid": ConvCase((1, 2, 6, 6), (3, 2, 3, 3), padding="valid"),
    "groups2": ConvCase((2, 4, 6, 6), (6, 2, 3, 3), padding=1, groups=2),
    "groups2-tiled": ConvCase((2, 8, 6, 5), (32, 4, 3, 3), padding=1, groups=2),   # the "grouped" path (16 filters)
    "depthwise-x2": ConvCase((2, 3, 6, 6), (6, 1, 3, 3), padding=1, groups=3),
    "depthwise": ConvCase((1, 4, 5, 5), (4, 1, 3, 3), stride=2, groups=4),
    "dilation-rect": ConvCase((2, 3, 9, 9), (2, 3, 2, 3), dilation=(2, 3)),
    "1x1": ConvCase((2, 3, 5, 5), (4, 3, 1, 1)),
    "stride-above-kernel": ConvCase((1, 2, 8, 8), (2, 2, 2, 2), stride=3),
    "no-bias": ConvCase((1, 2, 5, 5), (2, 2, 3, 3), padding=1, bias=False),
    "kernel-equals-input": ConvCase((2, 2, 4, 3), (3, 2, 4, 3)),
}


def _random_cases(count: int, seed: int) -> dict[str, ConvCase]:
    """A seeded grid of further configurations, all with an output of at least 1x1."""
    rng = np.random.default_rng(seed)

    def ints(low: int, high: int) -> tuple[int, int]:
        return int(rng.integers(low, high)), int(rng.integers(low, high))

    cases: dict[str, ConvCase] = {}
    while len(cases) < count:
        groups = int(rng.integers(1, 4))
        c_in, c_out = (groups * c for c in ints(1, 3))
        kernel = ints(1, 4)
        padding = [int(rng.integers(0, 3)), "same", "valid"][int(rng.integers(0, 3))]
        case = ConvCase((int(rng.integers(1, 3)), c_in, *ints(3, 9)), (c_out, c_in // groups, *kernel),
                        ints(1, 4), padding, ints(1, 3), groups, bool(rng.integers(0, 2)))
        if min(output_shape(case)[2:]) >= 1:
            cases[f"random{len(cases)}"] = case
    return cases


GRID = {**CONV_CASES, **_random_cases(10, seed=2024)}


@pytest.mark.parametrize("name", GRID)
def test_conv2d_matches_naive_loops(name: str) -> None:
    case = GRID[name]
    x, w, b, dout = make_arrays(case, seed=len(name))
    pad, stride, dilation = explicit_padding(case), as_pair(case.stride), as_pair(case.dilation)
    out, cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    assert rel_error(out, naive.conv2d_forward(x, w, b, stride, pad, dilation, case.groups)) < 1e-12
    dx, dw, db = conv2d_backward(dout, cache)
    ndx, ndw, ndb = naive.conv2d_backward(dout, x, w, stride, pad, dilation, case.groups)
    assert rel_error(dx, ndx) < 1e-12
    assert rel_error(dw, ndw) < 1e-12
    if case.bias:
        assert rel_error(db, ndb) < 1e-12
    else:
        assert db is None


@pytest.mark.parametrize("name", CONV_CASES)
def test_conv2d_gradients_match_central_differences(name: str) -> None:
    case = CONV_CASES[name]
    x, w, b, _ = make_arrays(case, seed=1)
    arrays = {"x": x, "w": w} | ({"b": b} if case.bias else {})

    def forward() -> np.ndarray:
        return conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.groups)[0]

    def backward(dout: np.ndarray) -> dict[str, np.ndarray]:
        cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.groups)[1]
        return dict(zip(("x", "w", "b"), conv2d_backward(dout, cache), strict=True))

    errors = gradient_errors(forward, backward, arrays)
    assert max(errors.values()) < 1e-7, errors


def check_against_torch(parity, case: ConvCase, dtype, seed: int) -> None:
    """Forward, dx, dw, db against torch.nn.functional.conv2d on the same arrays.

    Torch's own padding='same' where it allows it (stride 1); for stride > 1 our (TensorFlow) 'same'
    and asymmetric padding are compared with an explicit F.pad followed by an unpadded conv.
    """
    x, w, b, dout = make_arrays(case, seed, dtype)
    out, cache = conv2d_forward(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    dx, dw, db = conv2d_backward(dout, cache)

    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    padding = case.padding
    if (padding == "same" and as_pair(case.stride) != (1, 1)) or is_asymmetric(padding):
        (top, bottom), (left, right) = explicit_padding(case)
        x_in, padding = F.pad(xt, (left, right, top, bottom)), 0
    else:
        x_in = xt
    out_t = F.conv2d(x_in, wt, bt, as_pair(case.stride), padding, as_pair(case.dilation), case.groups)
    out_t.backward(torch.tensor(dout))

    parity.check("conv2d", "out", out, out_t)
    parity.check("conv2d", "dx", dx, xt.grad)
    parity.check("conv2d", "dw", dw, wt.grad)
    if b is not None:
        parity.check("conv2d", "db", db, bt.grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", GRID)
def test_conv2d_matches_torch_on_grid(parity, name: str, dtype) -> None:
    check_against_torch(parity, GRID[name], dtype, seed=7)


@st.composite
def conv_cases(draw) -> ConvCase:
    groups = draw(st.sampled_from([1, 2, 3]))
    depthwise = draw(st.booleans())
    c_in = groups * (1 if depthwise else draw(st.integers(1, 3)))
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    padding = draw(st.one_of(
        st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2)), st.sampled_from(["same", "valid"]),
        st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)), st.tuples(st.integers(0, 2), st.integers(0, 2))),
    ))
    case = ConvCase((draw(st.integers(1, 2)), c_in, draw(st.integers(1, 9)), draw(st.integers(1, 9))),
                    (c_out, c_in // groups, *kernel),
                    (draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding,
                    (draw(st.integers(1, 2)), draw(st.integers(1, 2))), groups, draw(st.booleans()))
    return case if min(output_shape(case)[2:]) >= 1 else case._replace(padding="same")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@PARITY_SETTINGS
@given(case=conv_cases(), seed=st.integers(0, 2**16))
def test_conv2d_matches_torch_on_generated_cases(parity, dtype, case: ConvCase, seed: int) -> None:
    check_against_torch(parity, case, dtype, seed)
