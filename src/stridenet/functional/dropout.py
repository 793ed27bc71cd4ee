"""Inverted dropout: zero each activation with probability p, scale survivors by 1/(1-p)."""

from __future__ import annotations

import numpy as np


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(out, mask)``, ``mask`` holding 0 or 1/(1-p) in x's dtype (all zeros when p == 1)."""
    if p >= 1.0:
        mask = np.zeros_like(x)
    else:
        mask = (rng.random(x.shape) >= p).astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dout * mask
