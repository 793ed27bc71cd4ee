"""Compiled kernels (numba, optional): the shifted-product convolution's work on a block of images as
one call, and max pooling over tiling windows.

Every NumPy operation on a large array and every BLAS call through ctypes lets go of the GIL and
takes it back when it returns. A block of ``_shifted``'s pure-NumPy path makes a few dozen such calls,
and with two threads at work, a thread coming back from one often finds the other holding the GIL
and waits (measured on the reference CNN: 8% of the forward tasks' time, 14% of the backward's). With
numba installed (``pip install 'stridenet[fast]'``), each block is compiled work that holds no GIL
from start to end, and each thread takes block after block inside one compiled call
(``forward_blocks``, ``backward_blocks``: a thread waiting for the GIL between blocks slept 0.3 ms or
more on a virtual machine). Those threads are numba's own where its threading layer allows
(``native_threads``): the whole parallel pass is then one call from Python, with no GIL hand-off at
its start or end either. A block is laid out on its zero-padded grid, the work computes the
products (its own register-tiled kernels, below, or the BLAS's ``gemm`` for every tap through the
routine's address, the one ``_blas`` found), and does the element-wise work (bias, ReLU and its mask,
copying out, the bias gradient) in the same loops, one pass where the NumPy path needs several.

The same module pools: ``max_pool_tiled_forward``/``backward`` for windows that tile a channels-last
input (one pass each way instead of NumPy's several), and ``forward_blocks`` with a ``pool`` window,
which the fused inference pass (``conv.conv2d_relu_pool_forward``) uses to write only pooled values.

Where the shapes allow, the products are not the BLAS's but register-tiled kernels of this package's own
(``_tiled_products``): a tile of 8-14 pixels x 32 float32 outputs (AVX-512) or 4 pixels x 24 (AVX2) stays
in registers over every tap and input channel, where each of the BLAS's per-tap products reads and writes
the whole block again (``_compiled_kernels.tiles_apply``: a whole number of the CPU's vectors of filters);
the weight gradient likewise, over the outputs only (``weight_tiles_apply``); on CPUs with AVX-512 or
AVX2 and FMA (``tiles_enabled``), each with tiles sized for its registers. On single blocks of the
reference CNN's layers that is 1.5-2.5x the BLAS's speed for the same products with AVX-512 (whole
layers, with everything else: 1.1-1.8x; with AVX2, the reference CNN went from 1.01x to 1.23-1.40x PyTorch's
training speed, 1.07x to 1.34-1.50x its inference), and it needs no BLAS setting (the tiles use the CPU's
widest vectors whatever ``OPENBLAS_CORETYPE`` says). Such sums are added in another order than the BLAS's,
so the two engines agree to rounding, not bit for bit; everything else (the weight gradient's float64 sums
over blocks, bias, ReLU and mask, copy-out) is the same steps. Other shapes call the BLAS's ``gemm`` for
every tap, as the NumPy path does. The bias gradient is added pixel by pixel in float64
here (a float32 matrix-vector product there). A ReLU mask is applied by choosing, not multiplying, so an
infinite gradient where the ReLU was off needs no second pass (and a gradient it blocks is +0 here,
where the product may give -0).

Used when numba can be imported, ``_blas`` found a routine with 64-bit integers (NumPy's own wheels'
``scipy_cblas_?gemm64_``), and ``STRIDENET_NUMBA`` is not ``0``; otherwise ``available`` is False and
``_shifted`` runs its NumPy code, which stays tested. numba is imported on the first convolution, not
with stridenet; its compiled code is cached on disk (numba's ``cache=True``), so later processes load
it in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import warnings
from typing import Any, NamedTuple

import numpy as np

from stridenet.functional import _blas, _parallel
from stridenet.functional._parallel import image_slices, run_parallel, single_threaded_blas

_state: dict[str, Any] = {"kernels": None, "routines": None, "tiles": None, "native": None}

# A stride-1 grid: (stride_h, stride_w, pad_top, pad_left, phase_pixels) of ``forward_blocks``' and
# ``backward_blocks``' phases.
STRIDE_1 = (1, 1, 0, 0, 0)


def available(dtype: np.dtype) -> bool:
    """True when the compiled block kernels can run for arrays of ``dtype``."""
    if os.environ.get("STRIDENET_NUMBA", "").strip() == "0":
        return False
    return np.dtype(dtype) in _routines() and _kernels() is not None


def tiles_enabled() -> bool:
    """Whether the register tiles run here: on CPUs with AVX-512 (32 registers of 64 bytes) or AVX2 and
    FMA (16 of 32 bytes), each with tiles sized for its registers (``_compiled_kernels``). Elsewhere the
    BLAS computes the products instead (as on the NumPy engine)."""
    if _state["tiles"] is None:
        try:
            from stridenet.functional import _tiled_products
        except ImportError:   # no numba, no tiles
            _state["tiles"] = False
        else:
            _state["tiles"] = _tiled_products.host_vector_bytes() > 0
    return _state["tiles"]


def pack_filters(w: np.ndarray, flip: bool, widest: int) -> np.ndarray:
    """Filters ``w`` (K, C, kH, kW) laid out for the tiled products, once per pass: the tap matrices of
    the forward pass or, with ``flip``, of the input gradient, in spans of up to ``widest`` vectors
    (``widest_span`` of the products' layout), as ``forward_blocks``' ``packed`` (and ``InputGradient``'s
    ``packed``) take them; empty where the tiles do not run (``tiles_enabled``), so the blocks call
    the BLAS instead."""
    return _kernels().pack_filters(w, flip, widest) if tiles_enabled() else np.empty(0, w.dtype)


def widest_span(out_size: tuple[int, int], width: int, rows_per_image: int) -> int:
    """Vectors of outputs in the widest tile of the products over a grid of ``width`` pixels a row and
    ``rows_per_image`` rows an image, with (H_out, W_out) outputs: what ``pack_filters`` packs for."""
    return _kernels().widest_span(*out_size, width, rows_per_image)


def tiles_apply(outputs: int, pixels: int, dtype: np.dtype) -> bool:
    """Whether the tiles compute products with ``outputs`` channels out over ``pixels`` grid pixels."""
    return tiles_enabled() and _kernels().tiles_apply(outputs, pixels, np.dtype(dtype).itemsize)


def tiles_cover(channels: int, filters: int, kernel: tuple[int, int], dtype: np.dtype) -> bool:
    """Whether tiles compute a convolution's products (whole vectors of ``filters``) and its weight
    gradient (``weight_tiles_apply``), given outputs enough for a tile."""
    kernels, itemsize = _kernels(), np.dtype(dtype).itemsize
    return tiles_enabled() and kernels.tiles_apply(filters, kernels.PIXEL_ROWS, itemsize) \
        and kernels.weight_tiles_apply(channels, filters, 1, itemsize, *kernel)


def weight_tiles_apply(channels: int, filters: int, count: int, dtype: np.dtype, kernel: tuple[int, int]) -> bool:
    """Whether ``backward_blocks`` computes the weight gradient with tiles (from the output gradient's
    rows) for ``channels`` in, ``filters`` out, ``count`` grid pixels and a (kH, kW) ``kernel``."""
    return tiles_enabled() and _kernels().weight_tiles_apply(channels, filters, count, np.dtype(dtype).itemsize,
                                                             *kernel)


def pointwise(shifts: np.ndarray, width: int, rows_per_image: int, out_size: tuple[int, int],
              stride: tuple[int, int] = (1, 1), pool: tuple[int, int] = (1, 1)) -> bool:
    """Whether ``forward_blocks`` and ``backward_blocks`` compute a convolution pointwise: a 1x1 kernel (one
    tap's ``shifts``), stride 1 and no padding on a grid ``width`` pixels a row and ``rows_per_image`` rows
    an image, with (H_out, W_out) ``out_size`` outputs, not pooled. Its blocks then read x in place (no grid:
    ``pixel_rows``) and write the products straight into the output (no products' scratch), in the same
    order, to the same bits; the backward pass also needs its weight-gradient tiles (``weight_tiles_apply``)."""
    return bool(_kernels().pointwise(shifts, width, rows_per_image, *out_size, *stride, *pool))


def pixel_rows(x: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) itself where a pointwise convolution's blocks can read it in place (each image's
    pixels, row after row, one step apart: the view of an NCHW array or a channels-last one), else a
    channels-last copy."""
    return x if _kernels().pixel_step(x) else np.ascontiguousarray(x)


def forward_blocks(threads: int, bounds: np.ndarray, x: np.ndarray, grids: np.ndarray, grid_shape: tuple[int, int, int],
                   shifts: np.ndarray, matrices: np.ndarray | None, packed: np.ndarray, bias: np.ndarray | None,
                   products: np.ndarray, out_size: tuple[int, int], out: np.ndarray, rectify: bool,
                   positive: np.ndarray | None, pool: tuple[int, int] = (1, 1),
                   phases: tuple[int, int, int, int, int] = STRIDE_1) -> np.ndarray:
    """The forward pass of the batch x (N, H, W, C) -> out (N, H_out, W_out, K) in blocks of images
    ``bounds[j]:bounds[j + 1]``, on ``threads`` threads at once, each one compiled call that takes the next
    block not yet begun until none is left (numba's own threads where ``native_threads``, else Python's,
    ``forward_thread``); returns which thread took each block. Rectified if ``rectify``, the mask of
    positive values into ``positive`` unless None; with a ``pool`` window (kh, kw) other than (1, 1),
    out is instead the max of each tile of that size, (N, H_out // kh, W_out // kw, K) (``positive``
    must then be None: for inference).

    ``grids`` (threads, pixels, C) and ``products`` (threads, pixels, K) are scratch, a grid and products
    per thread sized for the largest block; ``grid_shape`` the layout's (lead, width, rows_per_image),
    ``shifts`` the taps' shifts (int64), ``out_size`` the convolution's (H_out, W_out) (before pooling);
    ``packed``: ``pack_filters``' layout of the filters for the tiles, or empty for the BLAS's products;
    ``matrices``: the taps' (C, K) matrices for the BLAS, None where the tiles compute every block.
    ``phases`` (stride_h, stride_w, pad_top, pad_left, phase_pixels): for a strided convolution, each
    block's grid holds its input's stride phases, ``phase_pixels`` apart (``_phases``; lead 0), and
    ``shifts`` reach into them.
    """
    dtype = out.dtype
    taken = np.full(bounds.size - 1, -1, np.int64)
    before = (bounds, x)
    after = (*grid_shape, *phases, shifts, _or_empty(matrices, dtype, 3), packed, _or_empty(bias, dtype, 1))
    last = (*out_size, out, rectify, _or_empty(positive, np.bool_, 4), *pool, *_scalars(dtype))
    if threads > 1 and native_threads():
        with single_threaded_blas():
            _kernels().forward_threads(_routines()[dtype], threads, *before, grids, *after, products, *last, taken)
        return taken
    counter = np.zeros(1, np.int64)
    run_parallel(lambda s: forward_thread(s.start, counter, (*before, grids[s.start], *after, products[s.start], *last),
                                          taken), [slice(i, i + 1) for i in range(threads)])
    return taken


def forward_thread(thread: int, counter: np.ndarray, arguments: tuple, taken: np.ndarray) -> None:
    """One Python thread's share of ``forward_blocks``: blocks from ``counter`` until none is left, with
    this thread's scratch (in ``arguments``)."""
    kernels = _kernels()
    kernels.forward_blocks(_routines()[arguments[1].dtype], counter.ctypes.data, *arguments, thread, taken)


class InputGradient(NamedTuple):
    """The input gradient's convolutions, as ``backward_blocks`` takes them: the output gradient's grid
    (lead, width, rows_per_image), and one stride-1 convolution over it per phase of the input (one
    for stride 1): ``phases`` (P, 8) int64 rows (r_h, r_w, out_h, out_w, first tap, taps, first packed
    value, packed values), writing ``dx[:, r_h::stride_h, r_w::stride_w]`` ((out_h, out_w) of it;
    no taps: zeros); the taps' ``shifts`` on the grid and their filters, ``matrices`` (taps, K, C) for
    the BLAS (None where the tiles compute every block) and ``packed`` for the tiles, phase after phase."""

    grid_shape: tuple[int, int, int]
    phases: np.ndarray
    shifts: np.ndarray
    matrices: np.ndarray | None
    packed: np.ndarray


def column_scratch(gradient: InputGradient | None, channels: int, dtype: np.dtype) -> tuple[int, int] | None:
    """The shape of the scratch ``backward_blocks`` needs for an input gradient of ``channels`` channels
    that the BLAS computes (``gradient.matrices`` given) with fewer channels than a vector: its products
    then go through columns of every tap at once (``few_output_products``); None where not."""
    kernels = _kernels()
    if gradient is None or gradient.matrices is None or channels * np.dtype(dtype).itemsize >= kernels.VECTOR_BYTES:
        return None
    return kernels.COLUMN_CHUNK + int(gradient.shifts.max()), gradient.shifts.size * channels


def backward_blocks(threads: int, bounds: np.ndarray, x: np.ndarray, dout: np.ndarray, positive: np.ndarray | None,
                    dx: np.ndarray | None, grids: tuple[np.ndarray, np.ndarray, np.ndarray],
                    x_shape: tuple[int, int, int], gradient: InputGradient | None, same: bool, shifts: np.ndarray,
                    kernel_w: int, products: np.ndarray, rows: np.ndarray, tiled: bool, tap_sums: np.ndarray,
                    db: np.ndarray, phases: tuple[int, int, int, int, int] = STRIDE_1,
                    columns: np.ndarray | None = None) -> np.ndarray:
    """The backward pass in blocks, on ``threads`` threads at once as ``forward_blocks`` (``backward_thread``
    for Python's); returns which thread took each block. x, dout (C-contiguous), positive and dx (N, H, W,
    C) of the whole batch; ``dx`` written unless None, block j's weight-gradient sums into ``tap_sums[j]``
    (taps, C, K) and its bias gradient into ``db[j]`` ((blocks, K) zeros, or (blocks, 0) without bias);
    ``dout`` taken through the ReLU mask ``positive`` unless None.

    Scratch, one per thread (a first axis of ``threads``): ``grids``, for the input's grid (``x_shape``:
    its (lead, width, rows_per_image); ``phases`` as ``forward_blocks``'), the output gradient's padded
    grid for ``dx`` (``gradient``, None without ``dx``) and the output gradient on the input's grid;
    ``products``, for a phase of the input gradient; ``columns``, for its columns where it has fewer
    channels than a vector (``column_scratch``; None elsewhere); where ``tiled`` (``weight_tiles_apply``),
    ``rows``, for the largest block's output gradient as (B * H_out * W_out, K) rows (the third grid is
    then unused); elsewhere ``rows`` is empty, and the third grid unused where ``same``. ``same``: the
    padded gradient lies on the input's grid; ``shifts``: the weight gradient's taps (in row-major order,
    ``kernel_w`` a kernel row; 1 where the taps are not evenly spaced along the grid's rows).
    """
    dtype = x.dtype
    if gradient is None:
        gradient = InputGradient((0, 0, 0), np.empty((0, 8), np.int64), np.empty(0, np.int64), None,
                                 np.empty(0, dtype))
    columns = np.empty((threads, 0, 0), dtype) if columns is None else columns
    taken = np.full(bounds.size - 1, -1, np.int64)
    before = (bounds, x, dout, _or_empty(positive, np.bool_, 4), _or_empty(dx, dtype, 4))
    after = (*x_shape, *phases, *gradient.grid_shape, same, shifts, kernel_w, gradient.phases, gradient.shifts,
             _or_empty(gradient.matrices, dtype, 3), gradient.packed)
    last = (tiled, tap_sums, db, *_scalars(dtype))
    if threads > 1 and native_threads():
        with single_threaded_blas():
            _kernels().backward_threads(_routines()[dtype], threads, *before, *grids, *after, columns, products, rows,
                                        *last, taken)
        return taken
    counter = np.zeros(1, np.int64)
    run_parallel(lambda s: backward_thread(
        s.start, counter, (*before, *(grid[s.start] for grid in grids), *after, columns[s.start], products[s.start],
                           rows[s.start], *last), taken), [slice(i, i + 1) for i in range(threads)])
    return taken


def backward_thread(thread: int, counter: np.ndarray, arguments: tuple, taken: np.ndarray) -> None:
    """One Python thread's share of ``backward_blocks`` (as ``forward_thread``)."""
    kernels = _kernels()
    kernels.backward_blocks(_routines()[arguments[1].dtype], counter.ctypes.data, *arguments, thread, taken)


def native_threads() -> bool:
    """Whether ``forward_blocks`` and ``backward_blocks`` run on numba's own threads: where numba has a
    threading layer that several Python threads may call at once (OpenMP or TBB; not ``workqueue``),
    and not in a process forked from one that had (GNU OpenMP's threads do not survive ``fork``).

    Python threads hand work to each other through the GIL: on a busy virtual machine a thread that
    waits for it sleeps, and wakes 0.3 ms or more later, at the start and the end of every layer's
    parallel work. numba's threads take their share without the GIL (about 7 microseconds a round trip
    here)."""
    if _state["native"] is None:
        _state["native"] = _threading_layer_is_safe()
    return _state["native"]


def _threading_layer_is_safe() -> bool:
    if os.environ.get("NUMBA_THREADING_LAYER", "default").strip().lower() not in ("default", "safe", "threadsafe",
                                                                                 "omp", "tbb", ""):
        return False
    for layer in ("omppool", "tbbpool"):
        try:
            importlib.import_module(f"numba.np.ufunc.{layer}")
        except ImportError:
            continue
        return True
    return False


def _forget_native_threads() -> None:
    """In a forked child: Python threads from now on (``native_threads``)."""
    _state["native"] = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_native_threads)


def _native_ranges(ranges: list[slice] | None) -> np.ndarray | None:
    """The bounds of several ``ranges`` (range i is ``bounds[i]:bounds[i + 1]``) for a kernel's ``*_threads``
    version to run them all at once on numba's threads (``native_threads``), or None: no ranges or one, or
    Python's threads."""
    if ranges is None or len(ranges) <= 1 or not native_threads():
        return None
    return np.array([r.start for r in ranges] + [ranges[-1].stop], np.int64)


def weight_gradient(sums: np.ndarray, dw: np.ndarray, ranges: list[slice]) -> None:
    """``_shifted.weight_gradient``, compiled: dw (K, C, kH, kW) from the blocks' sums (blocks, kH*kW, C, K),
    each range of input channels on a thread of its own (numba's, or Python's)."""
    kernels, bounds = _kernels(), _native_ranges(ranges)
    if bounds is not None:
        kernels.weight_gradient_threads(sums, dw.shape[3], bounds, dw)
    else:
        run_parallel(lambda channels: kernels.weight_gradient(sums, dw.shape[3], channels.start, channels.stop, dw),
                     ranges)


def max_pool_tiled_forward(x: np.ndarray, kernel: tuple[int, int], out: np.ndarray,
                           ranges: list[slice] | None = None) -> None:
    """Max pooling where the windows tile the image (stride = kernel, no padding): x (N, H, W, C) ->
    out (N, H_out, W_out, C), both channels-last views, in one compiled pass; with ``ranges`` of images,
    each on a thread of its own (numba's, or Python's)."""
    kernels, bounds = _kernels(), _native_ranges(ranges)
    if bounds is not None:
        kernels.max_pool_tiled_forward_threads(x, *kernel, out, bounds)
    else:
        run_parallel(lambda s: kernels.max_pool_tiled_forward(x[s], *kernel, out[s]), ranges or [slice(None)])


def max_pool_tiled_backward(dout: np.ndarray, x: np.ndarray, out: np.ndarray, kernel: tuple[int, int],
                            dx: np.ndarray, ranges: list[slice] | None = None) -> None:
    """Its gradient: dout, out (N, H_out, W_out, C), x (N, H, W, C) -> dx (N, H, W, C), in one pass,
    by the rule of ``pool.max_pool2d_backward`` (first maximum; a NaN, the last NaN); ``ranges`` as
    ``max_pool_tiled_forward``'s."""
    kernels, bounds = _kernels(), _native_ranges(ranges)
    if bounds is not None:
        kernels.max_pool_tiled_backward_threads(dout, x, out, *kernel, dx, bounds)
    else:
        run_parallel(lambda s: kernels.max_pool_tiled_backward(dout[s], x[s], out[s], *kernel, dx[s]),
                     ranges or [slice(None)])


def contiguous_copy(values: np.ndarray) -> np.ndarray:
    """``_parallel.contiguous_copy`` on the compiled engine: ``values`` (N, ..., C) C-contiguous, itself or
    a copy. Where each channel of ``values`` is a contiguous plane (an NCHW caller's gradient seen
    channels-last, or some of its channels), the copy is ``channels_last``'s transposition in tiles, a
    range of images on each thread (a 16 MB gradient in 4-6 ms, NumPy's strided copy 10-19); any other
    layout is NumPy's."""
    if values.flags.c_contiguous or values.ndim != 4:
        return _parallel.contiguous_copy(values)
    N, H, W, C = values.shape
    image, row, pixel, channel = values.strides
    if pixel != values.itemsize or row != W * pixel:
        return _parallel.contiguous_copy(values)
    planes = np.lib.stride_tricks.as_strided(values, (N, C, H * W), (image, channel, pixel), writeable=False)
    copy = np.empty(values.shape, values.dtype)
    rows = copy.reshape(N, H * W, C)
    ranges = image_slices(N, values.size)
    kernels, bounds = _kernels(), _native_ranges(ranges)
    if bounds is not None:
        kernels.channels_last_threads(planes, rows, bounds)
    else:
        run_parallel(lambda s: kernels.channels_last(planes[s], rows[s]), ranges)
    return copy


def _or_empty(a: np.ndarray | None, dtype: Any, ndim: int) -> np.ndarray:
    """``a``, or an empty array of its type: the compiled code takes arrays, not None."""
    return np.empty((0,) * ndim, dtype) if a is None else a


_NO_TRANS, _TRANS = 111, 112   # CBLAS's flags


def matmuls_apply(dtype: np.dtype) -> bool:
    """Whether ``matmuls`` runs here: the compiled engine, on numba's own threads (``native_threads``)."""
    return available(dtype) and native_threads()


def matmuls(products: list[tuple[np.ndarray, np.ndarray, np.ndarray]], parallel: bool = True) -> None:
    """``np.matmul(a, b, out=out)`` for each ``(a, b, out)``: independent 2-d products, with ``parallel`` at once,
    one a thread, each a BLAS call on one thread: on numba's threads where ``matmuls_apply`` and the BLAS can
    take every product as it lies (one dtype; each operand with rows of contiguous values or the transposed
    view of such an array, ``out`` with rows of contiguous values), else on Python's (``run_parallel``); one
    after another without ``parallel``."""
    if parallel and len(products) > 1 and matmuls_apply(products[0][2].dtype):
        dtype = products[0][2].dtype
        calls = [_blas_call(a, b, out, dtype) for a, b, out in products]
        if None not in calls:
            with single_threaded_blas():
                _kernels().products_threads(_routines()[dtype], np.array(calls, np.int64), *_scalars(dtype))
            return
    if parallel:
        run_parallel(lambda one: np.matmul(*products[one.start][:2], out=products[one.start][2]),
                     [slice(i, i + 1) for i in range(len(products))])
    else:
        for a, b, out in products:
            np.matmul(a, b, out=out)


def _blas_call(a: np.ndarray, b: np.ndarray, out: np.ndarray, dtype: np.dtype) -> tuple[int, ...] | None:
    """``out = a @ b`` as ``products_threads`` takes it: (trans_a, trans_b, rows, cols, inner, a, lda, b, ldb,
    out, ldc), or None where the BLAS cannot take it as it lies (another dtype, another layout, shapes that
    do not match)."""
    operands = [_operand(m) for m in (a, b, out)]
    if any(m.dtype != dtype for m in (a, b, out)) or None in operands or operands[2][0] != _NO_TRANS \
            or a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1]):
        return None
    (trans_a, a_address, lda), (trans_b, b_address, ldb), (_, out_address, ldc) = operands
    return trans_a, trans_b, *out.shape, a.shape[1], a_address, lda, b_address, ldb, out_address, ldc


