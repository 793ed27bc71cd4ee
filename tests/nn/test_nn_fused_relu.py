"""``Sequential`` runs a ``Conv2d`` directly followed by a ``ReLU`` as one pass, forward and backward.

What a user can observe must not change: the outputs and gradients of the fused pair equal those of
the two layers run one after the other, both layers keep their caches and errors, and a layer whose
forward or backward has been replaced (as ``viz.probe.recording`` does to see a conv's own,
unrectified output) is run on its own.
"""

from __future__ import annotations

import numpy as np
import pytest

from stridenet import nn
from stridenet.errors import ShapeError
from stridenet.viz import probe


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1, rng=0), nn.ReLU(),                  # channel-major first layer
        nn.Conv2d(6, 10, 3, padding=1, rng=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(10, 12, 3, stride=2, padding=1, rng=2), nn.ReLU(),      # stride 2: phases
        nn.Sequential(nn.Conv2d(12, 12, 1, rng=3), nn.ReLU()),           # nested; 1x1
        nn.Flatten(), nn.Linear(12 * 4 * 4, 5, rng=4), nn.ReLU(), nn.Linear(5, 3, rng=5),
    )


def one_by_one(model: nn.Sequential, x: np.ndarray) -> np.ndarray:
    for layer in model:
        x = one_by_one(layer, x) if isinstance(layer, nn.Sequential) else layer(x)
    return x


def back_one_by_one(model: nn.Sequential, dout: np.ndarray) -> np.ndarray:
    for layer in reversed(list(model)):
        dout = back_one_by_one(layer, dout) if isinstance(layer, nn.Sequential) else layer.backward(dout)
    return dout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_pairs_give_the_numbers_of_the_layers_run_one_by_one(dtype) -> None:
    model = make_model().astype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 16, 16)).astype(dtype)
    out = model(x)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = model.backward(dout)
    grads = [p.grad.copy() for p in model.parameters()]

    model.zero_grad()
    np.testing.assert_array_equal(one_by_one(model, x), out)
    np.testing.assert_array_equal(back_one_by_one(model, dout), dx)
    for (name, p), fused in zip(model.named_parameters(), grads, strict=True):
        if name.endswith("bias"):   # float64 sums added up in blocks: the last float32 bit may move
            np.testing.assert_allclose(fused, p.grad, rtol=1e-6 if dtype == np.float32 else 1e-13, err_msg=name)
        else:
            np.testing.assert_array_equal(fused, p.grad, err_msg=name)


def test_fused_forward_sets_both_caches_and_keeps_none_under_no_grad() -> None:
    model = make_model()
    conv, relu = model[0], model[1]
    x = np.random.default_rng(1).standard_normal((2, 1, 16, 16)).astype(np.float32)
    with nn.no_grad():
        model(x)
    for layer in (conv, relu):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.ones((2, 6, 16, 16), np.float32))
    model(x)
    mask = relu._cache
    assert mask.shape == (2, 6, 16, 16) and mask.dtype == bool
    assert conv._cache.x.shape == (2, 1, 16, 16)                    # the input, kept channel-major


def test_recording_a_conv_sees_its_own_output_not_the_relu_s() -> None:
    model = make_model()
    x = np.random.default_rng(2).standard_normal((2, 1, 16, 16)).astype(np.float32)
    records = probe.activation_maps(model, x, (nn.Conv2d,))
    first = records[0].output
    assert first.min() < 0                                      # unrectified: the ReLU ran on its own
    np.testing.assert_array_equal(np.maximum(first, 0), model[1](model[0](x)))


def test_a_replaced_relu_forward_or_backward_is_called() -> None:
    model = make_model()
    relu = model[3]
    calls: list[str] = []
    plain_forward, plain_backward = relu.forward, relu.backward

    def forward(x):
        calls.append("forward")
        return plain_forward(x)

    def backward(dout):
        calls.append("backward")
        return plain_backward(dout)

    relu.forward, relu.backward = forward, backward
    x = np.random.default_rng(3).standard_normal((2, 1, 16, 16)).astype(np.float32)
    model.backward(np.ones(model(x).shape, np.float32))
    assert calls == ["forward", "backward"]


