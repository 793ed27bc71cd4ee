"""Register-tiled matrix products, written in LLVM IR as numba intrinsics, for the compiled kernels.

The stride-1 convolution's products are thin: 32 or 64 output channels, 32 to 200 input channels per
tap. A general BLAS handles such shapes at a fraction of its speed (measured here: 45-80 GFLOP/s per
core for 32->32 and 64->64 3x3 layers, against 225 at its best on large squares), because every tap's
product reads and writes the whole output block again. ``tile_product(vectors, rows)`` builds the
kernel such shapes want: a tile of ``rows`` x ``vectors`` SIMD vectors of outputs stays in registers
while *all* the taps and input channels are added into it, and is written once.

Each step of the inner loop loads ``vectors`` vectors of one matrix row (B) and broadcasts ``rows``
scalars of the other (A), one from each of the tile's rows, into ``rows * vectors`` fused
multiply-adds. Numba cannot express that (its loop vectorizer keeps the tile in memory), so the loop
is emitted in LLVM IR with the tile as loop-carried values; LLVM keeps them in vector registers.
Vectors are the CPU's widest (``VECTOR_BYTES``): 64 bytes (16 float32, 8 float64) with AVX-512, 32
with AVX2. Sums are in the array's own precision, taps outer and channels inner, each step one
fused multiply-add (no reassociation beyond that).

The kernel, for ``r < rows`` and ``e < vectors * lanes``, with ``A``, ``B``, ``out`` and ``init``
arrays of the witness' dtype given by their addresses and every step and offset counted in elements:

    out[r * out_row + e] = start
        + sum over t < taps, j < steps of
          A[shifts[t] * shift_scale + r * a_row + j * a_step] * B[t * b_tap + j * b_step + e]

``shifts`` is the address of ``taps`` int64 values; ``start`` is ``init[e]``, 0 where ``init`` is 0,
or, where ``init`` is -1, the value ``out`` holds already (the tile adds to it). A tile made with
``table`` reads its rows' offsets from two tables instead of stepping evenly: ``a_row`` and ``out_row``
are then the addresses of ``rows`` int64 offsets each, row ``r`` read at ``a_row[r]`` (in place of
``r * a_row``) and written at ``out_row[r]``, so that any rows of a matrix can share a tile.
"""

from __future__ import annotations

import functools
from typing import Any

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def host_vector_bytes() -> int:
    """Bytes of the widest SIMD vector this CPU computes with, as LLVM sees it: 64 with AVX-512, 32 with
    AVX2 and FMA (the tiles are sized for each: ``_compiled_kernels``), else 0 (no tiles)."""
    features = binding.get_host_cpu_features()
    if features.get("avx512f", False):
        return 64
    return 32 if features.get("avx2", False) and features.get("fma", False) else 0


# Bytes per SIMD vector the tiles are built of: the CPU's own width (AVX-512's 64 where it has no
# vectors this wide to tile with at all: the tiles then stay off, ``_compiled.tiles_enabled``).
VECTOR_BYTES = host_vector_bytes() or 64

_I64 = ir.IntType(64)


def lanes(itemsize: int) -> int:
    """Values per vector for an element of ``itemsize`` bytes."""
    return VECTOR_BYTES // itemsize


