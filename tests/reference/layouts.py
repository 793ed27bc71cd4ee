"""Memory layouts for tests: the same values laid out as stridenet's kernels hand them on."""

from __future__ import annotations

import numpy as np


def channels_last(a: np.ndarray) -> np.ndarray:
    """The same (N, C, H, W) values, laid out (N, H, W, C) in memory, as convolutions hand them on."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def cast(arrays: tuple[np.ndarray | None, ...], dtype: type, layout: str = "nchw") -> list[np.ndarray | None]:
    """The arrays in ``dtype`` (None stays None); 4-d ones laid out channels-last if ``layout`` says so."""
    result = []
    for a in arrays:
        if a is not None:
            a = a.astype(dtype)
            if a.ndim == 4 and layout == "channels_last":
                a = channels_last(a)
        result.append(a)
    return result
