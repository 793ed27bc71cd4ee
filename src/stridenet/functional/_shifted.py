"""Stride-1 convolution as a sum of shifted matrix products over the padded images, with no im2col.

Lay a block of channels-last images out as one long grid of pixels, row after row, each row followed
by ``gw`` zero pixels and each image by ``gh`` zero rows (``gh``, ``gw`` the larger padding on each
axis: the zeros after one row or image are the padding before the next). Number the grid's pixels
in that order: output pixel (h, w) of image b is ``o = (b*(H + gh) + h)*(W + gw) + w``, and the input
pixel it reads under tap (i, j) is ``o + shift_ij``, the same shift for every output pixel. So, with
the grid as a matrix of rows (pixels, C),

    out[o] = sum over taps (i, j) of  grid[o + shift_ij] @ W_ij          W_ij = w[:, :, i, j].T  (C, K)

is kH*kW products of *contiguous row ranges* of one array, added up inside the BLAS kernel
(``_blas.gemm`` with ``accumulate``): nothing is copied into columns, and the block stays in cache
from one tap to the next. The products also fill the grid's padding positions (w >= W_out,
h >= H_out); those values are dropped. For 3x3 kernels with padding 1 that is (H+1)(W+1)/(H*W) of
the useful work: 1.07x for 28x28 images, 1.15x for 14x14, 1.27x for 8x8.

The backward pass is the same trick twice:

* ``dx`` is the stride-1 convolution of the output gradient, zero-padded by D(k-1) - P, with the
  filters flipped and their channels swapped (``W_ij`` becomes ``w[:, :, kH-1-i, kW-1-j]``, (K, C)).
* ``dw`` for tap (i, j) is ``sum_o grid[o + shift_ij]^T @ dout_grid[o]``, where ``dout_grid`` holds the
  output gradient at its pixels ``o`` and zeros elsewhere: again shifted row ranges. With 'same'
  padding the padded gradient of the ``dx`` step already is that grid, a whole number of rows on, so
  one copy of ``dout`` serves both products.

A 1x1 kernel with no padding is the grid-free case ("pointwise", with the compiled engine): the grid
would be the input itself and the products the output, so the blocks read the input in place (an NCHW
view as well as channels-last) and write the output straight (``_compiled.pointwise``).

Used for channels-last inputs, one group, stride 1 and padding at most D(k-1) on each side, when
NumPy's BLAS is reachable (``_blas``); ``conv.py`` keeps its im2col path for everything else. Each
block is a handful of NumPy and BLAS calls here, a task for whichever thread is free, or, with numba
installed, compiled work without the GIL, its products those of register-tiled kernels rather than
the BLAS's where the shapes allow (``_compiled``, ``_tiled_products``): each thread then makes one
compiled call that takes block after block from a counter the threads share.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from stridenet.functional import _blas, _compiled, _im2col
from stridenet.functional._layout import scratch
from stridenet.functional._parallel import image_slices, run_parallel
from stridenet.functional.activation import through_relu
from stridenet.functional.geometry import WindowAxis
from stridenet.functional.pool import max_pool2d_into

Axes = tuple[WindowAxis, WindowAxis]

_local = threading.local()

# An image whose working set exceeds this many budgets goes to the im2col path, which can cut an
# image into bands of rows; here a block is at least one whole image.
MAX_BUDGETS_PER_IMAGE = 4

# Forward blocks take this share of the block budget: 4 (blocks half the images of backward's) measured
# 0-13% faster forward passes than 1 on two threads (192->192 @8x8 13%, 64->64 @14x14 11%, 96->96 @32x32
# 7%, 96->192 @16x16 6%; 21 alternating rounds), and the reference CNN's training step 5-10% and inference
# 4-13% faster (12 rounds, twice): more blocks for the threads to share out on a host that slows one of
# them, and each block's grid and products nearer the level-2 cache beside the filters.
FORWARD_BUDGET_SHARE = 4

# Values per tile when a bias is copied into the products' rows (``_fill_rows``).
_TILE_VALUES = 4096

_ONES: dict[np.dtype, np.ndarray] = {}


def applies(axes: Axes, groups: int, channels: int, filters: int, dtype: np.dtype) -> bool:
    """Whether this module handles a convolution: stride 1, one group, a real window (or a 1x1 kernel where
    the compiled tiles compute it: one tap, each block's products in registers), padding within D(k-1)
    on each side, a BLAS to call, and one image's working set within bounds."""
    if groups != 1 or not _blas.available(dtype):
        return False
    if any(a.stride != 1 or a.extra_hi for a in axes):
        return False
    if axes[0].kernel * axes[1].kernel == 1 and not tiled(axes, channels, filters, dtype):
        return False
    if any(not 0 <= pad <= a.dilation * (a.kernel - 1) for a in axes for pad in (a.pad_lo, a.pad_hi)):
        return False
    return _grid_pixels(axes) * (2 * channels + 2 * filters) * np.dtype(dtype).itemsize \
        <= MAX_BUDGETS_PER_IMAGE * _im2col.COLS_BUDGET


def tiled(axes: Axes, channels: int, filters: int, dtype: np.dtype) -> bool:
    """Whether the compiled engine's tiles compute both the products and the weight gradient of a
    convolution this module handles (``_compiled``)."""
    return _compiled.available(dtype) and _compiled.tiles_cover(channels, filters, (axes[0].kernel, axes[1].kernel),
                                                                dtype)


class Filters(NamedTuple):
    """A convolution's filters as the blocks take them (``filters``): one (C, K) matrix per tap, and their
    layout for the compiled engine's tiles."""

    matrices: np.ndarray | None   # taps(w, flip); None where the tiles compute every block
    packed: np.ndarray | None     # _compiled.pack_filters(w, flip); None without the compiled engine


def filters(w: np.ndarray, axes: Axes, flip: bool = False) -> Filters:
    """``w`` (K, C, kH, kW) for ``forward`` or, with ``flip``, for ``backward``'s input gradient, made once
    per pass for all blocks. The tap matrices are made only where some block's products are the BLAS's
    (no compiled tiles, or an image too small for a tile); the tiles' layout is packed from ``w`` itself."""
    if not _compiled.available(w.dtype):
        return Filters(taps(w, flip), None)
    product_axes = _gradient_axes(axes) if flip else axes
    h, v = product_axes
    layout = Layout.of(product_axes)
    packed = _compiled.pack_filters(w, flip, _compiled.widest_span((h.out, v.out), layout.width,
                                                                    layout.rows_per_image))
    one_image = layout.count(1, h.out, v.out)   # the fewest outputs a block has
    outputs = w.shape[1] if flip else w.shape[0]
    tiled = packed.size > 0 and _compiled.tiles_apply(outputs, one_image, w.dtype)
    return Filters(None if tiled else taps(w, flip), packed)


def taps(w: np.ndarray, flip: bool = False) -> np.ndarray:
    """``w`` (K, C, kH, kW) as one matrix per tap: (kH*kW, C, K) for the forward pass or, with ``flip``,
    (kH*kW, K, C) for the input gradient (taps reversed, channels swapped)."""
    K, C, kH, kW = w.shape
    if flip:   # (K, C, kH, kW) -> (kH, kW, K, C), taps reversed
        return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)).reshape(kH * kW, K, C)
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0)).reshape(kH * kW, C, K)