@functools.cache
def tile_product(vectors: int, rows: int, groups: int = 1, table: bool = False) -> Any:
    """The intrinsic for a tile of ``groups`` x ``rows`` rows of ``vectors`` vectors each (see the
    module's docstring for its arguments): ``(zero, a, a_row, a_step, shifts, shift_scale, taps, b,
    b_step, b_tap, steps, init, out, out_row, a_group, out_group)``, ``zero`` a float32 or float64
    scalar that picks the dtype, the rest int64. Row ``r`` of group ``g`` is row ``g * rows + r`` of
    the docstring's formula, read at ``g * a_group + r * a_row`` and written at ``g * out_group + r *
    out_row`` (``a_group`` and ``out_group`` are unused with one group); with ``table`` (one group), at
    the offsets the tables at ``a_row`` and ``out_row`` hold. ``taps`` and ``steps`` must be at least 1."""

    @intrinsic
    def product(typingctx: Any, zero: Any, a: Any, a_row: Any, a_step: Any, shifts: Any, shift_scale: Any,
                taps: Any, b: Any, b_step: Any, b_tap: Any, steps: Any, init: Any, out: Any, out_row: Any,
                a_group: Any, out_group: Any) -> Any:
        if zero not in (types.float32, types.float64):
            return None
        signature = types.void(zero, *([types.int64] * 15))

        def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
            _emit(builder, vectors, rows, groups, table, zero == types.float32, args[1:])
            return context.get_dummy_value()

        return signature, codegen

    return product


