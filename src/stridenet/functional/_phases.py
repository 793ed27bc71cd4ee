"""Strided convolution without im2col: the input split into its stride phases, each tap a shift.

A convolution of stride S reads, for output pixel (h, w) and tap (i, j), the zero-padded input at
(S*h + i, S*w + j). Split that padded input into S x S phases, phase (a, c) holding every S-th row
from row a and every S-th column from column c: tap (i, j) then reads phase (i mod S, j mod S) at
(h + i div S, w + j div S), a stride-1 offset inside one phase. Lay the phases out one after another
on one grid, each image of each phase ``width`` = W_out + (kW-1) div S pixels a row and
``rows_per_image`` = H_out + (kH-1) div S rows, numbered like the output pixels (o = (b *
rows_per_image + h) * width + w): every tap becomes one shift on that grid, as on ``_shifted``'s, and
the compiled engine's register-tiled products and weight-gradient tiles run on it as they are
(``_compiled_kernels.tiled_products``, ``tiled_weight_sums``). Each thread is one compiled call that
takes block after block of images (``_compiled.forward_blocks``), lays its phases out
(``lay_out_phases``; the phases a fixed distance apart, that of the largest block, so that every
block has the same shifts) and computes from them.

The input gradient comes in phases too, of the input's pixels this time (``gradient_phases``): the
rows y with one remainder y mod S receive the same taps, and over them the sum is a stride-1
convolution of the output gradient with those taps flipped (input and output channels swapped),
padded as that phase needs. Each block lays its output gradient out once, on one grid whose gaps are
the widest any phase needs, and every phase's convolution is a set of shifts on it
(``input_gradient``), its products written straight into every S-th row and column of ``dx``: each
value of ``dx`` is written once.

Used with the compiled engine's tiles (``_compiled``): stride above 1, dilation 1, one group, whole
64-byte vectors of filters and 8 input channels or more (for the weight-gradient tiles); ``conv.py``
keeps its im2col path for the rest.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from stridenet.functional import _compiled, _im2col, _shifted
from stridenet.functional._layout import scratch
from stridenet.functional._parallel import total
from stridenet.functional.geometry import WindowAxis, window_axis

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

    def phases(self, images: int) -> tuple[int, int, int, int, int]:
        """What the compiled blocks take as ``phases``, for blocks of up to ``images`` images."""
        return self.stride_h, self.stride_w, self.pad_top, self.pad_left, images * self.rows_per_image * self.width

    @property
    def extent(self) -> tuple[int, int, int]:
        """(lead, width, rows_per_image), as ``_shifted.Layout.extent``: no lead, every shift is positive."""
        return 0, self.width, self.rows_per_image

    def pixels(self, images: int) -> int:
        """Grid pixels of ``images`` images: every phase's."""
        return self.stride_h * self.stride_w * images * self.rows_per_image * self.width

    def count(self, images: int, out_h: int, out_w: int) -> int:
        """Output pixels to compute, up to the last image's last valid one."""
        return ((images - 1) * self.rows_per_image + out_h - 1) * self.width + out_w

    def shifts(self, axes: Axes, images: int) -> np.ndarray:
        """Each tap's shift (row-major) for phases laid out for up to ``images`` images: its phase's start,
        then its offset there."""
        h, v = axes
        phase_pixels = images * self.rows_per_image * self.width
        return np.array([((i % h.stride) * v.stride + j % v.stride) * phase_pixels
                         + (i // h.stride) * self.width + j // v.stride
                         for i in range(h.kernel) for j in range(v.kernel)], np.int64)


def applies(axes: Axes, groups: int, channels: int, filters: int, dtype: np.dtype) -> bool:
    """Whether this module handles a convolution (see the module's docstring), one image's scratch within
    the working-set bound ``_shifted`` keeps."""
    h, v = axes
    if groups != 1 or h.stride * v.stride == 1 or h.dilation != 1 or v.dilation != 1:
        return False
    if not (_compiled.available(dtype) and _compiled.tiles_cover(channels, filters, (1, 1), dtype)):
        return False
    return _image_bytes(axes, channels, filters, np.dtype(dtype).itemsize) \
        <= _shifted.MAX_BUDGETS_PER_IMAGE * _im2col.COLS_BUDGET


def filters(w: np.ndarray, axes: Axes) -> _shifted.Filters:
    """``w`` (K, C, kH, kW) as ``forward``'s blocks take it: packed for the tiles and, where an image is
    too small for a tile (the blocks then call the BLAS), the taps' matrices too."""
    h, v = axes
    layout = _PhaseLayout.of(axes)
    packed = _compiled.pack_filters(w, False, _compiled.widest_span((h.out, v.out), layout.width,
                                                                    layout.rows_per_image))
    tiled = packed.size > 0 and _compiled.tiles_apply(w.shape[0], layout.count(1, h.out, v.out), w.dtype)
    return _shifted.Filters(None if tiled else _shifted.taps(w), packed)


def input_gradient(w: np.ndarray, axes: Axes) -> _compiled.InputGradient:
    """The input gradient's convolutions for ``backward``: one per phase of the input, each with its taps
    of ``w`` (K, C, kH, kW) flipped and packed for the tiles (and, where an image is too small for a tile
    in some phase, every phase's tap matrices too), its shifts on the output gradient's grid."""
    layout, phases_h, phases_w = _gradient_geometry(axes)
    C = w.shape[1]
    rows, shifts, packed, kernels = [], [], [], []
    tiled = True
    for r_h, taps_h, axis_h in phases_h:
        for r_w, taps_w, axis_w in phases_w:
            first_tap, first_value = sum(s.size for s in shifts), sum(p.size for p in packed)
            if not (taps_h and taps_w):   # rows or columns no tap reaches
                rows.append((r_h, r_w, axis_h.out, axis_w.out, first_tap, 0, first_value, 0))
                continue
            kernel = flipped_kernel(w, 1, taps_h, taps_w)          # (C, K, m_h, m_w): a forward convolution's
            phase_axes = (axis_h, axis_w)
            kernels.append(kernel)
            shifts.append(layout.shift_array(phase_axes))
            packed.append(_compiled.pack_filters(kernel, False, _compiled.widest_span(
                (axis_h.out, axis_w.out), layout.width, layout.rows_per_image)))
            tiled = tiled and packed[-1].size > 0 and \
                _compiled.tiles_apply(C, layout.count(1, axis_h.out, axis_w.out), w.dtype)
            rows.append((r_h, r_w, axis_h.out, axis_w.out, first_tap, shifts[-1].size, first_value, packed[-1].size))
    matrices = None if tiled else np.concatenate([_shifted.taps(kernel) for kernel in kernels])   # (taps, K, C)
    return _compiled.InputGradient(layout.extent, np.array(rows, np.int64), np.concatenate(shifts),
                                   matrices, np.concatenate(packed))


def gradient_phases(axis: WindowAxis, size: int) -> list[tuple[int, list[int], WindowAxis]]:
    """For each remainder r of input rows mod S: r, the taps reaching those rows, and the geometry
    of the stride-1 convolution over dout (size H_out) that yields rows r, r + S, ... (for rows no tap
    reaches, only its ``out``, their count, holds)."""
    S, D, F, P = axis.stride, axis.dilation, axis.kernel, axis.pad_lo
    phases = []
    for r in range(min(S, size)):
        taps = [i for i in range(F) if (r + P - i * D) % S == 0]
        count = len(range(r, size, S))
        if not taps:
            phases.append((r, taps, axis._replace(out=count)))
            continue
        dilation = (taps[1] - taps[0]) * D // S if len(taps) > 1 else 1
        # the last tap reads dout row q + (r + P - taps[-1]*D)/S for output row q of the phase
        pad_lo = -((r + P - taps[-1] * D) // S)
        span = (count - 1) + (len(taps) - 1) * dilation + 1
        phases.append((r, taps, window_axis(axis.out, len(taps), 1, dilation, (pad_lo, span - axis.out - pad_lo))))
    return phases


def flipped_kernel(w: np.ndarray, G: int, taps_h: list[int], taps_w: list[int]) -> np.ndarray:
    """The filters of an input-gradient convolution: the given taps reversed, input and output channels
    swapped, (C, K/G, m_h, m_w), contiguous."""
    K, Cg, kH, kW = w.shape
    by_group = w.reshape(G, K // G, Cg, kH, kW)
    # (G, K/G, C/G, m_h, m_w), taps reversed -> (C, K/G, m_h, m_w)
    flipped = by_group[:, :, :, taps_h[::-1]][:, :, :, :, taps_w[::-1]].transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(flipped.reshape(G * Cg, K // G, len(taps_h), len(taps_w)))


@functools.cache
def _gradient_geometry(axes: Axes) -> tuple[_shifted.Layout, list, list]:
    """The output gradient's grid for every phase of the input gradient (gaps the widest padding any
    phase needs, every shift positive), and each axis' phases (``gradient_phases``). Every phase's
    outputs fit an image's rows and columns of that grid (a phase of count rows spans H_out + pad_lo +
    pad_hi = count + (taps - 1) * dilation, and its smaller padding never exceeds its taps' reach)."""
    h, v = axes
    phases_h, phases_w = gradient_phases(h, h.size), gradient_phases(v, v.size)
    gap_h = max([0] + [max(a.pad_lo, a.pad_hi) for _, taps, a in phases_h if taps])
    gap_w = max([0] + [max(a.pad_lo, a.pad_hi) for _, taps, a in phases_w if taps])
    return _shifted.Layout(h.out, v.out, gap_h, gap_w, gap_h + 1), phases_h, phases_w


def _image_bytes(axes: Axes, channels: int, filters: int, itemsize: int) -> int:
    """One image's share of a block's scratch: its phases (``channels`` values a pixel), its products or
    output gradient on their grid and on the input gradient's (``filters``), and that gradient's
    products (``channels``)."""
    layout, gradient_layout = _PhaseLayout.of(axes), _gradient_geometry(axes)[0]
    return (layout.pixels(1) * channels + layout.rows_per_image * layout.width * filters
            + gradient_layout.rows_per_image * gradient_layout.width * (filters + channels)) * itemsize


def blocks(N: int, axes: Axes, channels: int, filters: int, itemsize: int) -> list[slice]:
    """The blocks of images ``forward`` and ``backward`` work on, as ``_shifted.blocks``: their scratch
    (``_image_bytes``) within ``_im2col.COLS_BUDGET``."""
    return _shifted.even_blocks(N, max(_im2col.COLS_BUDGET // _image_bytes(axes, channels, filters, itemsize), 1))


def weight_sums(N: int, axes: Axes, channels: int, filters: int, dtype: np.dtype) -> np.ndarray:
    """Room for ``backward``'s weight-gradient sums, one (kH*kW, C, K) array per block (as ``_shifted.weight_sums``)."""
    count = len(blocks(N, axes, channels, filters, np.dtype(dtype).itemsize))
    return scratch("shifted_dw", (count, axes[0].kernel * axes[1].kernel, channels, filters), dtype)


def forward(x: np.ndarray, w: _shifted.Filters, b: np.ndarray | None, axes: Axes, out: np.ndarray,
            rectify: bool = False, positive: np.ndarray | None = None) -> None:
    """x (N, H, W, C) (any strides) convolved with the filters ``w`` (``filters``) -> out (N, H_out, W_out, K)
    (contiguous), rectified if ``rectify``, its mask of positive values into ``positive`` unless None;
    the batch's blocks shared out between the threads."""
    C, K = x.shape[3], out.shape[3]
    h, v = axes
    layout = _PhaseLayout.of(axes)

    block_list = blocks(x.shape[0], axes, C, K, x.itemsize)
    threads = _shifted.thread_count(block_list, x.size + out.size)
    bounds, largest = _shifted.block_bounds(block_list)
    _compiled.forward_blocks(
        threads, bounds, x, scratch("threads_grid_x", (threads, layout.pixels(largest), C), x.dtype), layout.extent,
        layout.shifts(axes, largest), w.matrices, w.packed, b,
        scratch("threads_products", (threads, largest * layout.rows_per_image * layout.width, K), x.dtype),
        (h.out, v.out), out, rectify, positive, phases=layout.phases(largest))


def backward(x: np.ndarray, dout: np.ndarray, gradient: _compiled.InputGradient | None, axes: Axes,
             sums: np.ndarray, has_bias: bool, dx: np.ndarray | None, positive: np.ndarray | None = None
             ) -> np.ndarray | None:
    """Write ``dx`` (N, H, W, C) unless it is None (its convolutions: ``gradient``, from ``input_gradient``),
    and each block's sums for ``dw`` into ``sums`` (blocks, kH*kW, C, K), one per block of ``blocks(N,
    ...)`` (they become ``dw`` in ``_shifted.weight_gradient``); return the float64 ``db`` sums, added up in
    block order, or None without bias. ``x`` (N, H, W, C) is the forward input and ``dout`` (N, H_out,
    W_out, K) its output's gradient (any strides), taken through the ReLU mask ``positive`` (as
    ``dout``) where given. The blocks are shared out between the threads, as in ``forward``."""
    layout = _PhaseLayout.of(axes)
    db_rows = _shifted.compiled_backward(x, dout, positive, dx, gradient, sums, has_bias,
                                         blocks(x.shape[0], axes, x.shape[3], dout.shape[3], x.itemsize), layout,
                                         False, (1, 1), lambda images: layout.shifts(axes, images), layout.phases)
    return total(list(db_rows)) if has_bias else None