def blocks(N: int, axes: Axes, channels: int, filters: int, itemsize: int, backward: bool) -> list[slice]:
    """The blocks of images ``forward`` (or ``backward``) works on, one after the other: as tasks for
    ``run_parallel``, they let a thread that finishes early take the next block. As few as the budget
    allows, but an even number where there are several, of sizes that differ by one image at most: two
    threads share them out evenly (three blocks would leave one thread a block to do alone), whatever
    the number of threads (which the blocks, and so the numbers, never depend on).

    A backward block's grids hold twice the values a forward block's do (the output gradient's as well
    as the input's); forward blocks take a quarter of the budget (``FORWARD_BUDGET_SHARE``), half of
    backward's images."""
    share = 2 if backward else FORWARD_BUDGET_SHARE
    return even_blocks(N, _images_per_block(axes, (channels + filters) * share, itemsize))


def even_blocks(N: int, per_block: int) -> list[slice]:
    """``N`` images in blocks of at most ``per_block``: as few as that allows, an even number where there
    are several (and images enough), sizes within one image of each other (``blocks``)."""
    count = -(-N // per_block)
    count = min(count + count % 2, N) if count > 1 else count
    bounds = [N * i // count for i in range(count + 1)]
    return [slice(n0, n1) for n0, n1 in itertools.pairwise(bounds) if n1 > n0]


def forward(x: np.ndarray, w: Filters, b: np.ndarray | None, axes: Axes, out: np.ndarray,
            rectify: bool = False, positive: np.ndarray | None = None, pool: tuple[int, int] = (1, 1)) -> None:
    """x (N, H, W, C) (any strides) convolved with the filters ``w`` (``filters``) -> out (N, H_out, W_out, K)
    (contiguous), the batch's blocks (``blocks``) shared out between the threads.

    The bias is written into the products' rows before the first tap, so the BLAS adds every tap
    onto it. With ``rectify`` each block goes through a ReLU while it is copied out of the products,
    and its mask of positive values into ``positive`` (as ``out``) unless that is None. With a
    ``pool`` window (kh, kw) other than (1, 1), ``out`` (N, H_out // kh, W_out // kw, K) receives the
    max of each tile of that size instead, pooled while the block is in cache (``positive`` None: for
    inference). With ``_compiled`` available each thread is one compiled call that takes block after
    block (``_compiled.forward_blocks``), else each block is a task of NumPy and BLAS calls.
    """
    K = out.shape[3]
    h, v = axes
    layout = Layout.of(axes)
    block_list = blocks(x.shape[0], axes, x.shape[3], K, x.itemsize, backward=False)
    if _compiled.available(x.dtype):
        threads, (bounds, largest) = thread_count(block_list, x.size + out.size), block_bounds(block_list)
        shifts = layout.shift_array(axes)
        pointwise = _compiled.pointwise(shifts, layout.width, layout.rows_per_image, (h.out, v.out), pool=pool)
        stack = functools.partial(thread_scratch, threads=threads, dtype=x.dtype)
        _compiled.forward_blocks(
            threads, bounds, _compiled.pixel_rows(x) if pointwise else x,
            stack("threads_grid_x", (layout.pixels(largest), x.shape[3]), not pointwise), layout.extent, shifts,
            w.matrices, w.packed, b, stack("threads_products", (layout.at_start().pixels(largest), K), not pointwise),
            (h.out, v.out), out, rectify, positive, pool)
        return

    def one_block(block: slice) -> None:
        n0, n1 = block.start, block.stop
        mask = None if positive is None else positive[n0:n1]
        grid = _bordered("grid_x", x[n0:n1], layout)
        valid = _sum_of_shifted(grid, layout, axes, w.matrices, n1 - n0, "shifted_out", b)
        dst = out[n0:n1]
        if pool != (1, 1):
            max_pool2d_into(valid.transpose(0, 3, 1, 2), pool, dst.transpose(0, 3, 1, 2))
            valid = dst
        if not rectify:
            if valid is not dst:
                np.copyto(dst, valid)
            return
        np.maximum(valid, x.dtype.type(0), out=dst)
        if mask is not None:
            np.greater(dst, 0, out=mask)

    _each_block(one_block, block_list, x.size + out.size)


def backward(x: np.ndarray, dout: np.ndarray, dx_filters: Filters | None, axes: Axes, sums: np.ndarray,
             has_bias: bool, dx: np.ndarray | None, positive: np.ndarray | None = None) -> np.ndarray | None:
    """Write ``dx`` (N, H, W, C) unless it is None, and each block's sums for ``dw`` into ``sums`` (blocks,
    kH*kW, C, K), one per block of ``blocks(N, ...)``; return the float64 ``db`` sums, or None without bias.
    The blocks are shared out between the threads, as in ``forward``.

    ``x`` (N, H, W, C) is the forward input and ``dout`` (N, H_out, W_out, K) its output's gradient (any
    strides), ``dx_filters`` the input gradient's (``filters(w, axes, flip=True)``; None without ``dx``);
    with a ReLU mask ``positive`` (as ``dout``), each block of ``dout`` is taken through the ReLU first.
    The blocks' sums become ``dw`` in ``weight_gradient``, added up in block order whichever thread wrote
    them; ``db`` is each block's float64 sum, added up in block order too.
    """
    N, C, K = x.shape[0], x.shape[3], dout.shape[3]
    h, v = axes
    block_list = blocks(N, axes, C, K, x.itemsize, backward=True)
    if _compiled.available(x.dtype):
        db_rows = _compiled_backward(x, dout, dx_filters, axes, sums, dx, positive, has_bias, block_list)
    else:
        layout, gradient_axes, gradient_layout, same = _backward_layouts(axes)
        db_rows = np.zeros((len(block_list), K if has_bias else 0), np.float64)
        index_of = {block.start: index for index, block in enumerate(block_list)}

        def one_block(block: slice) -> None:
            n0, n1 = block.start, block.stop
            index = index_of[n0]
            B = n1 - n0
            count = layout.count(B, h.out, v.out)                         # grid pixels up to the last output
            if dx is not None:
                padded, bias_sums = _gradient_grid("grid_dout", dout[n0:n1], gradient_layout, positive, block)
                np.copyto(dx[n0:n1], _sum_of_shifted(padded, gradient_layout, gradient_axes, dx_filters.matrices,
                                                     B, "shifted_dx"))
                if same:
                    on_grid = padded[gradient_layout.lead * gradient_layout.width:]
                else:
                    rectified = gradient_layout.images(padded, B, h.out, v.out)
                    on_grid = _bordered("grid_dout_on_x", rectified, layout.at_start())
            else:
                on_grid, bias_sums = _gradient_grid("grid_dout_on_x", dout[n0:n1], layout.at_start(), positive,
                                                    block)
            if has_bias:   # the grid holds the (rectified) gradient and zeros
                db_rows[index] = _column_sums(on_grid, count) if bias_sums is None else bias_sums
            grid = _bordered("grid_x", x[n0:n1], layout)
            _weight_sums(grid, layout.shifts(axes), on_grid, count, sums[index])

        _each_block(one_block, block_list, x.size + dout.size)
    if not has_bias:
        return None
    db = db_rows[0].copy()
    for row in db_rows[1:]:
        db += row
    return db


def block_bounds(block_list: list[slice]) -> tuple[np.ndarray, int]:
    """The blocks as the compiled threads take them (``_compiled.forward_blocks``): their bounds (block j is
    images ``bounds[j]:bounds[j + 1]``), and the most images a block has (what scratch is sized for)."""
    bounds = np.array([block.start for block in block_list] + [block_list[-1].stop], np.int64)
    return bounds, max(block.stop - block.start for block in block_list)


def thread_scratch(name: str, shape: tuple[int, int] | None, needed: bool = True, *, threads: int,
                   dtype: np.dtype) -> np.ndarray:
    """Scratch ``name`` of ``shape`` for each of ``threads`` threads (threads, *shape), or an empty stack
    (threads, 0, 0) where not ``needed`` (or no shape)."""
    return scratch(name, (threads, *shape), dtype) if needed and shape else np.empty((threads, 0, 0), dtype)


def thread_count(block_list: list[slice], size: int) -> int:
    """Threads that take blocks (at most one per block), or one where the work (``size`` array
    elements) is not worth a hand-off."""
    return min(len(image_slices(len(block_list), size)), len(block_list))


def _each_block(task: Callable[[slice], None], block_list: list[slice], size: int) -> None:
    """``task`` on every block: each a task for whichever thread is free, or all on this thread where the
    work (``size`` array elements) is not worth a hand-off."""
    if thread_count(block_list, size) <= 1:
        for block in block_list:
            task(block)
    else:
        run_parallel(task, block_list)


def weight_sums(N: int, axes: Axes, channels: int, filters: int, dtype: np.dtype) -> np.ndarray:
    """Room for ``backward``'s weight-gradient sums of a batch of ``N`` images, one (kH*kW, C, K) array
    per block (a reused scratch array: no page faults from the second call on)."""
    count = len(blocks(N, axes, channels, filters, np.dtype(dtype).itemsize, backward=True))
    return scratch("shifted_dw", (count, axes[0].kernel * axes[1].kernel, channels, filters), dtype)


def weight_gradient(sums: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``dw`` (K, C, kH, kW) in ``w``'s dtype: the blocks' ``sums`` (blocks, kH*kW, C, K) added up in
    float64, one block after another (the same numbers however many threads wrote them), rounded once."""
    dw = np.empty(w.shape, w.dtype)
    if _compiled.available(w.dtype):   # a few MB to read: every thread takes some input channels
        _compiled.weight_gradient(sums, dw, image_slices(sums.shape[2], sums.size))
        return dw
    K, C, kH, kW = w.shape
    total = sums[0].astype(np.float64)
    for block_sums in sums[1:]:
        total += block_sums
    np.copyto(dw, total.reshape(kH, kW, C, K).transpose(3, 2, 0, 1))
    return dw


def _compiled_backward(x: np.ndarray, dout: np.ndarray, dx_filters: Filters | None, axes: Axes, sums: np.ndarray,
                       dx: np.ndarray | None, positive: np.ndarray | None, has_bias: bool,
                       block_list: list[slice]) -> np.ndarray:
    """``backward`` on the compiled engine (``compiled_backward``): writes each block's sums for ``dw``; returns
    each block's ``db`` sums (blocks, K) (or (blocks, 0) without bias)."""
    h, v = axes
    layout, gradient_axes, gradient_layout, same = _backward_layouts(axes)
    gradient = None
    if dx is not None:
        shifts = gradient_layout.shift_array(gradient_axes)
        phase = np.array([[0, 0, h.size, v.size, 0, shifts.size, 0, dx_filters.packed.size]], np.int64)
        gradient = _compiled.InputGradient(gradient_layout.extent, phase, shifts, *dx_filters)
    return compiled_backward(x, dout, positive, dx, gradient, sums, has_bias, block_list, layout, same,
                             (h.kernel, v.kernel), lambda _: layout.shift_array(axes))


def compiled_backward(x: np.ndarray, dout: np.ndarray, positive: np.ndarray | None, dx: np.ndarray | None,
                      gradient: _compiled.InputGradient | None, sums: np.ndarray, has_bias: bool,
                      block_list: list[slice], grid: Any, same: bool, kernel: tuple[int, int],
                      shifts_for: Callable[[int], np.ndarray],
                      phases_for: Callable[[int], tuple[int, int, int, int, int]] = lambda _: _compiled.STRIDE_1
                      ) -> np.ndarray:
    """The backward pass of a path on the compiled engine (this module's, ``_phases``'), its blocks shared out
    between the threads (``_compiled.backward_blocks``): each thread's scratch stacked and sized for the
    largest block, the gradient (and mask) made contiguous for the blocks to read in place. Writes ``dx``
    unless None (its convolutions: ``gradient``) and each block's sums for ``dw`` into ``sums``; returns each
    block's ``db`` sums (blocks, K) (or (blocks, 0) without bias).

    ``grid``: the input's layout (``Layout`` or ``_phases``' phase layout: ``extent``, ``pixels``, ``count``,
    ``rows_per_image``, ``width``); ``same``: the padded gradient lies on it; ``kernel``: the weight-gradient
    tiles' view of the taps ((1, 1) where they are not evenly spaced along the grid's rows);
    ``shifts_for(images)``/``phases_for(images)``: the taps' shifts and the grid's phases for blocks of up to
    ``images`` images."""
    C, K = x.shape[3], dout.shape[3]
    out_h, out_w = dout.shape[1:3]
    bounds, largest = block_bounds(block_list)
    shifts, phases = shifts_for(largest), phases_for(largest)
    tiled = _compiled.weight_tiles_apply(C, K, grid.count(1, out_h, out_w), x.dtype, kernel)
    pointwise = tiled and _compiled.pointwise(shifts, grid.width, grid.rows_per_image, (out_h, out_w), phases[:2])
    if pointwise:   # read in place: no grids, no products, no columns
        x = _compiled.pixel_rows(x)
    columns = None if pointwise else _compiled.column_scratch(gradient, C, x.dtype)
    # the compiled blocks read the gradient (and mask) block by block in place: contiguous, channels-last
    dout = _compiled.contiguous_copy(dout)
    positive = None if positive is None else _compiled.contiguous_copy(positive)
    db_rows = np.zeros((len(block_list), K if has_bias else 0), np.float64)

    threads = thread_count(block_list, x.size + dout.size)
    stack = functools.partial(thread_scratch, threads=threads, dtype=x.dtype)
    d_lead, d_width, d_rows = (0, 0, 0) if gradient is None else gradient.grid_shape
    grids = (stack("threads_grid_x", (grid.pixels(largest), C), not pointwise),
             stack("threads_grid_dout", ((d_lead + largest * d_rows) * d_width, K), dx is not None and not pointwise),
             stack("threads_grid_dout_on_x", (largest * grid.rows_per_image * grid.width, K),
                   not (tiled or (dx is not None and same))))
    products = stack("threads_products_dx", (largest * d_rows * d_width, C), dx is not None and not pointwise)
    rows = stack("threads_rows", (largest * out_h * out_w, K), tiled)
    _compiled.backward_blocks(threads, bounds, x, dout, positive, dx, grids, grid.extent, gradient, same, shifts,
                              kernel[1], products, rows, tiled, sums, db_rows, phases=phases,
                              columns=None if columns is None else stack("threads_columns", columns))
    return db_rows


class Layout(NamedTuple):
    """A block of images (height x width_of_image pixels each) on one grid: rows ``width`` pixels long
    (an image row, then ``gap_w`` zeros), images ``rows_per_image`` rows apart (``gap_h`` zero rows
    after each), the first one ``lead`` rows in."""

    height: int
    width_of_image: int
    gap_h: int
    gap_w: int
    lead: int

    @classmethod
    @functools.cache
    def of(cls, axes: Axes) -> Layout:
        """The layout of a convolution's input: the gaps are the larger padding of each axis, and the
        lead is one row more than the top padding, so that every shift is positive."""
        h, v = axes
        gap_h, gap_w = max(h.pad_lo, h.pad_hi), max(v.pad_lo, v.pad_hi)
        return cls(h.size, v.size, gap_h, gap_w, gap_h + 1)

    def at_start(self) -> Layout:
        """The same grid, the first image at its very start (the output pixels' own numbering)."""
        return self._replace(lead=0)

    @property
    def width(self) -> int:
        return self.width_of_image + self.gap_w

    @property
    def rows_per_image(self) -> int:
        return self.height + self.gap_h

    def pixels(self, images: int) -> int:
        return (self.lead + images * self.rows_per_image) * self.width

    def count(self, images: int, out_h: int, out_w: int) -> int:
        """Output pixels to compute, up to the last image's last valid one."""
        return ((images - 1) * self.rows_per_image + out_h - 1) * self.width + out_w

    @property
    def extent(self) -> tuple[int, int, int]:
        """(lead, width, rows_per_image): what a compiled kernel needs to place pixels on the grid."""
        return self.lead, self.width, self.rows_per_image

    @functools.cache   # noqa: B019  (a few small layouts, kept for the process's life)
    def shift_array(self, axes: Axes) -> np.ndarray:
        """``shifts`` as a read-only int64 array."""
        shifts = np.array(self.shifts(axes), np.int64)
        shifts.flags.writeable = False
        return shifts

    @functools.cache   # noqa: B019  (a few small layouts, kept for the process's life)
    def shifts(self, axes: Axes) -> tuple[int, ...]:
        """Each tap's distance in pixels from an output pixel to the input pixel it reads."""
        h, v = axes
        return tuple((self.lead - h.pad_lo + i * h.dilation) * self.width - v.pad_lo + j * v.dilation
                     for i in range(h.kernel) for j in range(v.kernel))

    def images(self, grid: np.ndarray, images: int, out_h: int, out_w: int) -> np.ndarray:
        """The (images, out_h, out_w, channels) view of output pixels numbered from this grid's lead."""
        rows = grid[self.lead * self.width:].reshape(-1)[:images * self.rows_per_image * self.width * grid.shape[1]]
        return rows.reshape(images, self.rows_per_image, self.width, grid.shape[1])[:, :out_h, :out_w]


@functools.cache
def _backward_layouts(axes: Axes) -> tuple[Layout, Axes, Layout, bool]:
    """The input's grid layout, the input gradient's convolution and its grid layout, and whether
    padding is 'same' (then the padded output gradient lies on the input's grid, ``lead`` rows later)."""
    h, v = axes
    layout = Layout.of(axes)
    gradient_axes = _gradient_axes(axes)
    gradient_layout = Layout.of(gradient_axes)
    same = (gradient_layout.gap_h, gradient_layout.gap_w) == (layout.gap_h, layout.gap_w) \
        and (h.out, v.out) == (h.size, v.size)
    return layout, gradient_axes, gradient_layout, same


@functools.cache
def _gradient_axes(axes: Axes) -> Axes:
    """The input gradient's convolution: over the output gradient, padded by D(k-1) - P, stride 1."""
    return tuple(a._replace(size=a.out, pad_lo=a.dilation * (a.kernel - 1) - a.pad_lo,  # type: ignore[return-value]
                            pad_hi=a.dilation * (a.kernel - 1) - a.pad_hi, out=a.size) for a in axes)


def _sum_of_shifted(grid: np.ndarray, layout: Layout, axes: Axes, matrices: np.ndarray, images: int,
                    name: str, start: np.ndarray | None = None) -> np.ndarray:
    """``products[o] = start + sum over taps of grid[o + shift] @ matrix`` for the block's output pixels,
    added up by BLAS; returns the valid outputs as an (images, H_out, W_out, K) view of scratch ``name``.

    grid (pixels, C) contiguous, the matrices (taps, C, K), ``start`` (K,) (a bias) or None for zeros.
    """
    _, C, K = matrices.shape
    h, v = axes
    count = layout.count(images, h.out, v.out)
    products = scratch(name, (layout.at_start().pixels(images), K), grid.dtype)
    if start is not None:
        _fill_rows(products[:count], start)
    size = grid.itemsize
    g, m, o = _blas.address(grid), _blas.address(matrices), _blas.address(products)
    for t, shift in enumerate(layout.shifts(axes)):
        _blas.gemm_at(grid.dtype, count, K, C, g + shift * C * size, C, m + t * C * K * size, K, o, K,
                      start is not None or t > 0)
    return layout.at_start().images(products, images, h.out, v.out)


def _fill_rows(rows: np.ndarray, values: np.ndarray) -> None:
    """Every row of the contiguous (n, K) ``rows`` set to ``values`` (K,).

    Copied as a tile of many rows at a time: broadcasting one short row is several times slower.
    """
    n, K = rows.shape
    per_tile = max(min(n, _TILE_VALUES // max(K, 1)), 1)
    whole = n - n % per_tile
    np.copyto(rows[:whole].reshape(-1, per_tile * K), np.tile(values.astype(rows.dtype, copy=False), per_tile))
    np.copyto(rows[whole:], values)


def _column_sums(rows: np.ndarray, count: int) -> np.ndarray:
    """The sum of the first ``count`` rows of the row-contiguous (pixels, K) ``rows``, as float64 (K,).

    A matrix-vector product with ones, in the grid's precision: ten times faster than NumPy's
    float64 reduction down the rows.
    """
    return (_ones(count, rows.dtype) @ rows[:count]).astype(np.float64)


def _ones(count: int, dtype: np.dtype) -> np.ndarray:
    """A read-only vector of ``count`` ones (shared, grown as needed)."""
    dtype = np.dtype(dtype)
    ones = _ONES.get(dtype)
    if ones is None or ones.size < count:
        ones = np.ones(max(count, 4096), dtype)
        ones.flags.writeable = False
        _ONES[dtype] = ones
    return ones[:count]


def _weight_sums(grid: np.ndarray, shifts: tuple[int, ...], on_grid: np.ndarray, count: int, sums: np.ndarray) -> None:
    """``sums[t] = grid[shift_t:shift_t + count]^T @ on_grid[:count]`` for every tap: (taps, C, K).

    grid (pixels, C) and on_grid (pixels, K) row-contiguous, sums contiguous.
    """
    _, C, K = sums.shape
    size = grid.itemsize
    g, d, s = _blas.address(grid), _blas.address(on_grid), _blas.address(sums)
    ld = on_grid.strides[0] // size
    for t, shift in enumerate(shifts):
        _blas.gemm_at(grid.dtype, C, K, count, g + shift * C * size, C, d, ld, s + t * C * K * size, K,
                      transpose_a=True)


def _gradient_grid(name: str, dout: np.ndarray, layout: Layout, positive: np.ndarray | None,
                   block: slice) -> tuple[np.ndarray, np.ndarray | None]:
    """A block of ``dout`` (B, H_out, W_out, K) on its grid (``_bordered``), taken through the ReLU mask
    ``positive`` (for all images, or None) on the way; with the mask also the float64 sums over the
    block's pixels of the rectified gradient (its bias gradient), else None.

    The mask multiplies; if that made a NaN from an infinite gradient (``inf * 0``), or ``dout`` holds
    any other non-finite value, the sums show it and the block is laid out again through the exact
    ``np.where``.
    """
    if positive is None:
        return _bordered(name, dout, layout), None
    mask = positive[block]
    grid = _bordered(name, dout, layout, mask, exact=False)
    on_grid = grid[layout.lead * layout.width:]
    count = layout.count(*dout.shape[:3])
    sums = _column_sums(on_grid, count)
    if not np.isfinite(sums).all():
        grid = _bordered(name, dout, layout, mask, exact=True)
        sums = _column_sums(on_grid, count)
    return grid, sums


def _bordered(name: str, values: np.ndarray, layout: Layout, positive: np.ndarray | None = None,
              exact: bool = True) -> np.ndarray:
    """``values`` (B, h, w, C) laid out on a zeroed grid (scratch ``name``): its rows (pixels, C).

    With a ReLU mask ``positive`` the values are taken through the ReLU on the way (``through_relu``;
    with ``exact=False`` its plain multiply, which the caller checks). Only this function writes these
    scratch arrays' gaps (the compiled kernels lay their grids out in scratch arrays of their own),
    so when the last grid written to ``name`` by this thread had the same shape and place, its zeros
    are still there and only the values are copied.
    """
    B, h, w, C = values.shape
    grid = scratch(name, (layout.pixels(B), C), values.dtype)
    lead = layout.lead * layout.width
    body = grid[lead:].reshape(B, layout.rows_per_image, layout.width, C)
    shape = (_blas.address(grid), grid.shape, grid.dtype, layout, h, w)
    zeroed = _zeroed_grids()
    if zeroed.get(name) != shape:
        grid[:lead] = 0
        body[:, h:] = 0                                               # the rows between images
        body[:, :h, w:] = 0                                           # the zeros after each row
        zeroed[name] = shape
    inside = body[:, :h, :w]
    if positive is None:
        np.copyto(inside, values)
    else:
        through_relu(values, positive, inside, checked=exact)
    return grid


def _zeroed_grids() -> dict[str, tuple]:
    """This thread's record of the grid last laid out in each scratch array (see ``_bordered``)."""
    try:
        return _local.zeroed
    except AttributeError:
        _local.zeroed = {}
        return _local.zeroed


def _grid_pixels(axes: Axes) -> int:
    """Grid pixels per image."""
    layout = Layout.of(axes)
    return layout.rows_per_image * layout.width


def _images_per_block(axes: Axes, channels: int, itemsize: int) -> int:
    """Images per block so that their grids of ``channels`` values per pixel fit the block budget
    (``_im2col.COLS_BUDGET``, the one knob for both paths)."""
    return max(_im2col.COLS_BUDGET // max(_grid_pixels(axes) * channels * itemsize, 1), 1)
