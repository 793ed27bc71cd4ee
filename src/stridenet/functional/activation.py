"""Elementwise non-linearities. The cache is the boolean mask of positive inputs."""

from __future__ import annotations

import numpy as np


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)``; the gradient at exactly 0 is taken as 0, as in PyTorch."""
    positive = x > 0
    return np.where(positive, x, np.zeros((), x.dtype)), positive


def relu_backward(dout: np.ndarray, positive: np.ndarray) -> np.ndarray:
    return np.where(positive, dout, np.zeros((), dout.dtype))


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    positive = x > 0
    return np.where(positive, x, x * x.dtype.type(negative_slope)), positive


def leaky_relu_backward(dout: np.ndarray, positive: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return np.where(positive, dout, dout * dout.dtype.type(negative_slope))
