"""BatchNorm1d/2d against torch over several training steps, then evaluation: outputs, gradients and
running statistics (momentum, cumulative average, unbiased variance, num_batches_tracked)."""

from __future__ import annotations

import numpy as np
import pytest

from stridenet import nn

torch = pytest.importorskip("torch")

# (class name, constructor kwargs, input shape)
CONFIGS = {
    "2d": ("BatchNorm2d", {}, (4, 3, 5, 5)),
    "2d-cumulative": ("BatchNorm2d", {"momentum": None}, (3, 2, 3, 4)),
    "2d-no-affine-momentum0.5": ("BatchNorm2d", {"affine": False, "momentum": 0.5}, (2, 3, 4, 4)),
    "2d-no-running-stats": ("BatchNorm2d", {"track_running_stats": False}, (4, 2, 3, 3)),
    "1d": ("BatchNorm1d", {}, (8, 6)),
    "1d-3d-eps": ("BatchNorm1d", {"eps": 1e-3}, (5, 4, 7)),
}


def step_batch(shape: tuple[int, ...], step: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A batch whose channel means and scales drift from step to step, and an output gradient."""
    rng = np.random.default_rng(step)
    channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3.0, channel) + rng.normal(step, 1.0, channel)
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("config", CONFIGS)
def test_batch_norm_matches_torch_over_training_steps_then_eval(parity, config: str, dtype) -> None:
    name, kwargs, shape = CONFIGS[config]
    ours = getattr(nn, name)(shape[1], **kwargs).astype(dtype)
    theirs = getattr(torch.nn, name)(shape[1], **kwargs).to(torch.float64 if dtype == np.float64 else torch.float32)
    op = "batch_norm layer"
    for step, training in enumerate([True, True, True, False, False]):
        ours.train(training)
        theirs.train(training)
        x, dout = step_batch(shape, step, dtype)
        xt = torch.tensor(x, requires_grad=True)
        theirs.zero_grad()
        ours.zero_grad()
        out_t = theirs(xt)
        out_t.backward(torch.from_numpy(dout))
        mode = "train" if training else "eval"
        parity.check(op, f"{mode} out", ours(x), out_t)
        parity.check(op, f"{mode} dx", ours.backward(dout), xt.grad)
        for param_name, p in theirs.named_parameters():
            parity.check(op, f"{mode} d{param_name}", getattr(ours, param_name).grad, p.grad)
        if kwargs.get("track_running_stats", True):
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                parity.check(op, buffer, getattr(ours, buffer), getattr(theirs, buffer))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batch_norm_eval_uses_the_running_statistics(dtype) -> None:
    bn = nn.BatchNorm2d(3).astype(dtype)
    bn.running_mean = np.array([1.0, -2.0, 0.5], dtype)
    bn.running_var = np.array([4.0, 0.25, 1.0], dtype)
    bn.weight.data[...] = [2.0, 1.0, -1.0]
    bn.bias.data[...] = [0.0, 1.0, 3.0]
    x, _ = step_batch((2, 3, 4, 4), 0, dtype)
    bn.eval()
    out = bn(x)
    expected = (x - bn.running_mean.reshape(1, 3, 1, 1)) / np.sqrt(bn.running_var.reshape(1, 3, 1, 1) + 1e-5) \
        * bn.weight.data.reshape(1, 3, 1, 1) + bn.bias.data.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert bn.num_batches_tracked == 0
    np.testing.assert_array_equal(bn.running_mean, [1.0, -2.0, 0.5])
