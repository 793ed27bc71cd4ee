"""Memory layouts for tests: the same values laid out as stridenet's kernels hand them on."""

from __future__ import annotations

import numpy as np


def channels_last(a: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values, laid out (N, H, W, C) in memory, as convolutions hand them on."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
