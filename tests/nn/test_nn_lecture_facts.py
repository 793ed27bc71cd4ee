"""The lecture's facts about convolutions, checked on the layers: outputs and gradients.

- a 1x1 convolution is a Linear layer applied at every pixel;
- a Linear layer on a flattened C x H x W input is a convolution with one H x W filter per output;
- a shared filter's gradient is the sum of its gradients at every position it was applied at.
"""

from __future__ import annotations

import numpy as np

from stridenet import nn

RTOL = 1e-12


def test_1x1_convolution_is_a_linear_layer_at_every_pixel() -> None:
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(5, 3, 1, dtype=np.float64, rng=1)
    linear = nn.Linear(5, 3, dtype=np.float64, rng=2)
    linear.weight.data[...] = conv.weight.data.reshape(3, 5)
    linear.bias.data[...] = conv.bias.data
    x, dout = rng.standard_normal((2, 5, 4, 6)), rng.standard_normal((2, 3, 4, 6))

    out_conv = conv(x)
    out_linear = linear(x.transpose(0, 2, 3, 1))                   # (N, H, W, C) -> (N, H, W, K)
    np.testing.assert_allclose(out_conv, out_linear.transpose(0, 3, 1, 2), rtol=RTOL)

    dx_conv = conv.backward(dout)
    dx_linear = linear.backward(dout.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(dx_conv, dx_linear.transpose(0, 3, 1, 2), rtol=RTOL)
    np.testing.assert_allclose(conv.weight.grad.reshape(3, 5), linear.weight.grad, rtol=RTOL)
    np.testing.assert_allclose(conv.bias.grad, linear.bias.grad, rtol=RTOL)


def test_linear_on_a_flattened_volume_is_a_convolution_with_a_full_size_filter() -> None:
    rng = np.random.default_rng(3)
    C, H, W, K = 3, 4, 5, 6
    conv = nn.Conv2d(C, K, (H, W), dtype=np.float64, rng=4)
    linear = nn.Linear(C * H * W, K, dtype=np.float64, rng=5)
    linear.weight.data[...] = conv.weight.data.reshape(K, C * H * W)
    linear.bias.data[...] = conv.bias.data
    x, dout = rng.standard_normal((2, C, H, W)), rng.standard_normal((2, K))

    out_conv = conv(x)
    assert out_conv.shape == (2, K, 1, 1)
    np.testing.assert_allclose(out_conv.reshape(2, K), linear(x.reshape(2, -1)), rtol=RTOL)

    dx_conv = conv.backward(dout.reshape(2, K, 1, 1))
    np.testing.assert_allclose(dx_conv, linear.backward(dout).reshape(x.shape), rtol=RTOL)
    np.testing.assert_allclose(conv.weight.grad.reshape(K, -1), linear.weight.grad, rtol=RTOL)
    np.testing.assert_allclose(conv.bias.grad, linear.bias.grad, rtol=RTOL)


def test_shared_filter_gradient_is_the_sum_of_its_per_position_gradients() -> None:
    rng = np.random.default_rng(6)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dtype=np.float64, rng=7)
    x = rng.standard_normal((2, 2, 7, 7))
    dout = rng.standard_normal(conv(x).shape)
    conv.backward(dout)
    dw, db = conv.weight.grad.copy(), conv.bias.grad.copy()

    x_padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    by_formula, by_backward = np.zeros_like(dw), np.zeros_like(dw)
    db_sum = np.zeros_like(db)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            window = x_padded[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]           # (N, C, 3, 3)
            # this position's contribution: the window it saw, weighted by its upstream gradient
            by_formula += np.einsum("nk,nchw->kchw", dout[:, :, i, j], window)
            # the same contribution from backward, with the upstream gradient of every other position zeroed
            only_here = np.zeros_like(dout)
            only_here[:, :, i, j] = dout[:, :, i, j]
            conv.zero_grad()
            conv(x)
            conv.backward(only_here)
            by_backward += conv.weight.grad
            db_sum += conv.bias.grad
    np.testing.assert_allclose(by_formula, dw, rtol=RTOL)
    np.testing.assert_allclose(by_backward, dw, rtol=RTOL)
    np.testing.assert_allclose(db_sum, db, rtol=RTOL)
