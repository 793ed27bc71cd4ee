"""Stateless kernels: each op is a ``*_forward(...) -> (out, cache)`` / ``*_backward(dout, cache)`` pair."""

from stridenet.functional.activation import leaky_relu_backward, leaky_relu_forward, relu_backward, relu_forward
from stridenet.functional.conv import (
    conv2d_backward,
    conv2d_forward,
    conv2d_relu_forward,
    conv2d_relu_pool_forward,
)
from stridenet.functional.dropout import dropout_backward, dropout_forward
from stridenet.functional.linear import linear_backward, linear_forward
from stridenet.functional.loss import cross_entropy_backward, cross_entropy_forward, log_softmax, softmax
from stridenet.functional.norm import batch_norm_backward, batch_norm_forward
from stridenet.functional.pool import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)

__all__ = [
    "avg_pool2d_backward", "avg_pool2d_forward", "batch_norm_backward", "batch_norm_forward",
    "conv2d_backward", "conv2d_forward", "conv2d_relu_forward", "conv2d_relu_pool_forward", "cross_entropy_backward",
    "cross_entropy_forward",
    "dropout_backward", "dropout_forward", "global_avg_pool2d_backward", "global_avg_pool2d_forward",
    "leaky_relu_backward", "leaky_relu_forward", "linear_backward", "linear_forward", "log_softmax",
    "max_pool2d_backward", "max_pool2d_forward", "relu_backward", "relu_forward", "softmax",
]