def test_errors_in_a_fused_pair_name_the_layer() -> None:
    model = make_model()
    with pytest.raises(ShapeError, match=r"^Conv2d\(1, 6, kernel_size=3, padding=1\): expected input with 1 "
                                         r"channels, received shape \(2, 3, 16, 16\)"):
        model(np.zeros((2, 3, 16, 16), np.float32))
    pair = nn.Sequential(nn.Conv2d(2, 4, 3, rng=0), nn.ReLU())
    pair(np.zeros((2, 2, 6, 6), np.float32))
    with pytest.raises(ShapeError, match=r"^Conv2d\(2, 4, kernel_size=3\): expected an output gradient of "
                                         r"shape \(2, 4, 4, 4\), received \(2, 4, 4, 3\)"):
        pair.backward(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(RuntimeError, match=r"ReLU\(\): backward called before forward"):
        pair.backward(np.zeros((2, 4, 4, 4), np.float32))


# -- inference: Conv2d, ReLU and a tiling MaxPool2d as one pass --------------------------------------
def _pool_model(pool: nn.MaxPool2d) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, rng=0), nn.ReLU(),
                         nn.Conv2d(12, 16, 3, padding=1, rng=1), nn.ReLU(), pool,     # shifted path, then pool
                         nn.Flatten())


def _fused_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    original = nn.Conv2d.forward_relu_pool

    def recorded(self, x, relu, pool):
        calls.append(x.shape[0])
        return original(self, x, relu, pool)

    monkeypatch.setattr(nn.Conv2d, "forward_relu_pool", recorded)
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_fuses_conv_relu_and_a_tiling_pool_with_the_same_numbers(dtype, monkeypatch) -> None:
    model = _pool_model(nn.MaxPool2d(2)).astype(dtype)
    x = np.random.default_rng(1).standard_normal((4, 3, 10, 10)).astype(dtype)
    expected = model(x)                                          # training mode: no pool fusion
    calls = _fused_calls(monkeypatch)
    with nn.no_grad():
        got = model(x)
    assert calls == [4]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2, stride=1), nn.MaxPool2d(3, stride=3, padding=1),
                                  nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, dilation=2)],
                         ids=["overlapping", "padded", "ceil-mode", "dilated"])
def test_pools_whose_windows_do_not_tile_run_on_their_own(pool, monkeypatch) -> None:
    model = _pool_model(pool)
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    expected = model(x)
    calls = _fused_calls(monkeypatch)
    with nn.no_grad():
        np.testing.assert_array_equal(model(x), expected)
    assert calls == []


def test_a_pool_whose_forward_was_replaced_is_not_fused(monkeypatch) -> None:
    model = _pool_model(nn.MaxPool2d(2))
    seen = []
    pool = model[4]
    pool.forward = lambda x: seen.append(x.shape) or nn.MaxPool2d.forward(pool, x)
    calls = _fused_calls(monkeypatch)
    with nn.no_grad():
        model(np.zeros((2, 3, 8, 8), np.float32))
    assert calls == [] and seen == [(2, 16, 8, 8)]


def test_the_fused_inference_pass_is_refused_with_gradients_on_and_leaves_no_stale_cache() -> None:
    model = _pool_model(nn.MaxPool2d(2))
    x = np.ones((2, 3, 8, 8), np.float32)
    with pytest.raises(RuntimeError, match="inside no_grad"):
        model[2].forward_relu_pool(x, model[3], model[4])
    model(x)                                                    # training forward: caches set
    with nn.no_grad():
        model(x)                                                # fused: the three layers' caches cleared
    for layer, shape in ((model[4], (2, 16, 4, 4)), (model[3], (2, 16, 8, 8)), (model[2], (2, 16, 8, 8))):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            layer.backward(np.ones(shape, np.float32))


def test_an_error_in_the_fused_inference_pass_names_the_layer_at_fault() -> None:
    """A pool window larger than the convolution's output: the same error, from the MaxPool2d, as without fusion."""
    model = _pool_model(nn.MaxPool2d(4))
    x = np.zeros((1, 3, 3, 3), np.float32)                      # 3x3 output, 4x4 windows
    with pytest.raises(ShapeError) as unfused:
        model(x)
    with nn.no_grad(), pytest.raises(ShapeError) as fused:
        model(x)
    assert str(fused.value) == str(unfused.value) and "MaxPool2d" in str(fused.value)
