"""Activation and regularisation layers: ReLU, LeakyReLU, Dropout, Identity."""

from __future__ import annotations

import numpy as np

from stridenet.functional.activation import (
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
)
from stridenet.functional.dropout import dropout_backward, dropout_forward
from stridenet.nn.init import RngLike, as_generator
from stridenet.nn.layer import Layer, grad_enabled

# the cache of a layer whose forward passed its input through unchanged
_PASS_THROUGH = object()


class ReLU(Layer):
    """``max(x, 0)`` elementwise; any shape in, same shape out."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, positive = relu_forward(x, keep_mask=grad_enabled())
        self._keep(positive)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return relu_backward(dout, self._take_cache())


class LeakyReLU(Layer):
    """``x`` where positive, ``negative_slope * x`` elsewhere (default slope 0.01)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, positive = leaky_relu_forward(x, self.negative_slope)
        self._keep(positive)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return leaky_relu_backward(dout, self._take_cache(), self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope:g}"


class Dropout(Layer):
    """Inverted dropout: in training, zero each value with probability p and scale the rest by
    1/(1-p), so evaluation (where it is the identity) needs no rescaling.

    Args:
        p: drop probability in [0, 1] (default 0.5).
        rng: Generator or seed for the masks.
    """

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1], received {p!r}")
        self.p = float(p)
        self.rng = as_generator(rng)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._keep(_PASS_THROUGH)
            return x
        out, mask = dropout_forward(x, self.p, self.rng)
        self._keep(mask)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        mask = self._take_cache()
        return dout if mask is _PASS_THROUGH else dropout_backward(dout, mask)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class Identity(Layer):
    """Passes its input through unchanged (a placeholder shortcut or head)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._keep(_PASS_THROUGH)
        return x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        self._take_cache()
        return dout
