"""2-d convolution: forward and backward as im2col feeding matrix products, a block at a time.

Each output position is a dot product between a filter (depth = input channels / groups) and the
input window under it, plus a bias. Copying every window into a row ("im2col") turns the layer into
a matrix product: columns (pixels, kH*kW*C) @ weights (kH*kW*C, K). The backward pass is two more
products: ``dw = columns^T @ dout`` (the bias gradient comes out of the same product, from a column
of ones) and the input gradient. That one is itself a forward convolution: of the zero-padded
output gradient with the flipped filters, input and output channels swapped (for stride S, one such
convolution per phase of S x S input pixels). Inputs with few channels (first layers) use
channel-major columns and scatter their column gradients back instead (``col2im``).

The columns are built a few images at a time into a reused buffer (``_im2col``), never for the whole
batch, and rebuilt in backward instead of kept. Arrays keep PyTorch's NCHW shape; the output is laid
out channels-last in memory (``_layout``), which is what the matrix product writes.

Stride-1 convolutions with more than a few input channels (most of a network's) skip the columns
altogether (``_shifted``): on a grid of zero-padded images every kernel tap is a fixed shift, so the
layer is kH*kW matrix products of shifted row ranges, added up inside NumPy's own BLAS. Strided ones take
the input's stride phases (``_phases``); depthwise ones (one group per input channel) a path of their
own (``_depthwise``: a few multiply-adds per pixel over its channels as a vector); other grouped ones take
the shifted path one group after another where the compiled engine's tiles cover a group. The im2col
path below remains for other groups, unusual padding, and a NumPy whose BLAS is not reachable.

A ReLU that follows the convolution can run inside it (``conv2d_relu_forward``, and
``conv2d_backward(..., positive=)``): each block of output is rectified while it is still in cache,
and each block of the output gradient taken back through the ReLU's mask as it is read, instead of
two more passes over the whole activation in memory.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional import _depthwise, _phases, _shifted
from stridenet.functional._im2col import blocks, col2im_cm, im2col_cm, im2col_nhwc, pad
from stridenet.functional._layout import as_nchw, scratch, to_nhwc
from stridenet.functional._parallel import image_slices, run_parallel, total
from stridenet.functional.activation import through_relu
from stridenet.functional.geometry import (
    Padding2d,
    WindowAxis,
    input_padding,
    pair,
    same_padding,
    window_axes,
)
from stridenet.functional.pool import max_pool2d_forward

PaddingArg = int | tuple[int, int] | str | Padding2d


class Conv2dCache(NamedTuple):
    """What ``conv2d_backward`` needs from the forward pass (the input itself, not its columns)."""

    x: np.ndarray             # the input: (N, C, H, W) if path == "cm", else (N, H, W, C)
    w: np.ndarray             # (K, C/G, kH, kW)
    axes: tuple[WindowAxis, WindowAxis]
    groups: int
    has_bias: bool
    path: str                 # the forward pass's path (``_path``): "cm", "shifted", "phases", "depthwise", "grouped"
                              # or "nhwc"; backward takes it too


# Inputs with at most this many channels (and groups=1) use channel-major columns: first layers.
CM_MAX_CHANNELS = 8


def resolve_padding(padding: PaddingArg, kernel: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int], spatial: tuple[int, int]) -> Padding2d:
    """Turn a padding argument into ((top, bottom), (left, right)) for an input of size ``spatial``.

    ``'valid'`` is no padding; ``'same'`` is TensorFlow's rule (output ceil(W/S), the odd pixel at the
    end), which equals PyTorch's ``padding='same'`` wherever PyTorch allows it (stride 1).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            return tuple(same_padding(spatial[i], kernel[i], stride[i], dilation[i])  # type: ignore[return-value]
                         for i in range(2))
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', received {padding!r}")
    if isinstance(padding, tuple) and len(padding) == 2 and all(isinstance(p, tuple) for p in padding):
        return (int(padding[0][0]), int(padding[0][1])), (int(padding[1][0]), int(padding[1][1]))
    ph, pw = pair(padding, "padding")
    return (ph, ph), (pw, pw)


