"""``Linear`` (fully connected) and ``Flatten``."""

from __future__ import annotations

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional.linear import linear_backward, linear_forward
from stridenet.nn._args import positive_int
from stridenet.nn.init import RngLike, as_generator, torch_default_bias, torch_default_weight
from stridenet.nn.layer import Layer, Parameter


class Linear(Layer):
    """Fully connected layer ``y = x W^T + b``, weight (out_features, in_features) as PyTorch.

    Args:
        in_features: size of each input vector.
        out_features: size of each output vector.
        bias: learn an additive bias (default True).
        dtype: parameter dtype (default float32).
        rng: Generator or seed for PyTorch's default initialisation.

    Shape:
        (*, in_features) -> (*, out_features).

    Example:
        >>> Linear(3136, 128, rng=0)(np.zeros((8, 3136), np.float32)).shape
        (8, 128)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, dtype=np.float32,
                 rng: RngLike = None) -> None:
        super().__init__()
        name = f"Linear({in_features}, {out_features})"
        self.in_features = positive_int(in_features, "in_features", name)
        self.out_features = positive_int(out_features, "out_features", name)
        generator = as_generator(rng)
        self.weight = Parameter(torch_default_weight((out_features, in_features), generator, dtype))
        self.bias = Parameter(torch_default_bias(out_features, in_features, generator, dtype)) if bias else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, cache = linear_forward(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._keep(cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dw, db = linear_backward(dout, self._take_cache())
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.grad += db
        return dx

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}" + ("" if self.bias is not None else ", bias=False")


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), in PyTorch's (row-major) order."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 2:
            raise ShapeError(f"expected an input with a batch axis and at least one more, received shape {x.shape}")
        self._keep(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        shape = self._take_cache()
        if dout.shape != (shape[0], int(np.prod(shape[1:]))):
            raise ShapeError(f"expected an output gradient of shape {(shape[0], int(np.prod(shape[1:])))}, "
                             f"received {dout.shape}")
        return dout.reshape(shape)
