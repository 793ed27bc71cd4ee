"""Initialisation: PyTorch's default bounds for Conv2d/Linear, seeds, and the He/Glorot formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stridenet import nn
from stridenet.nn import init

torch = pytest.importorskip("torch")

# (our layer, the same layer in torch, fan_in = in_channels/groups * kH * kW or in_features)
LAYERS = {
    "Conv2d": (lambda rng: nn.Conv2d(16, 64, 3, rng=rng), lambda: torch.nn.Conv2d(16, 64, 3), 16 * 9),
    "Conv2d-groups": (lambda rng: nn.Conv2d(8, 64, (3, 2), groups=4, rng=rng),
                      lambda: torch.nn.Conv2d(8, 64, (3, 2), groups=4), 2 * 6),
    "Linear": (lambda rng: nn.Linear(100, 64, rng=rng), lambda: torch.nn.Linear(100, 64), 100),
}


@pytest.mark.parametrize("name", LAYERS)
def test_default_init_is_torch_uniform_bound(name: str) -> None:
    """Weights and biases in U(-1/sqrt(fan_in), 1/sqrt(fan_in)): below the bound and close to it,
    as torch's own layer of the same shape."""
    ours_factory, torch_factory, fan_in = LAYERS[name]
    bound = 1 / math.sqrt(fan_in)
    ours = ours_factory(0)
    torch.manual_seed(0)
    theirs = torch_factory()
    for param in ("weight", "bias"):
        values = getattr(ours, param).data
        theirs_max = float(getattr(theirs, param).detach().abs().max())
        # n draws of U(-b, b) all fall below `close` with probability 1e-6
        close = bound * 1e-6 ** (1 / values.size)
        assert values.dtype == np.float32
        assert close < np.abs(values).max() <= bound
        assert close < theirs_max <= bound * (1 + 1e-6)      # torch's bound is the same
        assert abs(values.mean()) < 5 * bound / math.sqrt(3 * values.size)


@pytest.mark.parametrize("name", LAYERS)
def test_a_seed_reproduces_identical_weights(name: str) -> None:
    factory = LAYERS[name][0]
    first, second, other = factory(5), factory(5), factory(6)
    for param in ("weight", "bias"):
        np.testing.assert_array_equal(getattr(first, param).data, getattr(second, param).data)
        assert not np.array_equal(getattr(first, param).data, getattr(other, param).data)
    generator = np.random.default_rng(9)
    np.testing.assert_array_equal(factory(generator).weight.data, factory(9).weight.data)


def test_dtype_argument_sets_the_parameter_dtype() -> None:
    conv = nn.Conv2d(2, 3, 3, dtype=np.float64, rng=0)
    assert conv.weight.data.dtype == conv.bias.data.dtype == conv.weight.grad.dtype == np.float64
    assert nn.Linear(2, 3, dtype=np.float64, rng=0).weight.data.dtype == np.float64


SHAPE = (128, 64, 3, 3)                   # fan_in 576, fan_out 1152, 73,728 draws
FAN_IN, FAN_OUT = 64 * 9, 128 * 9


@pytest.mark.parametrize(("function", "kwargs", "expected_std"), [
    (init.kaiming_normal, {}, math.sqrt(2 / FAN_IN)),
    (init.kaiming_normal, {"mode": "fan_out"}, math.sqrt(2 / FAN_OUT)),
    (init.kaiming_normal, {"negative_slope": 0.2}, math.sqrt(2 / (1 + 0.04) / FAN_IN)),
    (init.kaiming_uniform, {}, math.sqrt(2 / FAN_IN)),
    (init.kaiming_uniform, {"mode": "fan_out", "negative_slope": 0.1}, math.sqrt(2 / (1 + 0.01) / FAN_OUT)),
    (init.xavier_normal, {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.xavier_normal, {"gain": 2.0}, 2 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.xavier_uniform, {}, math.sqrt(2 / (FAN_IN + FAN_OUT))),
    (init.xavier_uniform, {"gain": 0.5}, 0.5 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
], ids=["kaiming_normal", "kaiming_normal-fan_out", "kaiming_normal-leaky", "kaiming_uniform",
        "kaiming_uniform-fan_out-leaky", "xavier_normal", "xavier_normal-gain", "xavier_uniform",
        "xavier_uniform-gain"])
def test_init_std_matches_the_formula(function, kwargs, expected_std: float) -> None:
    values = function(SHAPE, rng=0, **kwargs)
    assert values.shape == SHAPE
    assert values.dtype == np.float32
    # the sample std of n draws has a relative standard error below 1/sqrt(n) (~0.4% here)
    assert values.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(values.mean()) < 4 * expected_std / math.sqrt(values.size)
    np.testing.assert_array_equal(values, function(SHAPE, rng=0, **kwargs))


def test_uniform_inits_respect_their_bound() -> None:
    bound = math.sqrt(2) * math.sqrt(3 / FAN_IN)
    values = init.kaiming_uniform(SHAPE, rng=1, dtype=np.float64)
    assert values.dtype == np.float64
    assert bound * 0.999 < np.abs(values).max() <= bound
    bound = math.sqrt(6 / (FAN_IN + FAN_OUT))
    assert bound * 0.999 < np.abs(init.xavier_uniform(SHAPE, rng=1)).max() <= bound


def test_fans_of_linear_and_conv_weights() -> None:
    assert init.fans((10, 20)) == (20, 10)
    assert init.fans((8, 4, 3, 5)) == (60, 120)
    with pytest.raises(ValueError, match="rank at least 2"):
        init.fans((7,))