def _check_inputs(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, groups: int) -> None:
    if x.ndim != 4:
        raise ShapeError(f"expected a 4-d input (N, C, H, W), received shape {x.shape}")
    if w.ndim != 4:
        raise ShapeError(f"expected a 4-d weight (K, C/groups, kH, kW), received shape {w.shape}")
    if x.shape[1] != w.shape[1] * groups:
        raise ShapeError(f"expected input with {w.shape[1] * groups} channels, received shape {x.shape}")
    if w.shape[0] % groups:
        raise ShapeError(f"groups={groups} does not divide {w.shape[0]} output channels")
    if x.dtype != w.dtype:
        raise ShapeError(f"expected input of dtype {w.dtype} (the weights' dtype), received {x.dtype} "
                         f"with shape {x.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"expected a bias of shape {(w.shape[0],)}, received {b.shape}")


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int | tuple[int, int] = 1,
                   padding: PaddingArg = 0, dilation: int | tuple[int, int] = 1,
                   groups: int = 1) -> tuple[np.ndarray, Conv2dCache]:
    """Convolve ``x`` with filters ``w`` (cross-correlation, as every deep-learning library does).

    Args:
        x: input (N, C, H, W).
        w: filters (K, C/groups, kH, kW).
        b: bias (K,) or None.
        stride, dilation: int or (h, w).
        padding: int, (h, w), ((top, bottom), (left, right)), 'valid' or 'same'.
        groups: input and output channels split into this many independent groups.

    Returns:
        ``(out, cache)`` with out (N, K, H_out, W_out),
        ``H_out = floor((H + P_top + P_bottom - D(kH - 1) - 1)/S) + 1``.

    Raises:
        ShapeError: wrong rank, channel count, dtype, or an output size below 1.
    """
    out, cache, _ = _convolve(x, w, b, stride, padding, dilation, groups, rectify=False, keep_mask=False)
    return out, cache


def conv2d_relu_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int | tuple[int, int] = 1,
                        padding: PaddingArg = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
                        keep_mask: bool = True) -> tuple[np.ndarray, Conv2dCache, np.ndarray | None]:
    """``relu_forward(conv2d_forward(x, ...))`` in one pass over the output: the same numbers, bit for bit.

    Each block of the output is rectified (and its mask of positive values taken) right after its
    matrix product wrote it, while it is still in cache, instead of in a second pass over the whole
    output. Arguments as ``conv2d_forward``; ``keep_mask`` as ``relu_forward``.

    Returns:
        ``(out, cache, positive)``: the rectified output, the convolution's cache (for
        ``conv2d_backward``) and the ReLU's mask (for ``relu_backward``; None without ``keep_mask``).
    """
    return _convolve(x, w, b, stride, padding, dilation, groups, rectify=True, keep_mask=keep_mask)