def _operand(matrix: np.ndarray) -> tuple[int, int, int] | None:
    """A 2-d matrix as the BLAS takes it: (transpose flag, address, leading dimension), its rows of contiguous
    values (``_NO_TRANS``) or the transposed view of such an array (``_TRANS``); None for any other layout."""
    if matrix.ndim != 2:
        return None
    size = matrix.itemsize
    rows, cols = matrix.shape
    if matrix.strides[1] == size and matrix.strides[0] >= max(cols, 1) * size and matrix.strides[0] % size == 0:
        return _NO_TRANS, matrix.ctypes.data, matrix.strides[0] // size
    if matrix.strides[0] == size and matrix.strides[1] >= max(rows, 1) * size and matrix.strides[1] % size == 0:
        return _TRANS, matrix.ctypes.data, matrix.strides[1] // size
    return None


def _scalars(dtype: np.dtype) -> tuple[Any, Any]:
    """1 and 0 in ``dtype`` (the BLAS's alpha and beta, and the zeros the kernels write)."""
    return dtype.type(1), dtype.type(0)


def _routines() -> dict[np.dtype, Any]:
    """dtype -> the BLAS ``gemm`` as a first-class function numba can call, for 64-bit-integer BLAS only."""
    if _state["routines"] is None:
        _state["routines"] = _wrap_routines()
    return _state["routines"]


