"""Strided convolution without im2col: the input split into its stride phases, each tap a shift.

A convolution of stride S reads, for output pixel (h, w) and tap (i, j), the zero-padded input at
(S*h + i, S*w + j). Split that padded input into S x S phases, phase (a, c) holding every S-th row
from row a and every S-th column from column c: tap (i, j) then reads phase (i mod S, j mod S) at
(h + i div S, w + j div S), a stride-1 offset inside one phase. Lay the phases out one after another
on one grid, each image of each phase ``width`` = W_out + (kW-1) div S pixels a row and
``rows_per_image`` = H_out + (kH-1) div S rows, numbered like the output pixels (o = (b *
rows_per_image + h) * width + w): every tap becomes one shift on that grid, as on ``_shifted``'s, and
the compiled engine's register-tiled products and weight-gradient tiles run on it as they are
(``_compiled_kernels.tiled_products``, ``tiled_weight_sums``). Each block of images is one compiled
call that lays its phases out (``lay_out_phases``) and computes from them.

The input gradient is not computed here: ``conv.py`` writes it phase by phase as stride-1
convolutions of the output gradient (``_input_grad_nhwc``), which reads each value once.

Used with the compiled engine's tiles (``_compiled``): stride above 1, dilation 1, one group, whole
64-byte vectors of filters and 8 input channels or more (for the weight-gradient tiles); ``conv.py``
keeps its im2col path for the rest.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.functional import _compiled, _im2col, _shifted
from stridenet.functional._layout import contiguous, scratch
from stridenet.functional.geometry import WindowAxis

Axes = tuple[WindowAxis, WindowAxis]


class _PhaseLayout(NamedTuple):
    """The phases of a block of images on one grid (see the module's docstring)."""

    stride_h: int
    stride_w: int
    pad_top: int
    pad_left: int
    width: int            # pixels a row of a phase's image: W_out + (kW - 1) // stride_w
    rows_per_image: int   # rows of a phase's image: H_out + (kH - 1) // stride_h

    @classmethod
    def of(cls, axes: Axes) -> _PhaseLayout:
        h, v = axes
        return cls(h.stride, v.stride, h.pad_lo, v.pad_lo, v.out + (v.kernel - 1) // v.stride,
                   h.out + (h.kernel - 1) // h.stride)

    @property
    def phases(self) -> tuple[int, int, int, int]:
        """What the compiled blocks take as ``phases``."""
        return self.stride_h, self.stride_w, self.pad_top, self.pad_left

    @property
    def extent(self) -> tuple[int, int, int]:
        """(lead, width, rows_per_image), as ``_shifted._Layout.extent``: no lead, every shift is positive."""
        return 0, self.width, self.rows_per_image

    def pixels(self, images: int) -> int:
        """Grid pixels of ``images`` images: every phase's."""
        return self.stride_h * self.stride_w * images * self.rows_per_image * self.width

    def count(self, images: int, out_h: int, out_w: int) -> int:
        """Output pixels to compute, up to the last image's last valid one."""
        return ((images - 1) * self.rows_per_image + out_h - 1) * self.width + out_w

    def shifts(self, axes: Axes, images: int) -> np.ndarray:
        """Each tap's shift (row-major) for a block of ``images``: its phase's start, then its offset there."""
        h, v = axes
        phase_pixels = images * self.rows_per_image * self.width
        return np.array([((i % h.stride) * v.stride + j % v.stride) * phase_pixels
                         + (i // h.stride) * self.width + j // v.stride
                         for i in range(h.kernel) for j in range(v.kernel)], np.int64)


def applies(axes: Axes, groups: int, channels: int, filters: int, dtype: np.dtype) -> bool:
    """Whether this module handles a convolution (see the module's docstring), one image's phases within
    the working-set bound ``_shifted`` keeps."""
    h, v = axes
    if groups != 1 or h.stride * v.stride == 1 or h.dilation != 1 or v.dilation != 1:
        return False
    if not (_compiled.available(dtype) and _compiled.tiles_cover(channels, filters, (1, 1), dtype)):
        return False
    layout = _PhaseLayout.of(axes)
    per_image = layout.pixels(1) * channels + layout.rows_per_image * layout.width * filters
    return per_image * np.dtype(dtype).itemsize <= _shifted.MAX_BUDGETS_PER_IMAGE * _im2col.COLS_BUDGET


def filters(w: np.ndarray, axes: Axes) -> _shifted.Filters:
    """``w`` (K, C, kH, kW) as ``forward``'s blocks take it: packed for the tiles and, where an image is
    too small for a tile (the blocks then call the BLAS), the taps' matrices too."""
    h, v = axes
    layout = _PhaseLayout.of(axes)
    packed = _compiled.pack_filters(w, False, _compiled.widest_span((h.out, v.out), layout.width,
                                                                    layout.rows_per_image))
    tiled = packed.size > 0 and _compiled.tiles_apply(w.shape[0], layout.count(1, h.out, v.out), w.dtype)
    return _shifted.Filters(None if tiled else _shifted.taps(w), packed)


def blocks(N: int, axes: Axes, channels: int, filters: int, itemsize: int, backward: bool) -> list[slice]:
    """The blocks of images ``forward`` (or ``backward``) works on, as ``_shifted.blocks``: their phases'
    grid of ``channels`` values a pixel and the products (or, backward, the output gradient) of ``filters``
    a pixel within ``_im2col.COLS_BUDGET`` (the input gradient is not computed in blocks here)."""
    layout = _PhaseLayout.of(axes)
    per_image = (layout.pixels(1) * channels + layout.rows_per_image * layout.width * filters) * itemsize
    return _shifted.even_blocks(N, max(_im2col.COLS_BUDGET // per_image, 1))


def weight_sums(N: int, axes: Axes, channels: int, filters: int, dtype: np.dtype) -> np.ndarray:
    """Room for ``backward``'s weight-gradient sums, one (kH*kW, C, K) array per block (as ``_shifted.weight_sums``)."""
    count = len(blocks(N, axes, channels, filters, np.dtype(dtype).itemsize, backward=True))
    return scratch("shifted_dw", (count, axes[0].kernel * axes[1].kernel, channels, filters), dtype)


def block_count(N: int, axes: Axes, channels: int, filters: int, itemsize: int) -> int:
    """How many of ``weight_sums``' arrays ``backward`` fills for ``N`` images."""
    return len(blocks(N, axes, channels, filters, itemsize, backward=True))


def forward(x: np.ndarray, w: _shifted.Filters, b: np.ndarray | None, axes: Axes, out: np.ndarray,
            rectify: bool = False, positive: np.ndarray | None = None) -> None:
    """x (N, H, W, C) (any strides) convolved with the filters ``w`` (``filters``) -> out (N, H_out, W_out, K)
    (contiguous), rectified if ``rectify``, its mask of positive values into ``positive`` unless None."""
    K = out.shape[3]
    h, v = axes
    layout = _PhaseLayout.of(axes)
    for block in blocks(x.shape[0], axes, x.shape[3], K, x.itemsize, backward=False):
        n0, n1 = block.start, block.stop
        B = n1 - n0
        _compiled.forward_block(
            x[n0:n1], scratch("phase_grid", (layout.pixels(B), x.shape[3]), x.dtype), layout.extent,
            layout.shifts(axes, B), w.matrices, w.packed, b,
            scratch("shifted_out", (B * layout.rows_per_image * layout.width, K), x.dtype), (h.out, v.out),
            out[n0:n1], rectify, None if positive is None else positive[n0:n1], phases=layout.phases)


def backward(x: np.ndarray, dout: np.ndarray, axes: Axes, sums: np.ndarray, has_bias: bool,
             positive: np.ndarray | None = None) -> np.ndarray | None:
    """Each block's sums for ``dw`` into ``sums`` (blocks, kH*kW, C, K), one per block of ``blocks(N, ...)``
    (they become ``dw`` in ``_shifted.weight_gradient``); return the float64 ``db`` sums, or None without
    bias. ``x`` (N, H, W, C) is the forward input and ``dout`` (N, H_out, W_out, K) its output's gradient
    (any strides), taken through the ReLU mask ``positive`` (as ``dout``) where given."""
    N, C, K = x.shape[0], x.shape[3], dout.shape[3]
    h, v = axes
    layout = _PhaseLayout.of(axes)
    db = np.zeros(K, np.float64) if has_bias else None
    unused = np.empty((0, 0), x.dtype)
    for index, block in enumerate(blocks(N, axes, C, K, x.itemsize, backward=True)):
        n0, n1 = block.start, block.stop
        B = n1 - n0
        count = layout.count(B, h.out, v.out)
        tiled = _compiled.weight_tiles_apply(C, K, count, x.dtype, (1, 1))   # taps not evenly spaced in a row
        block_dout = contiguous(dout[n0:n1], "dout_nhwc")
        block_mask = None if positive is None else contiguous(positive[n0:n1], "mask_nhwc")
        rows_ready = tiled and positive is None
        rows = block_dout.reshape(-1, K) if rows_ready else \
            scratch("shifted_rows", (B * h.out * v.out, K), x.dtype) if tiled else unused
        on_grid = unused if tiled else scratch("phase_dout", (B * layout.rows_per_image * layout.width, K), x.dtype)
        _compiled.backward_block(
            x[n0:n1], block_dout, block_mask, None, (scratch("phase_grid", (layout.pixels(B), C), x.dtype), unused,
                                                     on_grid),
            layout.extent, (0, 0, 0), False, layout.shifts(axes, B), 1, np.empty(0, np.int64), None,
            unused.reshape(0), unused, rows, rows_ready, sums[index], (count, 0), db, phases=layout.phases)
    return db