def conv2d_relu_pool_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pool_size: tuple[int, int],
                             stride: int | tuple[int, int] = 1, padding: PaddingArg = 0,
                             dilation: int | tuple[int, int] = 1, groups: int = 1) -> np.ndarray:
    """``max_pool2d_forward(relu_forward(conv2d_forward(x, ...)), pool_size)`` for inference: the pooled output
    only, no caches, the same numbers (of a -0.0 and a 0.0, either sign may come out).

    For a stride-1 convolution on the shifted path (``_shifted``), each block of output is rectified
    and pooled (windows of ``pool_size``, stride = window, no padding) while it is in cache, and only
    the pooled values are written; other convolutions run the three steps in turn.

    Shape:
        (N, C, H, W) -> (N, K, H_out // kh, W_out // kw), laid out channels-last.
    """
    axes = _checked_axes(x, w, b, stride, padding, dilation, groups)
    kh, kw = pool_size
    if not (_path(x, w, axes, groups) == "shifted" and axes[0].out >= kh and axes[1].out >= kw):
        rectified = _convolve(x, w, b, stride, padding, dilation, groups, rectify=True, keep_mask=False)[0]
        return max_pool2d_forward(rectified, pool_size)[0]
    x = x.transpose(0, 2, 3, 1)                                     # (N, H, W, C) view
    out = np.empty((x.shape[0], axes[0].out // kh, axes[1].out // kw, w.shape[0]), x.dtype)
    _forward_shifted(x, w, b, axes, out, True, None, (kh, kw))
    return as_nchw(out)


def _forward_shifted(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, axes: tuple[WindowAxis, WindowAxis],
                     out: np.ndarray, rectify: bool, positive: np.ndarray | None,
                     pool: tuple[int, int] = (1, 1)) -> None:
    """The shifted path's forward pass over the batch, x (N, H, W, C) -> out (channels-last), its blocks
    run in parallel: ``_shifted.forward``'s ReLU, mask and pool options, the filters' tap matrices
    (and their packing for the compiled tiles) made once for all blocks."""
    _shifted.forward(x, _shifted.filters(w, axes), b, axes, out, rectify, positive, pool)   # blocks in parallel


def _convolve(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int | tuple[int, int],
              padding: PaddingArg, dilation: int | tuple[int, int], groups: int,
              rectify: bool, keep_mask: bool) -> tuple[np.ndarray, Conv2dCache, np.ndarray | None]:
    """The forward pass, with a ReLU on the output if ``rectify`` (and its mask returned if ``keep_mask``)."""
    axes = _checked_axes(x, w, b, stride, padding, dilation, groups)
    path = _path(x, w, axes, groups)
    out = np.empty((x.shape[0], axes[0].out, axes[1].out, w.shape[0]), x.dtype)   # (N, H_out, W_out, K)
    positive = np.empty(out.shape, bool) if rectify and keep_mask else None

    def epilogue(images: slice) -> Epilogue | None:
        if not rectify:
            return None
        return _rectifier(None if positive is None else positive[images].reshape(-1, w.shape[0]))

    if path == "cm":
        x = np.ascontiguousarray(x)
        run_parallel(lambda s: _forward_cm(x[s], w, b, axes, out[s], epilogue(s)), _image_slices(x, out))
    elif path == "shifted":
        x = x.transpose(0, 2, 3, 1)   # (N, H, W, C) view; padded block by block
        _forward_shifted(x, w, b, axes, out, rectify, positive)
    elif path == "phases":
        x = x.transpose(0, 2, 3, 1)   # (N, H, W, C) view; split into phases block by block
        _phases.forward(x, _phases.filters(w, axes), b, axes, out, rectify, positive)   # blocks in parallel
    elif path == "depthwise":
        x = to_nhwc(x)                # (N, H, W, C), contiguous: each pixel's channels are the vector
        _depthwise.forward(x, w, b, axes, out, rectify, positive)     # ranges of images in parallel
    elif path == "grouped":
        x = x.transpose(0, 2, 3, 1)   # (N, H, W, C) view; each group's channels read block by block
        _forward_grouped(x, w, b, axes, groups, out, rectify, positive)
    else:
        x = x.transpose(0, 2, 3, 1)   # (N, H, W, C) view; converted block by block if not channels-last
        w_rows = _weight_rows(w, groups)
        run_parallel(lambda s: _forward_nhwc(x[s], w_rows, b, axes, out[s], epilogue(s)), _image_slices(x, out))
    cache = Conv2dCache(x, w, axes, groups, b is not None, path)
    return as_nchw(out), cache, None if positive is None else as_nchw(positive)


def _group_channels(groups: int, channels: int, filters: int) -> list[tuple[slice, slice]]:
    """Each group's input channels and filters (output channels)."""
    Cg, Kg = channels // groups, filters // groups
    return [(slice(g * Cg, (g + 1) * Cg), slice(g * Kg, (g + 1) * Kg)) for g in range(groups)]


def _forward_grouped(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, axes: tuple[WindowAxis, WindowAxis],
                     groups: int, out: np.ndarray, rectify: bool, positive: np.ndarray | None) -> None:
    """The "grouped" path's forward pass: each group in turn on the shifted path (``_forward_shifted``, its
    blocks in parallel), its input channels read from x (N, H, W, C) in place, its output (and ReLU mask)
    made in a scratch array of its own channels and copied into its channels of ``out`` (and ``positive``)."""
    part = scratch("grouped_out", (*out.shape[:3], w.shape[0] // groups), out.dtype)
    part_mask = None if positive is None else np.empty(part.shape, bool)
    for channels, filters in _group_channels(groups, x.shape[3], w.shape[0]):
        _forward_shifted(x[..., channels], w[filters], None if b is None else b[filters], axes, part, rectify,
                         part_mask)
        out[..., filters] = part
        if positive is not None:
            positive[..., filters] = part_mask


def _backward_grouped(x: np.ndarray, dout: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                      groups: int, has_bias: bool, dx: np.ndarray | None, positive: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The "grouped" path's backward pass: each group in turn on the shifted path (``_shifted.backward``), its
    channels of x, dout and the mask (N, H, W, C) read as views; its input gradient made in a scratch array and
    copied into its channels of ``dx`` (unless None). Returns ``(dw, db)`` (db float64, or None)."""
    dw = np.empty(w.shape, w.dtype)
    db = np.empty(w.shape[0], np.float64) if has_bias else None
    part_dx = None if dx is None else scratch("grouped_dx", (*x.shape[:3], x.shape[3] // groups), x.dtype)
    for channels, filters in _group_channels(groups, x.shape[3], w.shape[0]):
        w_group, x_group = w[filters], x[..., channels]
        sums = _shifted.weight_sums(x.shape[0], axes, x_group.shape[3], w_group.shape[0], x.dtype)
        dx_filters = None if dx is None else _shifted.filters(w_group, axes, flip=True)
        db_group = _shifted.backward(x_group, dout[..., filters], dx_filters, axes, sums, has_bias, part_dx,
                                     None if positive is None else positive[..., filters])
        dw[filters] = _shifted.weight_gradient(sums, w_group)
        if db is not None:
            db[filters] = db_group
        if dx is not None:
            dx[..., channels] = part_dx
    return dw, db


def _checked_axes(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int | tuple[int, int],
                  padding: PaddingArg, dilation: int | tuple[int, int], groups: int) -> tuple[WindowAxis, WindowAxis]:
    """The window geometry of a convolution, after checking its operands."""
    _check_inputs(x, w, b, groups)
    kernel = (w.shape[2], w.shape[3])
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pad_arg = resolve_padding(padding, kernel, stride, dilation, (x.shape[2], x.shape[3]))
    return window_axes(x.shape, kernel, stride, dilation, pad_arg)


def _path(x: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis], groups: int) -> str:
    """Which forward path a convolution takes: "cm" (few input channels: channel-major columns),
    "shifted" (``_shifted``'s products), "phases" (strided, ``_phases``' products), "depthwise" (one group
    per input channel, ``_depthwise``) or "nhwc" (im2col columns). Few input channels take the shifted
    path too where the compiled engine's tiles compute its products and weight gradient."""
    if _depthwise.applies(groups, x.shape[1]):
        return "depthwise"
    if _phases.applies(axes, groups, x.shape[1], w.shape[0], x.dtype):
        return "phases"
    if groups > 1:
        channels, filters = x.shape[1] // groups, w.shape[0] // groups
        grouped = _shifted.applies(axes, 1, channels, filters, x.dtype) and _shifted.tiled(axes, channels, filters,
                                                                                            x.dtype)
        return "grouped" if grouped else "nhwc"
    shifted = _shifted.applies(axes, groups, x.shape[1], w.shape[0], x.dtype)
    if groups == 1 and x.shape[1] <= CM_MAX_CHANNELS and not (shifted and _shifted.tiled(axes, x.shape[1], w.shape[0],
                                                                                          x.dtype)):
        return "cm"
    return "shifted" if shifted else "nhwc"


# Runs on each block of output right after its product wrote it: (the block's (rows, K) values, which
# rows of the range's (images*H_out*W_out, K) output they are).
Epilogue = Callable[[np.ndarray, slice], None]


def _rectifier(positive_rows: np.ndarray | None) -> Epilogue:
    """The ReLU epilogue: rectify a block in place (still in cache) and, unless ``positive_rows`` is
    None, write its mask of positive values into those rows of ``positive_rows``."""
    def rectify(block: np.ndarray, rows: slice) -> None:
        np.maximum(block, block.dtype.type(0), out=block)
        if positive_rows is not None:
            np.greater(block, 0, out=positive_rows[rows])
    return rectify


def conv2d_backward(dout: np.ndarray, cache: Conv2dCache, need_dx: bool = True, positive: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of a convolution: ``(dx, dw, db)``; ``db`` is None without bias, ``dx`` None without ``need_dx``.

    ``dw`` sums each shared filter's gradient over every position it was applied at (one matrix
    product per block does the sum); ``dx`` sends each output gradient back through the window it
    came from. ``need_dx=False`` skips ``dx`` (a network's first layer has no use for it).

    ``positive``: the mask of a ReLU applied to this convolution's output (``relu_forward``'s, or
    ``conv2d_relu_forward``'s); ``dout`` is then the gradient of the ReLU's output and is taken back
    through the ReLU block by block (``relu_backward`` fused in, one pass over memory fewer). The
    gradients equal those of ``conv2d_backward(relu_backward(dout, positive), cache)``, except that
    ``db``'s float64 sum is added up in blocks, which may move its last float32 bit.

    Shape:
        dout (N, K, H_out, W_out) -> dx (N, C, H, W), dw (K, C/groups, kH, kW), db (K,).
    """
    x, w, axes, G, has_bias, path = cache
    layout = "cm" if path == "cm" else "nhwc"                       # x's memory order
    N = x.shape[0]
    K = w.shape[0]
    H_out, W_out = axes[0].out, axes[1].out
    if dout.shape != (N, K, H_out, W_out):
        raise ShapeError(f"expected an output gradient of shape {(N, K, H_out, W_out)}, received {dout.shape}")
    if positive is not None and positive.shape != dout.shape:
        raise ShapeError(f"expected a ReLU mask of shape {dout.shape} (the output's), received {positive.shape}")
    shifted, phased = path == "shifted", path == "phases"
    if shifted or phased or path == "grouped":   # (N, H_out, W_out, K) views, read block by block
        dout, mask = dout.transpose(0, 2, 3, 1), None if positive is None else positive.transpose(0, 2, 3, 1)
    else:
        dout, mask = to_nhwc(dout), None if positive is None else to_nhwc(positive)   # (N, H_out, W_out, K)
    dx = np.empty(x.shape, dout.dtype) if need_dx else None         # x's layout: (N, C, H, W) or (N, H, W, C)
    if shifted or phased:   # the blocks shared out between the threads inside: one (kH*kW, C, K) array of sums
        if shifted:         # per block
            block_sums = _shifted.weight_sums(N, axes, x.shape[3], K, x.dtype)
            dx_filters = _shifted.filters(w, axes, flip=True) if need_dx else None
            db = _shifted.backward(x, dout, dx_filters, axes, block_sums, has_bias, dx, mask)
        else:
            block_sums = _phases.weight_sums(N, axes, x.shape[3], K, x.dtype)
            gradient = _phases.input_gradient(w, axes) if need_dx else None
            db = _phases.backward(x, dout, gradient, axes, block_sums, has_bias, dx, mask)
        dw = _shifted.weight_gradient(block_sums, w)
        return (None if dx is None else as_nchw(dx), dw, None if db is None else db.astype(w.dtype))
    if path == "depthwise":
        dw, db = _depthwise.backward(x, dout, w, axes, dx, mask, has_bias)
        return (None if dx is None else as_nchw(dx), dw, db)
    if path == "grouped":
        dw, db = _backward_grouped(x, dout, w, axes, G, has_bias, dx, mask)
        return (None if dx is None else as_nchw(dx), dw, None if db is None else db.astype(w.dtype))
    shared = need_dx and layout == "nhwc" and _shares_columns(x, axes, G)

    def part(s: slice) -> tuple[np.ndarray, np.ndarray | None]:
        """Write dx of a range of images; return its float64 weight-gradient sums and bias sum (or None)."""
        d, m = dout[s], None if mask is None else mask[s]
        if shared:
            return _backward_stride1(x[s], d, w, axes, has_bias, dx[s], m)
        if m is not None and (layout == "nhwc" or dx is not None):   # the whole range through the ReLU first
            d, m = through_relu(d, m, np.empty_like(d)), None
        if layout == "cm":
            if dx is not None:
                _input_grad_cm(d, w, axes, dx[s])
            return _weight_grads_cm(x[s], d, w, axes, has_bias, m), None
        if dx is not None:
            _input_grad_nhwc(d, w, axes, G, dx[s])
        return _weight_grads_nhwc(x[s], d, G, axes, has_bias)

    parts = run_parallel(part, _image_slices(x, dout))
    dw, db = _weight_grads(total([p[0] for p in parts]), w, G, "shared" if shared else layout, has_bias)
    if parts[0][1] is not None:
        db = total([p[1] for p in parts])
    if dx is not None and layout == "nhwc":
        dx = as_nchw(dx)
    return (dx, np.ascontiguousarray(dw, dtype=w.dtype),
            None if db is None else np.ascontiguousarray(db, dtype=w.dtype))


def _weight_grads(sums: np.ndarray, w: np.ndarray, G: int, form: str,
                  has_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``dw`` (K, C/G, kH, kW) and, where the sums carry it, ``db`` from the float64 sums of one backward
    path: "cm" (C*kH*kW [+1], K), "shared" (C, kH*kW*K) with the taps flipped, "nhwc" (G, kH*kW*C/G [+1], K/G)
    (the shifted path's: ``_shifted.weight_gradient``)."""
    K, Cg, kH, kW = w.shape
    if form == "cm":
        return sums[:w[0].size].T.reshape(w.shape), (sums[-1] if has_bias else None)
    if form == "shared":   # sums[c, (a, b, k)] belongs to tap (kH-1-a, kW-1-b) of filter k
        return sums.reshape(Cg, kH, kW, K)[:, ::-1, ::-1].transpose(3, 0, 1, 2), None
    fused = sums.shape[1] > w[0].size                               # a last row from the column of ones
    rows, db = (sums[:, :-1], sums[:, -1].reshape(K)) if fused else (sums, None)
    return rows.reshape(G, kH, kW, Cg, K // G).transpose(0, 4, 3, 1, 2).reshape(w.shape), db


def _image_slices(x: np.ndarray, y: np.ndarray) -> list[slice]:
    """The image ranges a convolution runs in parallel (see ``_parallel``): input and output sizes count."""
    return image_slices(x.shape[0], x.size + y.size)


def _weight_rows(w: np.ndarray, groups: int) -> np.ndarray:
    """Filters as the right-hand matrix of each group: (K, C/G, kH, kW) -> (G, kH*kW*C/G, K/G)."""
    K, Cg, kH, kW = w.shape
    rows = w.reshape(groups, K // groups, Cg, kH, kW).transpose(0, 3, 4, 2, 1)
    return np.ascontiguousarray(rows).reshape(groups, kH * kW * Cg, K // groups)


def _row_bytes(axes: tuple[WindowAxis, WindowAxis], channels: int, itemsize: int) -> int:
    """Bytes of im2col columns for one output row: W_out pixels of kH*kW*C values."""
    return axes[1].out * axes[0].kernel * axes[1].kernel * channels * itemsize


def _block_rows(axes: tuple[WindowAxis, WindowAxis], n0: int, n1: int, h0: int, h1: int) -> slice:
    """The rows of (N*H_out*W_out, K) that a block (images [n0, n1), output rows [h0, h1)) covers."""
    H_out, W_out = axes[0].out, axes[1].out
    return slice((n0 * H_out + h0) * W_out, ((n1 - 1) * H_out + h1) * W_out)


def _reads_rows(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis], G: int) -> bool:
    """A 1x1 kernel with stride 1 and no padding over channels-last rows: they are the columns (no copy)."""
    h, w = axes
    return (h.kernel == w.kernel == h.stride == w.stride == 1 and G == 1 and not any(sum(input_padding(axes), ()))
            and x.strides[3] == x.itemsize)


def _forward_nhwc(x: np.ndarray, w_rows: np.ndarray, b: np.ndarray | None, axes: tuple[WindowAxis, WindowAxis],
                  out: np.ndarray, epilogue: Epilogue | None = None) -> None:
    """Channels-last convolution: x (N, H, W, C), w_rows (G, kH*kW*C/G, K/G) -> out (N, H_out, W_out, K).

    The bias rides along as a last weight row against a column of ones, except for a 1x1 kernel.
    ``epilogue`` (e.g. a ReLU) runs on each block of output as soon as it is complete.
    """
    G, _, Kg = w_rows.shape
    h = axes[0]
    out_rows = out.reshape(-1, G * Kg)                              # (N*H_out*W_out, K)
    direct = _reads_rows(x, axes, G)
    fused = b is not None and not direct
    if fused:
        w_rows = np.concatenate([w_rows, b.reshape(G, 1, Kg)], axis=1)  # (G, kH*kW*C/G + 1, K/G)
    for n0, n1, block_list in blocks(x.shape[0], h.out, _row_bytes(axes, x.shape[3], x.itemsize),
                                     sys.maxsize if direct else None):
        xp = pad(x[n0:n1], input_padding(axes), (1, 2), "x_padded")  # (B, Hp, Wp, C)
        for _, _, h0, h1 in block_list:
            cols = im2col_nhwc(xp, axes, h0, h1, G, ones=fused)     # (G, B*rows*W_out, kH*kW*C/G [+1])
            rows = _block_rows(axes, n0, n1, h0, h1)
            dst = out_rows[rows]
            if G == 1:
                np.matmul(cols[0], w_rows[0], out=dst)
            else:   # (G, rows, K/G) -> (rows, G, K/G)
                dst.reshape(-1, G, Kg)[...] = np.matmul(cols, w_rows).transpose(1, 0, 2)
            if b is not None and not fused:
                dst += b
            if epilogue is not None:
                epilogue(dst, rows)


def _shares_columns(x: np.ndarray, axes: tuple[WindowAxis, WindowAxis], G: int) -> bool:
    """Stride 1, one group, a real window: both gradients can come from the columns of ``dout`` alone."""
    return G == 1 and axes[0].stride == axes[1].stride == 1 and not _reads_rows(x, axes, G)


def _backward_stride1(x: np.ndarray, dout: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                      has_bias: bool, dx: np.ndarray, positive: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """Both gradients of a stride-1 convolution from one set of columns, built from ``dout``.

    Writes ``dx`` (N, H, W, C) and returns the float64 sums ``x^T @ columns`` (C, kH*kW*K) (the
    weight gradient, taps flipped) and the bias gradient (None without bias). With a ReLU mask
    ``positive`` (as dout), each block of ``dout`` is taken through the ReLU first.

    Input pixel q receives ``dout[q + P - i*D] @ w[i]`` over the taps i (see ``_input_grad_nhwc``),
    and tap i's weight gradient is ``sum_q x[q]^T dout[q + P - i*D]``: the same ``dout`` windows, one
    per input pixel. So the columns of ``dout`` under the flipped kernel serve both products,
    ``dx = columns @ flipped weights`` and ``dw = x^T @ columns``, and ``x`` is never copied into
    columns in backward (out-of-range windows read the zero padding, whose share of ``dw`` is 0).
    """
    N, H, W, C = x.shape
    K, _, kH, kW = w.shape
    ((_, taps_h, axis_h),) = _phases.gradient_phases(axes[0], H)   # stride 1: one phase, every tap
    ((_, taps_w, axis_w),) = _phases.gradient_phases(axes[1], W)
    rows = _flipped_rows(w, 1, taps_h, taps_w)[0]                     # (kH*kW*K, C)
    phase_axes = (axis_h, axis_w)
    dx_rows = dx.reshape(-1, C)
    grads = np.zeros((C, kH * kW * K), np.float64)                    # x^T @ columns, summed over blocks
    db = np.zeros(K, np.float64) if has_bias and positive is not None else None
    for n0, n1, block_list in blocks(N, H, _row_bytes(phase_axes, K, dout.itemsize)):
        d = dout[n0:n1]
        if positive is not None:   # the whole block, not just what ``pad`` keeps: db needs every row
            d = through_relu(d, positive[n0:n1], scratch("dout_relu", d.shape, d.dtype))
            if db is not None:
                db += d.reshape(-1, K).sum(axis=0, dtype=np.float64)
        dp = pad(d, input_padding(phase_axes), (1, 2), "x_padded")    # (B, H_out + pads, W_out + pads, K)
        for _, _, h0, h1 in block_list:
            cols = im2col_nhwc(dp, phase_axes, h0, h1, 1)[0]          # (B*rows*W, kH*kW*K)
            np.matmul(cols, rows, out=dx_rows[_block_rows(phase_axes, n0, n1, h0, h1)])
            x_rows = np.ascontiguousarray(x[n0:n1, h0:h1]).reshape(-1, C)
            grads += _columns_times_dout(x_rows.T, cols)
    if has_bias and db is None:
        db = dout.reshape(-1, K).sum(axis=0, dtype=np.float64)
    return grads, db


def _weight_grads_nhwc(x: np.ndarray, dout: np.ndarray, G: int, axes: tuple[WindowAxis, WindowAxis],
                       has_bias: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Float64 sums for ``dw`` as (G, kH*kW*C/G [+1], K/G) rows, and ``db``, rebuilding the columns block by block.

    ``db`` comes out of the same product, as the last row (from the column of ones) and None is
    returned for it, except for a 1x1 kernel.
    """
    h, w = axes
    K, Cg = dout.shape[3], x.shape[3] // G
    dout_rows = dout.reshape(-1, K)
    fused = has_bias and not _reads_rows(x, axes, G)
    grads = np.zeros((G, h.kernel * w.kernel * Cg + fused, K // G), np.float64)   # summed over blocks
    db = np.zeros(K, np.float64)
    for n0, n1, block_list in blocks(x.shape[0], h.out, _row_bytes(axes, x.shape[3], x.itemsize)):
        xp = pad(x[n0:n1], input_padding(axes), (1, 2), "x_padded")
        for _, _, h0, h1 in block_list:
            cols = im2col_nhwc(xp, axes, h0, h1, G, ones=fused)     # (G, M, kH*kW*C/G [+1])
            d = dout_rows[_block_rows(axes, n0, n1, h0, h1)]   # (M, K)
            if G == 1:
                grads[0] += _columns_times_dout(cols[0].T, d)
            else:
                grads += np.matmul(cols.transpose(0, 2, 1), d.reshape(-1, G, K // G).transpose(1, 0, 2))
            if has_bias and not fused:
                db += d.sum(axis=0)
    return grads, (db if has_bias and not fused else None)


def _columns_times_dout(cols_t: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``cols_t (L, M) @ d (M, K)``, the weight-gradient product, summing over M pixels.

    With fewer rows L than output channels K it is computed as ``(d^T @ cols_t^T)^T``: OpenBLAS's
    2-thread kernel for a few-row product with a long inner dimension can stall for seconds when the
    cores are busy with other work (measured: 2.6 s against 12 ms for (10 x 100352) @ (100352 x 32)).
    """
    if cols_t.shape[0] < d.shape[1]:
        return (d.T @ cols_t.T).T
    return cols_t @ d


def _input_grad_nhwc(dout: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis], G: int,
                     dx: np.ndarray) -> None:
    """Write ``dx`` (N, H, W, C) as forward convolutions of ``dout``.

    Input row y receives ``dout[(y + P - i*D)/S] * w[i]`` from every tap i for which that index is a
    whole number. The rows with one remainder y mod S share the same taps, and over them the sum is
    a stride-1 convolution of dout with those taps flipped (input and output channels swapped). For
    stride 1 that is one convolution with the whole flipped kernel, padded by D(k-1) - P; for stride
    S there are S x S of them ("phases"), each writing every S-th row and column of dx. Unlike
    scattering column gradients back onto windows, this writes each dx value once.
    """
    H, W = dx.shape[1:3]
    K, C = dout.shape[3], dx.shape[3]
    for r_h, taps_h, axis_h in _phases.gradient_phases(axes[0], H):
        for r_w, taps_w, axis_w in _phases.gradient_phases(axes[1], W):
            target = dx[:, r_h::axes[0].stride, r_w::axes[1].stride]  # (N, H_r, W_r, C)
            if not (taps_h and taps_w):
                target[...] = 0                                      # rows no tap reaches
                continue
            phase_axes = (axis_h, axis_w)
            into = target if target.flags.c_contiguous else scratch("dx_phase", target.shape, dout.dtype)
            if G == 1 and _shifted.applies(phase_axes, 1, K, C, dout.dtype) and _shifted.tiled(phase_axes, K, C,
                                                                                                dout.dtype):
                kernel = _phases.flipped_kernel(w, G, taps_h, taps_w)   # the compiled tiles, no columns
                _shifted.forward(dout, _shifted.filters(kernel, phase_axes), None, phase_axes, into)
            else:
                _forward_nhwc(dout, _flipped_rows(w, G, taps_h, taps_w), None, phase_axes, into)
            if into is not target:
                target[...] = into


def _flipped_rows(w: np.ndarray, G: int, taps_h: list[int], taps_w: list[int]) -> np.ndarray:
    """The filters of the input-gradient convolution as right-hand matrices (G, m_h*m_w*K/G, C/G) (see
    ``_weight_rows``)."""
    return _weight_rows(_phases.flipped_kernel(w, G, taps_h, taps_w), G)


def _forward_cm(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, axes: tuple[WindowAxis, WindowAxis],
                out: np.ndarray, epilogue: Epilogue | None = None) -> None:
    """Channel-major convolution for few-channel inputs: x (N, C, H, W) -> out (N, H_out, W_out, K).

    The bias rides along as a last weight row, against a row of ones in the columns. ``epilogue``
    as in ``_forward_nhwc``.
    """
    K = w.shape[0]
    h = axes[0]
    w_cols = w.reshape(K, -1).T                                     # (C*kH*kW, K)
    if b is not None:
        w_cols = np.vstack([w_cols, b[None]])                       # (C*kH*kW + 1, K)
    out_rows = out.reshape(-1, K)
    for n0, n1, block_list in blocks(x.shape[0], h.out, _row_bytes(axes, x.shape[1], x.itemsize)):
        xp = pad(x[n0:n1], input_padding(axes), (2, 3), "x_padded")  # (B, C, Hp, Wp)
        for _, _, h0, h1 in block_list:
            cols = im2col_cm(xp, axes, h0, h1, ones=b is not None)  # (C*kH*kW [+1], M)
            rows = _block_rows(axes, n0, n1, h0, h1)
            np.matmul(cols.T, w_cols, out=out_rows[rows])
            if epilogue is not None:
                epilogue(out_rows[rows], rows)


def _weight_grads_cm(x: np.ndarray, dout: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis],
                     has_bias: bool, positive: np.ndarray | None = None) -> np.ndarray:
    """Float64 sums (C*kH*kW [+1], K) for ``dw`` and ``db`` (the last row, with bias) from one product per
    block: columns (+ ones row) @ dout rows; with a ReLU mask ``positive`` (as dout), each block of
    ``dout`` is taken through the ReLU first."""
    K = w.shape[0]
    h = axes[0]
    dout_rows = dout.reshape(-1, K)
    grads = np.zeros((w[0].size + has_bias, K), np.float64)         # (C*kH*kW [+1], K), summed over blocks
    for n0, n1, block_list in blocks(x.shape[0], h.out, _row_bytes(axes, x.shape[1], x.itemsize)):
        xp = pad(x[n0:n1], input_padding(axes), (2, 3), "x_padded")
        for _, _, h0, h1 in block_list:
            cols = im2col_cm(xp, axes, h0, h1, ones=has_bias)
            rows = _block_rows(axes, n0, n1, h0, h1)
            d = dout_rows[rows]
            if positive is not None:
                d = through_relu(d, positive.reshape(-1, K)[rows], scratch("dout_relu", d.shape, d.dtype))
            grads += _columns_times_dout(cols, d)
    return grads


def _input_grad_cm(dout: np.ndarray, w: np.ndarray, axes: tuple[WindowAxis, WindowAxis], dx: np.ndarray) -> None:
    """Write ``dx`` (N, C, H, W) of the channel-major path: column gradients added back onto the windows."""
    N, C, H, W = dx.shape
    K = w.shape[0]
    h, w_axis = axes
    w_cols = w.reshape(K, -1).T                                     # (C*kH*kW, K)
    dout_rows = dout.reshape(-1, K)
    Hp, Wp = H + h.pad_lo + h.pad_hi, W + w_axis.pad_lo + w_axis.pad_hi
    for n0, n1, block_list in blocks(N, h.out, _row_bytes(axes, C, dout.itemsize)):
        dxp = scratch("dx_padded", (n1 - n0, C, Hp, Wp), dout.dtype)
        dxp[...] = 0
        for _, _, h0, h1 in block_list:
            d = dout_rows[_block_rows(axes, n0, n1, h0, h1)]
            col2im_cm(w_cols @ d.T, dxp, axes, h0, h1)              # (C*kH*kW, M) column gradients
        dx[n0:n1] = dxp[:, :, h.pad_lo:h.pad_lo + H, w_axis.pad_lo:w_axis.pad_lo + W]