def _emit(builder: ir.IRBuilder, vectors: int, group_rows: int, groups: int, table: bool, single: bool,
          args: Any) -> None:
    """Emit the tile's loops at the builder's position."""
    a, a_row, a_step, shifts, shift_scale, taps, b, b_step, b_tap, steps, init, out, out_row, a_group, out_group = args
    rows = groups * group_rows
    scalar = ir.FloatType() if single else ir.DoubleType()
    width = lanes(4 if single else 8)
    vector = ir.VectorType(scalar, width)
    pointer, vector_pointer = scalar.as_pointer(), vector.as_pointer()
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                         f"llvm.fma.v{width}f{32 if single else 64}")
    zero_vector = ir.Constant(vector, None)
    splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), width), None)
    function = builder.function

    def constant(value: int) -> ir.Constant:
        return ir.Constant(_I64, value)

    def address(base: ir.Value) -> ir.Value:
        return builder.inttoptr(base, pointer)

    def load_vector(base: ir.Value, offset: ir.Value) -> ir.Value:
        value = builder.load(builder.bitcast(builder.gep(base, [offset]), vector_pointer))
        value.align = 4 if single else 8
        return value

    def store_vector(value: ir.Value, base: ir.Value, offset: ir.Value) -> None:
        stored = builder.store(value, builder.bitcast(builder.gep(base, [offset]), vector_pointer))
        stored.align = 4 if single else 8

    a_base, b_base, out_base, init_base = address(a), address(b), address(out), address(init)
    shift_base = builder.inttoptr(shifts, _I64.as_pointer())

    if table:   # the rows' offsets, read once
        a_table, out_table = (builder.inttoptr(address, _I64.as_pointer()) for address in (a_row, out_row))
        a_rows = [builder.load(builder.gep(a_table, [constant(r)])) for r in range(rows)]
        out_rows = [builder.load(builder.gep(out_table, [constant(r)])) for r in range(rows)]

    # The tile's start: what ``out`` holds (``init`` -1), ``init`` broadcast down the rows, or zeros.
    def offset(r: int, row_step: ir.Value, group_step: ir.Value) -> ir.Value:
        """Where row ``r`` of the tile is, with these steps between rows and between groups."""
        g, i = divmod(r, group_rows)
        within = builder.mul(constant(i), row_step)
        return within if g == 0 else builder.add(builder.mul(constant(g), group_step), within)

    def a_offset_of(r: int) -> ir.Value:
        return a_rows[r] if table else offset(r, a_row, a_group)

    def out_offset(r: int, v: int) -> ir.Value:
        return builder.add(out_rows[r] if table else offset(r, out_row, out_group), constant(v * width))

    held = builder.icmp_signed("==", init, constant(-1))
    has_init = builder.icmp_signed("!=", init, constant(0))
    with builder.if_else(held) as (then, otherwise):
        with then:
            loaded = [load_vector(out_base, out_offset(r, v)) for r in range(rows) for v in range(vectors)]
            from_out = builder.block
        with otherwise:
            with builder.if_else(has_init) as (given, absent):
                with given:
                    initial = [load_vector(init_base, constant(v * width)) for v in range(vectors)]
                    from_init = builder.block
                with absent:
                    from_zero = builder.block
            broadcast = []
            for v in range(vectors):
                phi = builder.phi(vector)
                phi.add_incoming(initial[v], from_init)
                phi.add_incoming(zero_vector, from_zero)
                broadcast.append(phi)
            from_broadcast = builder.block
    start = []
    for i in range(rows * vectors):
        phi = builder.phi(vector)
        phi.add_incoming(loaded[i], from_out)
        phi.add_incoming(broadcast[i % vectors], from_broadcast)
        start.append(phi)

    def enter(loop: ir.Block, values: list[ir.Value]) -> tuple[ir.PhiInstr, list[ir.PhiInstr]]:
        """Branch into ``loop`` and open it: its counter from 0, and the tile, starting at ``values``."""
        entered_from = builder.block
        builder.branch(loop)
        builder.position_at_end(loop)
        counter = builder.phi(_I64)
        counter.add_incoming(constant(0), entered_from)
        phis = [builder.phi(vector) for _ in values]
        for phi, value in zip(phis, values, strict=True):
            phi.add_incoming(value, entered_from)
        return counter, phis

    def repeat(loop: ir.Block, counter: ir.PhiInstr, phis: list[ir.PhiInstr], values: list[ir.Value],
               bound: ir.Value, after: ir.Block) -> None:
        """Close ``loop`` where the builder is: the next counter and tile, then round again below ``bound``."""
        following = builder.add(counter, constant(1))
        counter.add_incoming(following, builder.block)
        for phi, value in zip(phis, values, strict=True):
            phi.add_incoming(value, builder.block)
        builder.cbranch(builder.icmp_signed("<", following, bound), loop, after)

    tap_loop, step_loop = function.append_basic_block("tap"), function.append_basic_block("step")
    next_tap, done = function.append_basic_block("next_tap"), function.append_basic_block("done")

    t, tile_at_tap = enter(tap_loop, start)
    shift = builder.load(builder.gep(shift_base, [t]))
    a_tap = builder.gep(a_base, [builder.mul(shift, shift_scale)])
    b_tap_base = builder.gep(b_base, [builder.mul(t, b_tap)])
    row_starts = [builder.gep(a_tap, [a_offset_of(r)]) for r in range(rows)]

    j, tile = enter(step_loop, tile_at_tap)
    b_offset = builder.mul(j, b_step)
    b_values = [load_vector(b_tap_base, builder.add(b_offset, constant(v * width))) for v in range(vectors)]
    a_offset = builder.mul(j, a_step)
    updated = []
    for r in range(rows):
        a_value = builder.load(builder.gep(row_starts[r], [a_offset]))
        splat = builder.shuffle_vector(
            builder.insert_element(ir.Constant(vector, ir.Undefined), a_value, ir.Constant(ir.IntType(32), 0)),
            ir.Constant(vector, ir.Undefined), splat_mask)
        for v in range(vectors):
            updated.append(builder.call(fma, [splat, b_values[v], tile[r * vectors + v]]))
    repeat(step_loop, j, tile, updated, steps, next_tap)

    builder.position_at_end(next_tap)
    repeat(tap_loop, t, tile_at_tap, updated, taps, done)

    builder.position_at_end(done)
    for r in range(rows):
        for v in range(vectors):
            store_vector(updated[r * vectors + v], out_base, out_offset(r, v))


@intrinsic
def fetch_add(typingctx: Any, address: Any, increment: Any) -> Any:
    """Add ``increment`` to the int64 at ``address`` atomically and return the value it had: threads that
    share such a counter each get a different value (the next block of images to work on)."""
    if address != types.int64 or increment != types.int64:
        return None

    def codegen(context: Any, builder: ir.IRBuilder, sig: Any, args: Any) -> Any:
        pointer = builder.inttoptr(args[0], _I64.as_pointer())
        return builder.atomic_rmw("add", pointer, args[1], "seq_cst")

    return types.int64(types.int64, types.int64), codegen
