"""Pooling: max, average and global average, forward and backward, one kernel tap at a time.

A pooling window of kH x kW taps is handled as kH*kW strided views of the input, one per tap, each
of output shape (N, C, H_out, W_out): the max (or sum) of the windows is the elementwise max (or sum)
of these views. This works on any memory layout and is fastest on channels-last arrays, which is
what the convolutions produce; outputs and gradients keep the input's layout.

Max pooling routes the gradient to the position of the maximum. Where a window holds several equal
maxima the *first* one (in row-major order inside the window) gets it, as in PyTorch's CPU kernel;
where windows overlap, gradients routed to the same input pixel add up. Backward finds the first
maximum again by comparing the input with the output, instead of storing indices in forward, so
inference pays for nothing but the max. With numba installed, max pooling over windows that tile a
channels-last input (the usual 2x2) is one compiled pass each way instead (``_compiled``), by the
same rules; an NCHW-contiguous input too, each channel's plane taken as a one-channel channels-last
image (``_planes``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional import _compiled
from stridenet.functional._layout import empty_nchw, is_channels_last
from stridenet.functional._parallel import image_slices, run_parallel
from stridenet.functional.geometry import Pair, WindowAxis, pair, window_axes, window_slice


class MaxPool2dCache(NamedTuple):
    """References to the input and output (no copies): backward needs both unchanged."""

    x: np.ndarray             # (N, C, H, W) the input
    out: np.ndarray           # (N, C, H_out, W_out) the output, to find each window's first maximum
    axes: tuple[WindowAxis, WindowAxis]


class AvgPool2dCache(NamedTuple):
    x_shape: tuple[int, int, int, int]
    divisor: np.ndarray       # (H_out, W_out) number each window's sum was divided by
    axes: tuple[WindowAxis, WindowAxis]
    channels_last: bool       # layout of the input, which dx keeps


def _pool_axes(x: np.ndarray, kernel: int | Pair, stride: int | Pair | None, padding: int | Pair,
               dilation: int | Pair, ceil_mode: bool) -> tuple[WindowAxis, WindowAxis]:
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    k = pair(kernel, "kernel_size")
    s = k if stride is None else pair(stride, "stride")
    p = pair(padding, "padding")
    return window_axes(x.shape, k, s, pair(dilation, "dilation"), ((p[0], p[0]), (p[1], p[1])), ceil_mode)


def _padded(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis], value: float) -> np.ndarray:
    """A copy of ``x`` padded with ``value`` as ``axes`` ask (ceil_mode's extra too), in x's layout; or x itself."""
    h, w = axes
    if not (h.pad_lo or h.pad_hi + h.extra_hi or w.pad_lo or w.pad_hi + w.extra_hi):
        return x
    N, C, H, W = x.shape
    shape = (N, C, H + h.pad_lo + h.pad_hi + h.extra_hi, W + w.pad_lo + w.pad_hi + w.extra_hi)
    out = empty_nchw(shape, x.dtype, is_channels_last(x))
    out[...] = value
    out[:, :, h.pad_lo:h.pad_lo + H, w.pad_lo:w.pad_lo + W] = x
    return out


def _taps(xp: np.ndarray, axes: tuple[WindowAxis, WindowAxis]) -> Iterator[np.ndarray]:
    """The (N, C, H_out, W_out) view of each kernel tap, in row-major order within the window."""
    h, w = axes
    for i in range(h.kernel):
        for j in range(w.kernel):
            yield xp[:, :, window_slice(h, i), window_slice(w, j)]


def _overlapping(axes: tuple[WindowAxis, WindowAxis]) -> bool:
    """Whether some input pixel lies in more than one window (so gradients must be added, not set)."""
    return any(a.stride < a.dilation * (a.kernel - 1) + 1 and a.out > 1 for a in axes)


def _zeros_padded(x_shape: tuple[int, ...], axes: tuple[WindowAxis, WindowAxis], dtype: np.dtype,
                  channels_last: bool) -> np.ndarray:
    """A zero gradient for the padded input, for the taps to write into."""
    h, w = axes
    N, C, H, W = x_shape
    shape = (N, C, H + h.pad_lo + h.pad_hi + h.extra_hi, W + w.pad_lo + w.pad_hi + w.extra_hi)
    return empty_nchw(shape, dtype, channels_last, zeros=True)


def _in_layout(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """``a`` laid out as the other operands (elementwise ops on mixed layouts are several times slower)."""
    if is_channels_last(a) == channels_last:
        return a
    out = empty_nchw(a.shape, a.dtype, channels_last)
    out[...] = a
    return out


def _crop(dxp: np.ndarray, axes: tuple[WindowAxis, WindowAxis], x_shape: tuple[int, ...]) -> np.ndarray:
    h, w = axes
    if dxp.shape == tuple(x_shape):
        return dxp
    dx = empty_nchw(x_shape, dxp.dtype, is_channels_last(dxp))  # type: ignore[arg-type]
    dx[...] = dxp[:, :, h.pad_lo:h.pad_lo + x_shape[2], w.pad_lo:w.pad_lo + x_shape[3]]
    return dx


def max_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None,
                       padding: int | Pair = 0, dilation: int | Pair = 1,
                       ceil_mode: bool = False) -> tuple[np.ndarray, MaxPool2dCache]:
    """Largest value of each window; padding counts as -inf, so it is never chosen. NaN propagates.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - D(F - 1) - 1)/S) + 1``
        (``ceil`` in ceil_mode, dropping a last window that would start in the right padding).
    """
    axes = _pool_axes(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = empty_nchw((*x.shape[:2], axes[0].out, axes[1].out), x.dtype, is_channels_last(x))
    ranges = image_slices(x.shape[0], x.size)
    if _compiled_tiles(x, axes):   # out has x's layout
        _compiled.max_pool_tiled_forward(x.transpose(0, 2, 3, 1), (axes[0].kernel, axes[1].kernel),
                                         out.transpose(0, 2, 3, 1), ranges)
    elif _compiled_planes(x, axes):   # NCHW: each channel's plane an image of one channel, channels-last
        _compiled.max_pool_tiled_forward(_planes(x), (axes[0].kernel, axes[1].kernel), _planes(out),
                                         image_slices(x.shape[0] * x.shape[1], x.size))
    else:
        run_parallel(lambda s: _max_of_taps(x[s], axes, out[s]), ranges)
    return out, MaxPool2dCache(x, out, axes)


def max_pool2d_into(x: np.ndarray, kernel_size: Pair, out: np.ndarray) -> None:
    """``max_pool2d_forward(x, kernel_size)``'s output (stride = kernel, no padding) written into ``out``
    (as x's shape, (N, C, H // kH, W // kW), any strides), without a cache: for a caller pooling blocks
    of an output it is still computing (the fused inference pass of ``conv``)."""
    _max_of_taps(x, _pool_axes(x, kernel_size, None, 0, 1, False), out)


def _tiling(axes: tuple[WindowAxis, WindowAxis]) -> bool:
    """Windows that tile the input: stride = kernel, no padding or dilation."""
    return all(a.stride == a.kernel and a.dilation == 1 and a.pad_lo == a.pad_hi == a.extra_hi == 0 for a in axes)


def _tiled(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis]) -> bool:
    """Channels-last input whose windows tile it (``_tiling``)."""
    return is_channels_last(x) and _tiling(axes)


def _compiled_tiles(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis]) -> bool:
    """Whether the compiled engine (``_compiled``, numba) pools this range: tiled windows, channels-last."""
    return _tiled(x, axes) and _compiled.available(x.dtype)


def _compiled_planes(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis]) -> bool:
    """Whether the compiled engine pools an NCHW-contiguous ``x`` plane by plane (``_planes``): tiled windows."""
    return x.flags.c_contiguous and not is_channels_last(x) and _tiling(axes) and _compiled.available(x.dtype)


def _planes(a: np.ndarray) -> np.ndarray:
    """An NCHW-contiguous (N, C, H, W) array as (N * C, H, W, 1): each channel's plane a channels-last image
    of one channel, as the compiled tiled kernels take them (a view)."""
    N, C, H, W = a.shape
    return a.reshape(N * C, H, W, 1)


def _max_of_taps(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis], out: np.ndarray) -> None:
    """Write each window's maximum into ``out``: the elementwise max of the taps' views (or one compiled
    pass over tiled channels-last windows)."""
    if _compiled_tiles(x, axes):   # out has x's layout
        _compiled.max_pool_tiled_forward(x.transpose(0, 2, 3, 1), (axes[0].kernel, axes[1].kernel),
                                         out.transpose(0, 2, 3, 1))
        return
    taps = _taps(_padded(x, axes, -np.inf), axes)
    first = next(taps)
    second = next(taps, None)
    if second is None:
        out[...] = first
    else:
        np.maximum(first, second, out=out)
    for tap in taps:
        np.maximum(out, tap, out=out)


def max_pool2d_backward(dout: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """Route each output gradient to its window's first maximum; overlapping windows accumulate."""
    x, out, axes = cache
    if dout.shape != out.shape:
        raise ShapeError(f"expected an output gradient of shape {out.shape}, received {dout.shape}")
    channels_last = is_channels_last(x)
    dout = _in_layout(dout, channels_last)
    dx = empty_nchw(x.shape, dout.dtype, channels_last)
    ranges = image_slices(x.shape[0], x.size)
    if _compiled_tiles(x, axes) and dout.dtype == x.dtype:   # out, dout and dx share x's layout
        _compiled.max_pool_tiled_backward(*(a.transpose(0, 2, 3, 1) for a in (dout, x, out)),
                                          (axes[0].kernel, axes[1].kernel), dx.transpose(0, 2, 3, 1), ranges)
    elif _compiled_planes(x, axes) and dout.dtype == x.dtype:   # NCHW, plane by plane (as forward)
        _compiled.max_pool_tiled_backward(_planes(np.ascontiguousarray(dout)), _planes(x), _planes(out),
                                          (axes[0].kernel, axes[1].kernel), _planes(dx),
                                          image_slices(x.shape[0] * x.shape[1], x.size))
    else:
        run_parallel(lambda s: _route_to_max(dout[s], x[s], out[s], axes, dx[s], channels_last), ranges)
    return dx


def _route_to_max(dout: np.ndarray, x: np.ndarray, out: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                  dx: np.ndarray, channels_last: bool) -> None:
    """Write ``dx`` for a range of images (``dout`` in the layout of ``x``; see ``max_pool2d_backward``), where
    the compiled engine does not (``_compiled_tiles``)."""
    # Sums are one pass without temporaries: finite means no NaN/inf inside. A non-finite gradient
    # sum (or an overflow) takes the exact general rule, only slower; infinite maxima are fine.
    with np.errstate(over="ignore", invalid="ignore"):
        nan_max = not np.isfinite(out.sum()) and np.isnan(out).any()
        general = nan_max or not np.isfinite(dout.sum())
    if general:
        dxp = _zeros_padded(x.shape, axes, dout.dtype, channels_last)
        _route_by_index(dout, x, out, axes, dxp)
        dx[...] = _crop(dxp, axes, x.shape)
        return
    # From here on, multiplying by a 0/1 mask is exact (finite gradients) and a window's max equals
    # at least one of its taps (no NaN); NaN padding equals nothing.
    if _tiled(x, axes):
        _tiled_backward(dout, x, out, axes, dx)
        return
    dxp = _zeros_padded(x.shape, axes, dout.dtype, channels_last)
    overlapping = _overlapping(axes)
    taps = list(_taps(_padded(x, axes, np.nan), axes))
    taken = np.zeros(out.shape, bool)               # windows whose gradient has been routed
    for t, (tap, dx_tap) in enumerate(zip(taps, _taps(dxp, axes), strict=True)):
        first = np.equal(tap, out)
        np.greater(first, taken, out=first)        # a max, and no earlier tap was: first & ~taken
        if t < len(taps) - 1:
            taken |= first
        if overlapping:
            dx_tap += np.multiply(dout, first)
        else:
            np.multiply(dout, first, out=dx_tap)
    dx[...] = _crop(dxp, axes, x.shape)


def _tiled_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                    dx: np.ndarray) -> None:
    """Write ``dx`` where windows tile a channels-last input (stride = kernel, no padding): one pass per step.

    The input is viewed as (N, H_out, kH, W_out, kW, C), so comparing it with the broadcast output
    marks every maximum at once and one product writes the whole gradient. Ties (common after a
    ReLU: all-zero windows) are then cut down to the first maximum, tap by tap, only if present.
    """
    (h, w), (N, C, H, W) = axes, x.shape
    H_used, W_used = h.out * h.kernel, w.out * w.kernel
    # (N, C, H, W) -> (N, H_out, kH, W_out, kW, C); out and dout -> (N, H_out, 1, W_out, 1, C)
    x6 = x.transpose(0, 2, 3, 1)[:, :H_used, :W_used].reshape(N, h.out, h.kernel, w.out, w.kernel, C)
    out6 = out.transpose(0, 2, 3, 1)[:, :, None, :, None, :]
    is_max = np.equal(x6, out6)
    if np.count_nonzero(is_max) > out.size:      # ties: keep the first maximum in row-major order
        taken = is_max[:, :, 0, :, 0].copy()
        for t in range(1, h.kernel * w.kernel):
            tap = is_max[:, :, t // w.kernel, :, t % w.kernel]
            np.greater(tap, taken, out=tap)
            taken |= tap
    if (H_used, W_used) != (H, W):
        dx[...] = 0                              # rows and columns no window covers
    dx6 = dx.transpose(0, 2, 3, 1)[:, :H_used, :W_used].reshape(N, h.out, h.kernel, w.out, w.kernel, C)
    np.multiply(is_max, dout.transpose(0, 2, 3, 1)[:, :, None, :, None, :], out=dx6)


def _route_by_index(dout: np.ndarray, x: np.ndarray, out: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                    dxp: np.ndarray) -> None:
    """The general rule, for NaN maxima or non-finite gradients (where a 0/1 mask would spread NaN)."""
    taps = list(_taps(_padded(x, axes, -np.inf), axes))
    first = np.zeros(out.shape, np.int16 if len(taps) < 2**15 else np.intp)
    for t in range(len(taps) - 1, -1, -1):   # backwards, so the first tap equal to the max wins
        np.copyto(first, t, where=taps[t] == out)
    for t, tap in enumerate(taps):           # PyTorch's rule: a NaN beats numbers and earlier NaNs
        np.copyto(first, t, where=np.isnan(tap))
    for t, dx_tap in enumerate(_taps(dxp, axes)):
        if _overlapping(axes):
            np.add(dx_tap, dout, out=dx_tap, where=first == t)
        else:
            np.copyto(dx_tap, dout, where=first == t)


def _divisor(axis: WindowAxis, count_include_pad: bool) -> np.ndarray:
    """PyTorch's divisor along one axis: the window clipped to the padded input (or to the input)."""
    start = np.arange(axis.out) * axis.stride - axis.pad_lo
    end = np.minimum(start + axis.kernel, axis.size + axis.pad_hi)
    if count_include_pad:
        return end - start
    return np.minimum(end, axis.size) - np.maximum(start, 0)


def avg_pool2d_forward(x: np.ndarray, kernel_size: int | Pair, stride: int | Pair | None = None,
                       padding: int | Pair = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True) -> tuple[np.ndarray, AvgPool2dCache]:
    """Mean of each window. Padding zeros count towards the mean when ``count_include_pad``.

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - F)/S) + 1``.
    """
    axes = _pool_axes(x, kernel_size, stride, padding, 1, ceil_mode)
    channels_last = is_channels_last(x)
    divisor = np.outer(_divisor(axes[0], count_include_pad), _divisor(axes[1], count_include_pad)).astype(x.dtype)
    taps = _taps(_padded(x, axes, 0.0), axes)
    out = empty_nchw((*x.shape[:2], axes[0].out, axes[1].out), x.dtype, channels_last)
    out[...] = next(taps)
    for tap in taps:
        out += tap
    out /= divisor
    return out, AvgPool2dCache(x.shape, divisor, axes, channels_last)


def avg_pool2d_backward(dout: np.ndarray, cache: AvgPool2dCache) -> np.ndarray:
    """Spread each output gradient evenly (1/divisor) over the input pixels of its window."""
    x_shape, divisor, axes, channels_last = cache
    expected = (*x_shape[:2], axes[0].out, axes[1].out)
    if dout.shape != expected:
        raise ShapeError(f"expected an output gradient of shape {expected}, received {dout.shape}")
    share = np.divide(dout, divisor, out=empty_nchw(dout.shape, np.result_type(dout, divisor), channels_last))
    dxp = _zeros_padded(x_shape, axes, share.dtype, channels_last)
    for dx_tap in _taps(dxp, axes):
        dx_tap += share
    return _crop(dxp, axes, x_shape)


def global_avg_pool2d_forward(x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Mean over all of H and W: (N, C, H, W) -> (N, C). The cache is the input shape."""
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool2d_backward(dout: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """Each pixel receives 1/(H*W) of its channel's gradient: (N, C) -> (N, C, H, W)."""
    N, C, H, W = x_shape
    if dout.shape != (N, C):
        raise ShapeError(f"expected an output gradient of shape {(N, C)}, received {dout.shape}")
    return np.broadcast_to((dout / (H * W))[:, :, None, None], x_shape).copy()
