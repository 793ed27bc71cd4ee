"""Layer contract beyond the shared table (tests/nn/test_nn_layer_table.py): the loss layer, train/eval
switching through containers, and dropout's behaviour in each mode."""

from __future__ import annotations

import numpy as np
import pytest

from stridenet import nn


def logits_and_labels(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)).astype(dtype), rng.integers(0, 3, 4)


def test_loss_backward_before_forward_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"CrossEntropyLoss\(\): backward called before forward"):
        nn.CrossEntropyLoss().backward()


def test_loss_backward_needs_a_fresh_forward_each_time() -> None:
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(*logits_and_labels())
    loss_fn.backward()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss_fn.backward()


def test_loss_under_no_grad_keeps_no_cache() -> None:
    loss_fn = nn.CrossEntropyLoss()
    with nn.no_grad():
        assert np.isfinite(loss_fn(*logits_and_labels()))
    assert nn.grad_enabled()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        loss_fn.backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_gradient_keeps_the_logits_dtype(dtype) -> None:
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    loss = loss_fn(*logits_and_labels(dtype))
    assert isinstance(loss, float)
    assert loss_fn.backward().dtype == dtype
    loss_fn(*logits_and_labels(dtype))
    assert loss_fn.backward(0.5).dtype == dtype


def test_train_and_eval_reach_every_layer_inside_containers() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2),
                          nn.Residual(nn.Sequential(nn.Dropout(0.5), nn.Identity()), nn.Conv2d(2, 2, 1)))
    assert model.eval() is model
    assert not any(module.training for module in model.modules())
    assert model.train() is model
    assert all(module.training for module in model.modules())
    assert len(list(model.modules())) == 8


def test_dropout_is_the_identity_in_eval_mode() -> None:
    drop = nn.Dropout(0.9, rng=0).eval()
    x = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_array_equal(drop(x), x)
    dout = np.ones_like(x)
    np.testing.assert_array_equal(drop.backward(dout), dout)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_inverted_scaling_preserves_the_mean(p: float) -> None:
    drop = nn.Dropout(p, rng=2)
    x = np.random.default_rng(3).uniform(0.5, 1.5, (400, 500))
    out = drop(x)
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
    # E[out] = E[x]; the standard error of the mean of x*mask/(1-p) is below sqrt(p/(1-p)) * 1.5/sqrt(n)
    assert abs(out.mean() - x.mean()) < 4 * np.sqrt(p / (1 - p)) * 1.5 / np.sqrt(x.size)
    dx = drop.backward(np.ones_like(x))
    np.testing.assert_array_equal(dx != 0, kept)           # backward uses the forward's mask
    np.testing.assert_allclose(dx[kept], 1 / (1 - p), rtol=1e-12)


def test_dropout_is_reproducible_with_a_seed() -> None:
    x = np.ones((6, 50), np.float32)
    first, second, other = nn.Dropout(0.5, rng=7), nn.Dropout(0.5, rng=7), nn.Dropout(0.5, rng=8)
    masks = [(first(x), second(x), other(x)) for _ in range(2)]
    for a, b, c in masks:
        np.testing.assert_array_equal(a, b)
        assert (a != c).any()
    assert (masks[0][0] != masks[1][0]).any()              # a fresh mask for every forward pass


def test_dropout_p_zero_and_one() -> None:
    x = np.random.default_rng(4).standard_normal((3, 4))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)
    np.testing.assert_array_equal(nn.Dropout(1.0, rng=0)(x), np.zeros_like(x))


def test_dropout_in_eval_mode_under_no_grad_keeps_no_cache() -> None:
    drop = nn.Dropout(0.5, rng=0).eval()
    with nn.no_grad():
        drop(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        drop.backward(np.ones((2, 3)))


def test_input_grad_skipped_drops_only_the_first_layers_input_gradient() -> None:
    def build() -> nn.Sequential:
        return nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, rng=0), nn.ReLU()),
                             nn.Conv2d(4, 2, 3, stride=2, rng=1), nn.Flatten())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    full, skipped = build(), build()
    dout = rng.standard_normal(full(x).shape).astype(np.float32)
    dx = full.backward(dout)
    assert dx.shape == x.shape
    skipped(x)
    with nn.input_grad_skipped(skipped):
        assert nn.first_layer(skipped) is skipped[0][0]
        assert skipped.backward(dout) is None
    for (name, a), (_, b) in zip(full.named_parameters(), skipped.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    skipped(x)   # restored afterwards: the input gradient is back
    np.testing.assert_array_equal(skipped.backward(dout), dx)
