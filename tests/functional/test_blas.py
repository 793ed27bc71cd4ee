"""NumPy's own BLAS ``gemm`` called through ctypes (``functional._blas``): the same numbers as ``np.matmul``.

``gemm`` passes the two arguments ``np.matmul`` does not (``beta = 1`` to add into ``out``, and a
transposed left operand), on views whose rows are strided. Each combination is checked against the
float64 product of the same values, and the memory around a view is checked to stay untouched.
``gemm_at`` takes raw addresses: shifted row ranges of one array, as the shifted-product convolution
reads them. Then ``available``: which dtypes, and the two ways to switch the routines off.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._blas as blas
from reference.gradcheck import rel_error

pytestmark = pytest.mark.skipif(not blas.available(np.float32),
                                reason="no cblas_sgemm/cblas_dgemm found in NumPy's BLAS (threadpoolctl missing, "
                                       "a BLAS without CBLAS symbols, or STRIDENET_BLAS=numpy)")

DTYPES = [np.float32, np.float64]
# largest rel_error against the float64 product of the same values
TOLERANCE = {np.float32: 1e-6, np.float64: 1e-14}
# (rows, cols, inner) of out (rows, cols) = a (rows, inner) @ b (inner, cols)
SHAPES = [(1, 1, 1), (3, 4, 5), (17, 9, 33), (64, 5, 2), (2, 70, 40)]
# (accumulate, transpose_a)
MODES = [(False, False), (True, False), (False, True), (True, True)]


def _random(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


def _expected(a: np.ndarray, b: np.ndarray, start: np.ndarray, accumulate: bool, transpose_a: bool) -> np.ndarray:
    """The float64 reference: ``a @ b`` (``a.T @ b``), plus ``start`` when accumulating."""
    left = a.T if transpose_a else a
    product = np.matmul(left.astype(np.float64), b.astype(np.float64))
    return product + start.astype(np.float64) if accumulate else product


@pytest.mark.parametrize("mode", MODES, ids=["plain", "accumulate", "transpose_a", "accumulate-transpose_a"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gemm_matches_matmul(shape: tuple[int, int, int], dtype: type, mode: tuple[bool, bool]) -> None:
    rows, cols, inner = shape
    accumulate, transpose_a = mode
    rng = np.random.default_rng(rows * 100 + cols)
    a = _random(rng, (inner, rows) if transpose_a else (rows, inner), dtype)
    b = _random(rng, (inner, cols), dtype)
    # without accumulate, beta = 0 must ignore out's contents entirely: NaN * 0 would still be NaN
    start = _random(rng, (rows, cols), dtype) if accumulate else np.full((rows, cols), np.nan, dtype)
    out = start.copy()
    blas.gemm(a, b, out, accumulate=accumulate, transpose_a=transpose_a)
    assert out.dtype == dtype and out.shape == (rows, cols)
    assert rel_error(out, _expected(a, b, start, accumulate, transpose_a)) < TOLERANCE[dtype]


@pytest.mark.parametrize("mode", MODES, ids=["plain", "accumulate", "transpose_a", "accumulate-transpose_a"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_on_row_strided_views_leaves_the_rest_untouched(dtype: type, mode: tuple[bool, bool]) -> None:
    """Every operand a block of a larger array (every other row of ``a``); ``out`` a column slice."""
    accumulate, transpose_a = mode
    rows, cols, inner = 6, 4, 7
    rng = np.random.default_rng(11)
    a_rows, a_cols = (inner, rows) if transpose_a else (rows, inner)
    a = _random(rng, (2 * a_rows + 3, a_cols + 5), dtype)[1:1 + 2 * a_rows:2, 3:3 + a_cols]
    b = _random(rng, (inner + 4, cols + 6), dtype)[2:2 + inner, 1:1 + cols]
    big_out = _random(rng, (rows + 3, cols + 5), dtype)
    before = big_out.copy()
    out = big_out[1:1 + rows, 2:2 + cols]
    assert not (a.flags.c_contiguous or b.flags.c_contiguous or out.flags.c_contiguous)
    start = out.copy()
    blas.gemm(a, b, out, accumulate=accumulate, transpose_a=transpose_a)
    assert rel_error(out, _expected(a, b, start, accumulate, transpose_a)) < TOLERANCE[dtype]
    outside = np.ones(big_out.shape, bool)
    outside[1:1 + rows, 2:2 + cols] = False
    np.testing.assert_array_equal(big_out[outside], before[outside])


# (grid rows, channels C, filters K, the taps' row shifts, rows per product)
SHIFTED = [
    (40, 5, 3, [0, 1, 2, 8, 9, 10, 16, 17, 18], 20),   # a 3x3 kernel on a grid 8 pixels wide
    (30, 9, 4, [0, 7, 14], 15),                         # a 3x1 kernel, dilation 1, width 7
    (25, 3, 6, [0, 2, 10, 12], 13),                     # a 2x2 kernel, dilation 2, width 5
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SHIFTED, ids=["3x3", "3x1", "2x2-dilated"])
def test_gemm_at_adds_up_products_of_shifted_row_ranges(case, dtype: type) -> None:
    """``out[:count] = sum_t grid[shift_t:shift_t + count] @ m[t]`` from addresses; later rows untouched."""
    rows, C, K, shifts, count = case
    rng = np.random.default_rng(len(shifts))
    grid = _random(rng, (rows, C), dtype)
    matrices = _random(rng, (len(shifts), C, K), dtype)
    out = _random(rng, (rows, K), dtype)                     # rows past count keep these values
    before = out.copy()
    size = np.dtype(dtype).itemsize
    for t, shift in enumerate(shifts):
        blas.gemm_at(np.dtype(dtype), count, K, C, blas.address(grid) + shift * C * size, C,
                     blas.address(matrices) + t * C * K * size, K, blas.address(out), K, accumulate=t > 0)
    expected = sum(grid[s:s + count].astype(np.float64) @ matrices[t].astype(np.float64)
                   for t, s in enumerate(shifts))
    assert rel_error(out[:count], expected) < TOLERANCE[dtype]
    np.testing.assert_array_equal(out[count:], before[count:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SHIFTED, ids=["3x3", "3x1", "2x2-dilated"])
def test_gemm_at_transposed_gives_each_shifts_weight_sums(case, dtype: type) -> None:
    """``sums[t] = grid[shift_t:shift_t + count]^T @ d[:count]``, with ``d`` rows strided (ld > K)."""
    rows, C, K, shifts, count = case
    rng = np.random.default_rng(len(shifts) + 1)
    grid = _random(rng, (rows, C), dtype)
    wide = _random(rng, (count, K + 3), dtype)
    d = wide[:, 2:2 + K]                                     # K columns of rows K + 3 long
    sums = np.full((len(shifts), C, K), np.nan, dtype)
    size = np.dtype(dtype).itemsize
    for t, shift in enumerate(shifts):
        blas.gemm_at(np.dtype(dtype), C, K, count, blas.address(grid) + shift * C * size, C, blas.address(d),
                     d.strides[0] // size, blas.address(sums) + t * C * K * size, K, transpose_a=True)
    for t, shift in enumerate(shifts):
        expected = grid[shift:shift + count].T.astype(np.float64) @ d.astype(np.float64)
        assert rel_error(sums[t], expected) < TOLERANCE[dtype], f"tap {t}, shift {shift}"


def test_address_is_the_first_elements() -> None:
    a = np.zeros((5, 6), np.float32)
    assert blas.address(a) == a.ctypes.data
    assert blas.address(a[2:, 3:]) == a.ctypes.data + 2 * a.strides[0] + 3 * a.itemsize


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.dtype("float32"), "float64"])
def test_available_for_float32_and_float64(dtype) -> None:
    assert blas.available(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.complex64, np.complex128, np.bool_])
def test_not_available_for_other_dtypes(dtype) -> None:
    assert not blas.available(dtype)


def test_not_available_once_the_routines_are_gone(monkeypatch) -> None:
    monkeypatch.setattr(blas, "_routines", {})
    assert not blas.available(np.float32)
    assert not blas.available(np.float64)


@pytest.mark.parametrize("setting", ["numpy", "NumPy"])
def test_the_environment_variable_switches_it_off_when_first_read(setting: str, monkeypatch) -> None:
    monkeypatch.setenv("STRIDENET_BLAS", setting)
    monkeypatch.setattr(blas, "_routines", None)              # not yet looked up: the variable is read
    assert not blas.available(np.float32) and not blas.available(np.float64)
    monkeypatch.delenv("STRIDENET_BLAS")
    assert not blas.available(np.float32), "the setting is read once and kept"
    monkeypatch.setattr(blas, "_routines", None)
    assert blas.available(np.float32) and blas.available(np.float64)
