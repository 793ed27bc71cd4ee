"""``_compiled.matmuls``: independent matrix products at once on numba's threads, one BLAS call each (what
``linear_forward`` and ``linear_backward`` run on, split by output features and into the weight and input
gradients). Operands with contiguous rows or their transposed views, outputs that are column ranges of a
larger array; what the BLAS cannot take as it lies goes to NumPy on Python's threads."""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._compiled as compiled
import stridenet.functional._parallel as parallel
from stridenet.functional import linear_backward, linear_forward

pytestmark = pytest.mark.skipif(not compiled.matmuls_apply(np.float32),
                                reason="needs the compiled engine on numba's own threads ('stridenet[fast]')")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_product_matches_numpy_whatever_its_operands_layout(dtype: type) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 50)).astype(dtype)
    b = rng.standard_normal((50, 23)).astype(dtype)
    b_rows = np.ascontiguousarray(b.T)           # b given as the transposed view of its (23, 50) rows
    a_rows = np.ascontiguousarray(a.T)           # a given as the transposed view of its (50, 37) rows
    wide = np.full((37, 30), -7.0, dtype)        # outputs into column ranges of a wider array
    square = np.empty((37, 23), dtype)
    compiled.matmuls([(a, b, square), (a_rows.T, b_rows.T, wide[:, 2:25]), (a[:, :20], b[:20, :5], wide[:, 25:30])])
    tight = {np.float32: 1e-5, np.float64: 1e-13}[dtype]
    np.testing.assert_allclose(square, a @ b, rtol=tight, atol=tight * 10)
    np.testing.assert_allclose(wide[:, 2:25], a @ b, rtol=tight, atol=tight * 10)
    np.testing.assert_allclose(wide[:, 25:30], a[:, :20] @ b[:20, :5], rtol=tight, atol=tight * 10)
    np.testing.assert_array_equal(wide[:, :2], -7.0)   # untouched outside the ranges written


def test_products_the_blas_cannot_take_as_they_lie_go_to_numpy(monkeypatch) -> None:
    """An operand with neither rows nor columns contiguous, or of another dtype: every product on Python's
    threads instead (NumPy copies what it must), the same values; numba's threads are not called."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((8, 12)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    calls = []
    monkeypatch.setattr(compiled._kernels(), "products_threads", lambda *args: calls.append(args), raising=True)
    for odd in (a[:, ::2], a[:, :6].astype(np.float64)):
        out, other = np.empty((8, 5), np.float32), np.empty((8, 5), np.float32)
        compiled.matmuls([(odd, b, out), (a[:, :6], b, other)])
        np.testing.assert_allclose(out, odd @ b, rtol=1e-5)
        np.testing.assert_allclose(other, a[:, :6] @ b, rtol=1e-5)
    assert calls == []
    compiled.matmuls([(a[:, :6], b, np.empty((8, 5), np.float32))] * 2)   # as they lie: numba's threads
    assert len(calls) == 1


def test_the_linear_layer_on_numbas_threads_matches_its_python_threads(monkeypatch) -> None:
    """The same products, split the same way: the weight gradient one product, so the same bits; the output
    and the input gradient to rounding (the BLAS may take another kernel for another split)."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((64, 300)).astype(np.float32), rng.standard_normal((40, 300)).astype(np.float32)
    b, dout = rng.standard_normal(40).astype(np.float32), rng.standard_normal((64, 40)).astype(np.float32)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    results = {}
    with parallel.num_threads(2):
        for route in ("numba", "python"):
            monkeypatch.setattr(compiled, "matmuls_apply", lambda dtype, route=route: route == "numba")
            out, cache = linear_forward(x, w, b)
            results[route] = (out, *linear_backward(dout, cache))
    for ours, theirs in zip(results["numba"], results["python"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(results["numba"][2], results["python"][2])
    np.testing.assert_array_equal(results["numba"][3], results["python"][3])
