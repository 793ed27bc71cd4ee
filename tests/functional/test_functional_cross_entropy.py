"""Softmax cross-entropy: naive loops, central differences, PyTorch, and extreme logits.

Bad labels (out of range, wrong shape, floats) are cases of the bad-input table in tests/nn/test_nn_bad_input.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference import naive
from reference.gradcheck import gradient_errors, rel_error
from stridenet.functional import cross_entropy_backward, cross_entropy_forward, log_softmax, softmax
from stridenet.nn import CrossEntropyLoss

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES = [(4, 3), (1, 2), (8, 10), (3, 1)]
SMOOTHING = [0.0, 0.1, 0.5, 1.0]


def ce_arrays(shape: tuple[int, int], seed: int, dtype=np.float64, scale: float = 3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(0.0, scale, shape).astype(dtype), rng.integers(0, shape[1], shape[0]))


@pytest.mark.parametrize("smoothing", SMOOTHING)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_matches_naive_loops(shape: tuple[int, int], smoothing: float) -> None:
    logits, labels = ce_arrays(shape, seed=1)
    loss, cache = cross_entropy_forward(logits, labels, smoothing)
    assert abs(loss - naive.cross_entropy_forward(logits, labels, smoothing)) <= 1e-13 * max(1.0, abs(loss))
    assert rel_error(cross_entropy_backward(cache), naive.cross_entropy_backward(logits, labels, smoothing)) < 1e-13


def test_softmax_rows_sum_to_one_and_match_log_softmax() -> None:
    logits, _ = ce_arrays((5, 4), seed=2)
    probs = softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(np.log(probs), log_softmax(logits), rtol=1e-13)


@pytest.mark.parametrize("smoothing", SMOOTHING)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_gradient_matches_central_differences(shape: tuple[int, int], smoothing: float) -> None:
    # unsaturated logits: a loss near 0 leaves central differences mostly rounding error
    logits, labels = ce_arrays(shape, seed=3, scale=1.0)
    errors = gradient_errors(
        lambda: np.float64(cross_entropy_forward(logits, labels, smoothing)[0]),
        lambda d: {"logits": cross_entropy_backward(cross_entropy_forward(logits, labels, smoothing)[1]) * d},
        {"logits": logits})
    assert errors["logits"] < 1e-7


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("smoothing", SMOOTHING)
@pytest.mark.parametrize("shape", SHAPES)
def test_cross_entropy_matches_torch(parity, shape: tuple[int, int], smoothing: float, dtype) -> None:
    logits, labels = ce_arrays(shape, seed=4, dtype=dtype)
    loss_fn = CrossEntropyLoss(label_smoothing=smoothing)
    loss = loss_fn(logits, labels)
    dlogits = loss_fn.backward()
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels), label_smoothing=smoothing)
    loss_t.backward()
    assert isinstance(loss, float)
    parity.check("cross_entropy", "loss", np.asarray(loss, dtype), loss_t)
    parity.check("cross_entropy", "dlogits", dlogits, logits_t.grad)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_give_a_finite_exact_loss(dtype) -> None:
    logits = np.array([[1000.0, -1000.0]], dtype)
    loss, cache = cross_entropy_forward(logits, np.array([1]))
    assert loss == 2000.0
    dlogits = cross_entropy_backward(cache)
    assert dlogits.dtype == dtype
    np.testing.assert_array_equal(dlogits, [[1.0, -1.0]])
    loss, cache = cross_entropy_forward(logits, np.array([0]))
    assert loss == 0.0
    np.testing.assert_array_equal(cross_entropy_backward(cache), [[0.0, 0.0]])
    loss, cache = cross_entropy_forward(np.array([[1000.0, 1000.0], [-1000.0, -1000.0]], dtype), np.array([0, 1]))
    assert loss == pytest.approx(np.log(2.0), rel=1e-6)
    assert np.isfinite(cross_entropy_backward(cache)).all()


def test_loss_layer_backward_scales_by_the_upstream_gradient() -> None:
    logits, labels = ce_arrays((4, 3), seed=5)
    loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    loss_fn(logits, labels)
    once = loss_fn.backward()
    loss_fn(logits, labels)
    np.testing.assert_allclose(loss_fn.backward(2.5), 2.5 * once, rtol=1e-15)
