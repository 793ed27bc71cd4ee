"""Elementwise non-linearities. The cache is the boolean mask of positive inputs."""

from __future__ import annotations

from types import EllipsisType

import numpy as np

from stridenet.functional._parallel import image_slices, run_parallel


def relu_forward(x: np.ndarray, keep_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``max(x, 0)`` (NaN stays NaN, as in PyTorch) and the mask of positive inputs, which backward
    needs (None with ``keep_mask=False``, for inference); the gradient at exactly 0 is taken as 0.

    ``np.maximum`` and a multiply by the mask are several times faster than ``np.where`` on
    mixed-sign data, and keep a channels-last input's memory layout.
    """
    out = np.empty_like(x)                                           # x's memory layout
    positive = np.empty_like(x, dtype=bool) if keep_mask else None

    def part(s: slice | EllipsisType) -> None:
        np.maximum(x[s], x.dtype.type(0), out=out[s])
        if positive is not None:
            np.greater(x[s], 0, out=positive[s])

    run_parallel(part, _slices(x))
    return out, positive


def relu_backward(dout: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """``dout`` where the input was positive, 0 elsewhere (also for non-finite ``dout``, as PyTorch)."""
    dx = np.empty_like(dout)
    run_parallel(lambda s: through_relu(dout[s], positive[s], dx[s]), _slices(dout))
    return dx


def through_relu(dout: np.ndarray, positive: np.ndarray, out: np.ndarray, checked: bool = True) -> np.ndarray:
    """``relu_backward`` of one block into ``out`` (any array of ``dout``'s shape); returns ``out``.

    A multiply by the mask, then one summing pass to see that nothing was infinite or NaN (where
    ``inf * 0`` would have made a NaN): only then is the slower exact ``np.where`` needed. With
    ``checked=False``, only the multiply: the caller looks at the result itself (a sum it needs
    anyway) and calls again with ``checked=True`` if that is not finite.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        np.multiply(dout, positive, out=out)
        if not checked or np.isfinite(out.sum()):   # a sum that overflows takes the exact path too
            return out
    np.copyto(out, np.where(positive, dout, np.zeros((), dout.dtype)))
    return out


def _slices(x: np.ndarray) -> list[slice] | list[EllipsisType]:
    """Ranges of the first axis to work on in parallel (see ``_parallel``); the whole of a 0-d array."""
    return image_slices(x.shape[0], x.size) if x.ndim else [...]


def leaky_relu_forward(x: np.ndarray, negative_slope: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    positive = x > 0
    return np.where(positive, x, x * x.dtype.type(negative_slope)), positive


def leaky_relu_backward(dout: np.ndarray, positive: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return np.where(positive, dout, dout * dout.dtype.type(negative_slope))
