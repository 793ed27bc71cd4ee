"""Memory layout behind the NCHW API: channels-last arrays and reusable scratch buffers.

Every kernel takes and returns arrays of *shape* (N, C, H, W), as PyTorch does. Their *memory* may be
ordered (N, H, W, C) ("channels-last", PyTorch's ``torch.channels_last``): the array is then the
transpose view ``x_nhwc.transpose(0, 3, 1, 2)``. Convolutions produce that layout, because a matrix
product over (N*H*W, C) rows writes it directly, and pooling and elementwise NumPy ops keep it, so a
chain of layers never pays for converting between the two.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_local = threading.local()


def is_channels_last(x: np.ndarray) -> bool:
    """True when the (N, C, H, W) array ``x`` is laid out (N, H, W, C) in memory, with no gaps."""
    return x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous


def to_nhwc(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> contiguous (N, H, W, C): a view when ``x`` is channels-last, else a copy."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def contiguous(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` itself where it is C-contiguous, else a copy in this thread's scratch array ``name``: for a
    range of a batch that one thread works on, copied while the rest of the batch is copied elsewhere."""
    if x.flags.c_contiguous:
        return x
    copy = scratch(name, x.shape, x.dtype)
    np.copyto(copy, x)
    return copy


def as_nchw(x_nhwc: np.ndarray) -> np.ndarray:
    """(N, H, W, C) -> the (N, C, H, W) view of the same memory (channels-last)."""
    return x_nhwc.transpose(0, 3, 1, 2)


def empty_nchw(shape: tuple[int, int, int, int], dtype: np.dtype, channels_last: bool,
               zeros: bool = False) -> np.ndarray:
    """A new (N, C, H, W) array, laid out channels-last or plain NCHW."""
    make = np.zeros if zeros else np.empty
    if channels_last:
        N, C, H, W = shape
        return as_nchw(make((N, H, W, C), dtype))
    return make(shape, dtype)


def scratch(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A reusable uninitialised work array, one per ``name`` and thread.

    Kernels write their im2col columns and padded tiles here instead of allocating fresh arrays:
    a fresh multi-megabyte array costs a page fault per 4 KiB on first touch, a reused one is
    already mapped (and often still in cache). The memory grows to the largest request and stays;
    chunking keeps every request below ``_im2col.COLS_BUDGET`` or one image's activations, except the
    shifted path's weight-gradient sums (one kH*kW*C*K array per block of images, ``_shifted.weight_sums``)
    and a grouped convolution's output and input gradient for one group (``conv._forward_grouped``).
    Two arrays in use at the same time must have different names.
    """
    try:
        buffers: dict[str, np.ndarray] = _local.buffers
    except AttributeError:
        buffers = _local.buffers = {}
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = buffers.get(name)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[name] = np.empty(max(nbytes, 64), np.uint8)
    return np.ndarray(shape, dtype, buffer)
