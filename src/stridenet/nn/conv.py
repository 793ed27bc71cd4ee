"""``Conv2d``: the stateful layer around ``functional.conv``."""

from __future__ import annotations

import numpy as np

from stridenet.functional.conv import (
    PaddingArg,
    conv2d_backward,
    conv2d_forward,
    conv2d_relu_forward,
    conv2d_relu_pool_forward,
)
from stridenet.nn._args import non_negative_pair, positive_int, positive_pair, show_pair
from stridenet.nn.activation import ReLU
from stridenet.nn.init import RngLike, as_generator, fans, torch_default_bias, torch_default_weight
from stridenet.nn.layer import Layer, Parameter, grad_enabled, located


class Conv2d(Layer):
    """2-d convolution over an NCHW input, with PyTorch's arguments, defaults and weight layout.

    K filters of depth C/groups slide over the (zero-padded) input; each position gives a dot product
    plus bias. Weights are shared across positions, so backward sums their gradients over all of them.

    Args:
        in_channels: C, channels of the input.
        out_channels: K, number of filters (activation maps produced).
        kernel_size: F, int or (kH, kW).
        stride: S, int or pair (default 1).
        padding: P, int or pair of zeros on each side, or 'valid' (none) or 'same' (output ceil(W/S),
            TensorFlow's rule for any stride; PyTorch's for stride 1). Default 0.
        dilation: D, spacing between kernel taps (default 1).
        groups: split channels into independent groups; ``groups == in_channels`` is depthwise.
        bias: learn an additive bias per filter (default True).
        dtype: parameter dtype (default float32); inputs must have the same dtype.
        rng: Generator or seed for PyTorch's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    Shape:
        Input (N, C, H, W) -> output (N, K, H_out, W_out) with
        ``H_out = floor((H + 2P - D(F - 1) - 1)/S) + 1``, which is the lecture's (W - F + 2P)/S + 1 for D = 1.

    Raises:
        ValueError: at construction, for non-positive sizes or groups not dividing the channels.
        ShapeError: on call, for a wrong rank, channel count, dtype, or an output size below 1.

    Example:
        >>> conv = Conv2d(3, 6, kernel_size=5, rng=0)
        >>> conv(np.zeros((2, 3, 32, 32), np.float32)).shape
        (2, 6, 28, 28)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: PaddingArg = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1, bias: bool = True, *,
                 dtype=np.float32, rng: RngLike = None) -> None:
        super().__init__()
        name = f"Conv2d({in_channels}, {out_channels}, kernel_size={kernel_size!r})"
        self.in_channels = positive_int(in_channels, "in_channels", name)
        self.out_channels = positive_int(out_channels, "out_channels", name)
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.stride = positive_pair(stride, "stride", name)
        self.dilation = positive_pair(dilation, "dilation", name)
        self.groups = positive_int(groups, "groups", name)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"{name}: padding must be an int, a pair, 'valid' or 'same', received {padding!r}")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = non_negative_pair(padding, "padding", name)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: groups={groups} must divide in_channels={in_channels} "
                             f"and out_channels={out_channels}")
        generator = as_generator(rng)
        shape = (out_channels, in_channels // groups, *self.kernel_size)
        self.weight = Parameter(torch_default_weight(shape, generator, dtype))
        self.bias = Parameter(torch_default_bias(out_channels, fans(shape)[0], generator, dtype)) if bias else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, cache = conv2d_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                    self.stride, self.padding, self.dilation, self.groups)
        self._keep(cache)
        return out

    def forward_relu(self, x: np.ndarray, relu: ReLU) -> np.ndarray:
        """``relu(self(x))`` with the ReLU done on each block of output while it is in cache (see
        ``functional.conv2d_relu_forward``): the same numbers, and both layers' caches set, so
        ``self.backward(relu.backward(dout))`` follows as usual. ``Sequential`` uses it for a
        Conv2d directly followed by a ReLU."""
        with located(self):
            out, cache, positive = conv2d_relu_forward(
                x, self.weight.data, None if self.bias is None else self.bias.data, self.stride, self.padding,
                self.dilation, self.groups, keep_mask=grad_enabled())
        self._keep(cache)
        relu._keep(positive)
        return out

    def forward_relu_pool(self, x: np.ndarray, relu: ReLU, pool: Layer) -> np.ndarray:
        """``pool(relu(self(x)))`` for inference (inside ``no_grad``: no layer keeps a cache), with the ReLU
        and the max pooling (a ``MaxPool2d`` whose windows tile its input: stride = window, no padding)
        done on each block of output while it is in cache (``functional.conv2d_relu_pool_forward``).
        ``Sequential`` uses it for a Conv2d, a ReLU and such a MaxPool2d in a row."""
        if grad_enabled():
            raise RuntimeError(f"{self!r}: forward_relu_pool keeps no cache for backward; call it inside no_grad()")
        with located(self):
            out = conv2d_relu_pool_forward(x, self.weight.data, None if self.bias is None else self.bias.data,
                                           pool.kernel_size, self.stride, self.padding, self.dilation, self.groups)
        for layer in (self, relu, pool):
            layer._keep(None)                  # as each would in no_grad: no stale cache from an earlier pass
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray | None:
        return self._backward(dout, None)

    def backward_relu(self, dout: np.ndarray, relu: ReLU) -> np.ndarray | None:
        """``self.backward(relu.backward(dout))``, with the ReLU's gradient taken block by block inside
        this layer's backward (``conv2d_backward(..., positive=)``). ``Sequential`` uses it for a
        Conv2d directly followed by a ReLU."""
        positive = relu._take_cache()
        with located(self):
            return self._backward(dout, positive)

    def _backward(self, dout: np.ndarray, positive: np.ndarray | None) -> np.ndarray | None:
        dx, dw, db = conv2d_backward(dout, self._take_cache(), need_dx=self.input_grad, positive=positive)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self) -> str:
        k = self.kernel_size
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={k[0] if k[0] == k[1] else k}"
        text += show_pair("stride", self.stride, 1)
        if isinstance(self.padding, str):
            text += f", padding={self.padding!r}"
        else:
            text += show_pair("padding", self.padding, 0)
        text += show_pair("dilation", self.dilation, 1)
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
