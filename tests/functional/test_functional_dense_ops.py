"""Linear, ReLU, LeakyReLU and dropout kernels: naive loops, central differences, PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from stridenet.functional import (
    dropout_backward,
    dropout_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (input shape, out_features, bias)
LINEAR_CASES = {
    "batch": ((4, 5), 3, True),
    "3-d": ((2, 3, 6), 4, True),
    "1x1": ((1, 1), 1, True),
    "vector": ((5,), 2, True),
    "no-bias": ((3, 7), 2, False),
    "wide": ((2, 40), 9, True),
}
SLOPES = [0.0, 0.01, 0.2, 1.5]
ACTIVATION_SHAPES = [(2, 3, 4, 5), (7,), (3, 1)]


def linear_arrays(name: str, seed: int, dtype=np.float64):
    shape, out_features, bias = LINEAR_CASES[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    w = rng.standard_normal((out_features, shape[-1])).astype(dtype)
    b = rng.standard_normal(out_features).astype(dtype) if bias else None
    dout = rng.standard_normal((*shape[:-1], out_features)).astype(dtype)
    return x, w, b, dout


def away_from_zero(shape: tuple[int, ...], seed: int, dtype=np.float64) -> np.ndarray:
    """Random signs, magnitudes at least 0.1: central differences never straddle the kink at 0."""
    rng = np.random.default_rng(seed)
    return (rng.choice([-1.0, 1.0], shape) * (0.1 + np.abs(rng.standard_normal(shape)))).astype(dtype)


def activation(slope: float):
    """(forward, backward, naive forward, naive backward) of ReLU for slope 0, LeakyReLU otherwise."""
    if slope == 0.0:
        return relu_forward, relu_backward, naive.relu_forward, naive.relu_backward
    return (lambda x: leaky_relu_forward(x, slope), lambda d, c: leaky_relu_backward(d, c, slope),
            lambda x: naive.leaky_relu_forward(x, slope), lambda d, x: naive.leaky_relu_backward(d, x, slope))


# -- linear ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_matches_naive_loops(name: str) -> None:
    x, w, b, dout = linear_arrays(name, seed=1)
    out, cache = linear_forward(x, w, b)
    assert rel_error(out, naive.linear_forward(x, w, b)) < 1e-13
    dx, dw, db = linear_backward(dout, cache)
    ndx, ndw, ndb = naive.linear_backward(dout, x, w)
    assert rel_error(dx, ndx) < 1e-13
    assert rel_error(dw, ndw) < 1e-13
    assert db is None if b is None else rel_error(db, ndb) < 1e-13


@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_gradients_match_central_differences(name: str) -> None:
    x, w, b, _ = linear_arrays(name, seed=2)
    arrays = {"x": x, "w": w} | ({"b": b} if b is not None else {})
    errors = gradient_errors(lambda: linear_forward(x, w, b)[0],
                             lambda d: dict(zip(("x", "w", "b"), linear_backward(d, linear_forward(x, w, b)[1]),
                                                strict=True)),
                             arrays)
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", LINEAR_CASES)
def test_linear_matches_torch(parity, name: str, dtype) -> None:
    x, w, b, dout = linear_arrays(name, seed=3, dtype=dtype)
    out, cache = linear_forward(x, w, b)
    dx, dw, db = linear_backward(dout, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    out_t = F.linear(xt, wt, bt)
    out_t.backward(torch.tensor(dout))
    parity.check("linear", "out", out, out_t)
    parity.check("linear", "dx", dx, xt.grad)
    parity.check("linear", "dw", dw, wt.grad)
    if b is not None:
        parity.check("linear", "db", db, bt.grad)


# -- ReLU and LeakyReLU ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ACTIVATION_SHAPES)
@pytest.mark.parametrize("slope", SLOPES)
def test_activation_matches_naive_loops(slope: float, shape: tuple[int, ...]) -> None:
    forward, backward, naive_forward, naive_backward = activation(slope)
    rng = np.random.default_rng(4)
    x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
    x.flat[0] = 0.0                                      # the kink itself: gradient as PyTorch's
    out, cache = forward(x)
    np.testing.assert_array_equal(out, naive_forward(x))
    np.testing.assert_array_equal(backward(dout, cache), naive_backward(dout, x))


@pytest.mark.parametrize("slope", SLOPES)
def test_activation_gradient_matches_central_differences(slope: float) -> None:
    forward, backward, _, _ = activation(slope)
    x = away_from_zero((2, 3, 4, 4), seed=5)
    errors = gradient_errors(lambda: forward(x)[0], lambda d: {"x": backward(d, forward(x)[1])}, {"x": x})
    assert errors["x"] < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", ACTIVATION_SHAPES)
@pytest.mark.parametrize("slope", SLOPES)
def test_activation_matches_torch(parity, slope: float, shape: tuple[int, ...], dtype) -> None:
    forward, backward, _, _ = activation(slope)
    rng = np.random.default_rng(6)
    x, dout = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    x.flat[0] = 0.0
    out, cache = forward(x)
    xt = torch.tensor(x, requires_grad=True)
    out_t = F.relu(xt) if slope == 0.0 else F.leaky_relu(xt, slope)
    out_t.backward(torch.tensor(dout))
    op = "relu" if slope == 0.0 else "leaky_relu"
    parity.check(op, "out", out, out_t)
    parity.check(op, "dx", backward(dout, cache), xt.grad)


# -- dropout (random, so no reference: its properties instead) ------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeroes_a_fraction_p_and_scales_survivors(p: float, dtype) -> None:
    x = np.random.default_rng(7).uniform(1.0, 2.0, (200, 500)).astype(dtype)
    out, mask = dropout_forward(x, p, np.random.default_rng(8))
    assert out.dtype == dtype
    dropped = out == 0
    assert abs(dropped.mean() - p) < 4 * np.sqrt(p * (1 - p) / x.size)
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    dout = np.random.default_rng(9).standard_normal(x.shape).astype(dtype)
    dx = dropout_backward(dout, mask)
    assert dx.dtype == dtype
    np.testing.assert_array_equal(dx[dropped], 0)
    np.testing.assert_allclose(dx[~dropped], dout[~dropped] / (1 - p), rtol=1e-6)


def test_dropout_with_p_one_drops_everything() -> None:
    out, mask = dropout_forward(np.ones((3, 4)), 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, 0)
    np.testing.assert_array_equal(dropout_backward(np.ones((3, 4)), mask), 0)


def test_dropout_gradient_matches_central_differences_for_a_fixed_mask() -> None:
    x = np.random.default_rng(10).standard_normal((4, 6))

    def forward() -> np.ndarray:
        return dropout_forward(x, 0.4, np.random.default_rng(11))[0]

    errors = gradient_errors(forward, lambda d: {"x": dropout_backward(d, dropout_forward(
        x, 0.4, np.random.default_rng(11))[1])}, {"x": x})
    assert errors["x"] < 1e-7
