"""batch_norm_forward / batch_norm_backward: naive loops, central differences, torch.nn.functional.batch_norm.

Running statistics (several steps, train then eval) are the layer's job: see tests/nn/test_nn_norm_layers.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from reference.layouts import channels_last
from stridenet.functional import batch_norm_backward, batch_norm_forward
from stridenet.functional._layout import is_channels_last

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(4, 3), (3, 2, 5), (2, 3, 4, 5), (2, 1, 1, 3)]
EPS = [1e-5, 1e-3]


def bn_arrays(shape: tuple[int, ...], seed: int, dtype=np.float64):
    """x with a per-channel offset and scale, gamma, beta, running statistics (var > 0), dout."""
    rng = np.random.default_rng(seed)
    C = shape[1]
    channel = (1, C) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, C).reshape(channel) + rng.normal(0, 2, C).reshape(channel)
    gamma, beta = rng.uniform(0.5, 2.0, C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.uniform(0.5, 2.0, C)
    dout = rng.standard_normal(shape)
    return tuple(a.astype(dtype) for a in (x, gamma, beta, running_mean, running_var, dout))


@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_matches_naive_loops(shape, training: bool, affine: bool, eps: float) -> None:
    x, gamma, beta, running_mean, running_var, dout = bn_arrays(shape, seed=1)
    if not affine:
        gamma, beta = np.ones_like(gamma), np.zeros_like(beta)
    out, cache, mean, var = batch_norm_forward(x, gamma if affine else None, beta if affine else None,
                                               running_mean, running_var, training, eps)
    expected = naive.batch_norm_forward(x, gamma, beta, running_mean, running_var, training, eps)
    assert rel_error(out, expected) < 1e-13
    axes = (0, *range(2, x.ndim))
    np.testing.assert_allclose(mean, x.mean(axis=axes) if training else running_mean, rtol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=axes) if training else running_var, rtol=1e-13)
    dx, dgamma, dbeta = batch_norm_backward(dout, cache)
    ndx, ndgamma, ndbeta = naive.batch_norm_backward(dout, x, gamma, running_mean, running_var, training, eps)
    assert rel_error(dx, ndx) < 1e-12
    assert rel_error(dbeta, ndbeta) < 1e-13
    if affine:
        assert rel_error(dgamma, ndgamma) < 1e-13
    else:
        assert dgamma is None


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_gradients_match_central_differences(shape, training: bool, affine: bool) -> None:
    x, gamma, beta, running_mean, running_var, _ = bn_arrays(shape, seed=2)
    assert_gradients_match_central_differences(x, gamma, beta, running_mean, running_var, training, affine)


def assert_gradients_match_central_differences(x, gamma, beta, running_mean, running_var, training: bool,
                                               affine: bool) -> None:
    g, b = (gamma, beta) if affine else (None, None)

    def forward() -> np.ndarray:
        return batch_norm_forward(x, g, b, running_mean, running_var, training)[0]

    def backward(dout: np.ndarray) -> dict[str, np.ndarray]:
        dx, dgamma, dbeta = batch_norm_backward(dout, batch_norm_forward(x, g, b, running_mean, running_var,
                                                                         training)[1])
        return {"x": dx, "gamma": dgamma, "beta": dbeta}

    errors = gradient_errors(forward, backward, {"x": x, "gamma": gamma, "beta": beta} if affine else {"x": x})
    assert max(errors.values()) < 1e-7, errors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_batch_norm_matches_torch(parity, shape, training: bool, dtype) -> None:
    x, gamma, beta, running_mean, running_var, dout = bn_arrays(shape, seed=3, dtype=dtype)
    out, cache, _, _ = batch_norm_forward(x, gamma, beta, running_mean, running_var, training, 1e-3)
    dx, dgamma, dbeta = batch_norm_backward(dout, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out_t = F.batch_norm(xt, torch.tensor(running_mean), torch.tensor(running_var), gt, bt, training, 0.1, 1e-3)
    out_t.backward(torch.tensor(dout))
    parity.check("batch_norm", "out", out, out_t)
    parity.check("batch_norm", "dx", dx, xt.grad)
    parity.check("batch_norm", "dgamma", dgamma, gt.grad)
    parity.check("batch_norm", "dbeta", dbeta, bt.grad)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_on_channels_last_input_keeps_the_layout_and_the_results(training: bool, affine: bool) -> None:
    x, gamma, beta, running_mean, running_var, dout = bn_arrays((3, 4, 5, 6), seed=4)
    g, b = (gamma, beta) if affine else (None, None)
    x_cl, dout_cl = channels_last(x), channels_last(dout)
    out, cache, mean, var = batch_norm_forward(x_cl, g, b, running_mean, running_var, training)
    assert is_channels_last(out)
    ones, zeros = np.ones_like(gamma), np.zeros_like(beta)
    expected = naive.batch_norm_forward(x, gamma if affine else ones, beta if affine else zeros,
                                        running_mean, running_var, training, 1e-5)
    assert rel_error(out, expected) < 1e-13
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)) if training else running_mean, rtol=1e-13)
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)) if training else running_var, rtol=1e-13)
    ndx, ndgamma, ndbeta = naive.batch_norm_backward(dout, x, gamma if affine else ones, running_mean, running_var,
                                                     training, 1e-5)
    for d in (dout_cl, dout):   # the output gradient in either layout
        dx, dgamma, dbeta = batch_norm_backward(d, cache)
        assert is_channels_last(dx)
        assert rel_error(dx, ndx) < 1e-12
        assert rel_error(dbeta, ndbeta) < 1e-13
        assert dgamma is None if not affine else rel_error(dgamma, ndgamma) < 1e-13
    assert_gradients_match_central_differences(x_cl, gamma, beta, running_mean, running_var, training, affine)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_channels_last_float32_matches_torch(parity, training: bool) -> None:
    x, gamma, beta, running_mean, running_var, dout = bn_arrays((8, 16, 7, 7), seed=5, dtype=np.float32)
    out, cache, _, _ = batch_norm_forward(channels_last(x), gamma, beta, running_mean, running_var, training)
    dx, dgamma, dbeta = batch_norm_backward(channels_last(dout), cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out_t = F.batch_norm(xt, torch.tensor(running_mean), torch.tensor(running_var), gt, bt, training, 0.1, 1e-5)
    out_t.backward(torch.tensor(dout))
    for name, ours, theirs in (("out", out, out_t), ("dx", dx, xt.grad), ("dgamma", dgamma, gt.grad),
                               ("dbeta", dbeta, bt.grad)):
        parity.check("batch_norm channels-last", name, ours, theirs)
