"""batch_norm_forward / batch_norm_backward: naive loops, central differences, torch.nn.functional.batch_norm.

Running statistics (several steps, train then eval) are the layer's job: see tests/nn/test_nn_norm_layers.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from stridenet.functional import batch_norm_backward, batch_norm_forward

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