def _wrap_routines() -> dict[np.dtype, Any]:
    found = _blas._find()
    if not found or any(r.argtypes[3] is not ctypes.c_int64 for r in found.values()):
        return {}
    try:
        import numba.experimental.function_type  # noqa: F401  (lets such an object be an argument)
        from numba import types
        from numba.core.typing.typeof import typeof_impl
    except ImportError:
        return {}

    class Routine(types.WrapperAddressProtocol):
        """A C function numba calls through its address, with the signature given."""

        def __init__(self, address: int, signature: Any) -> None:
            self._address, self._signature = address, signature
            self.numba_type = types.FunctionType(signature)

        def __wrapper_address__(self) -> int:
            return self._address

        def signature(self) -> Any:
            return self._signature

    @typeof_impl.register(Routine)
    def _typeof_routine(routine: Routine, context: Any) -> Any:
        """The routine's type, made once (numba would build it anew on every call)."""
        return routine.numba_type

    routines = {}
    i32, i64 = types.int32, types.int64
    for dtype, routine in found.items():
        scalar = types.float32 if dtype == np.float32 else types.float64
        # cblas_?gemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); addresses as int64
        signature = types.void(i32, i32, i32, i64, i64, i64, scalar, i64, i64, i64, i64, scalar, i64, i64)
        routines[dtype] = Routine(ctypes.cast(routine, ctypes.c_void_p).value, signature)
    return routines


def _kernels() -> Any:
    """The compiled kernels (a namespace), built on first use; None without numba (or a numba that
    cannot set up its on-disk cache, which is said in a warning)."""
    if _state["kernels"] is None:
        try:
            kernels = importlib.import_module("stridenet.functional._compiled_kernels")   # imports numba
        except ImportError:
            _state["kernels"] = False
        except RuntimeError as error:   # e.g. numba finds no writable cache directory
            warnings.warn(f"stridenet: numba is installed but its kernels could not be set up ({error}); "
                          "convolutions run on NumPy alone", RuntimeWarning, stacklevel=2)
            _state["kernels"] = False
        else:
            # The BLAS routine is handed down to the compiled kernels as a first-class function, which
            # numba calls experimental and says so once per compilation: the only warning we silence.
            from numba.core.errors import NumbaExperimentalFeatureWarning
            warnings.filterwarnings("ignore", "First-class function type feature is experimental",
                                    NumbaExperimentalFeatureWarning)
            _state["kernels"] = kernels
    return _state["kernels"] or None
