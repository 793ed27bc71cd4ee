"""NumPy's own BLAS matrix product, called with the two arguments ``np.matmul`` does not pass on.

``np.matmul(a, b, out=c)`` calls the BLAS routine ``gemm``, which computes ``c = alpha a @ b + beta c``
on matrices given by a pointer and a row stride. NumPy always passes ``beta = 0``. The shifted-product
convolution (``_shifted``) needs ``beta = 1``, to add nine products into one output block inside
the BLAS kernel instead of in nine more passes over memory. So this module finds the ``cblas_sgemm``
and ``cblas_dgemm`` that NumPy itself was built with (threadpoolctl knows the library's file), and
calls them through ctypes, which releases the GIL during the call as NumPy does.

When no such routine is found (a NumPy built against Apple's Accelerate, say), ``available`` is False
and the convolution keeps to its pure-NumPy im2col path. ``STRIDENET_BLAS=numpy`` forces that too.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# Symbol names: the 64-bit-integer builds NumPy's wheels ship (scipy-openblas: prefix "scipy_", suffix
# "64_"), and plain CBLAS (OpenBLAS, MKL), whose integers are 32-bit unless an OpenBLAS says otherwise.
_NAMES = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_", "cblas_{}gemm", "scipy_cblas_{}gemm")

_routines: dict[np.dtype, Any] | None = None


def available(dtype: np.dtype) -> bool:
    """True when ``gemm`` can run for arrays of ``dtype`` (float32 or float64)."""
    return np.dtype(dtype) in _find()


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, accumulate: bool = False, transpose_a: bool = False) -> None:
    """``out = a @ b`` (``out += a @ b`` with ``accumulate``); ``a.T @ b`` with ``transpose_a``.

    Every argument is a 2-d array of one dtype whose rows may be strided but whose elements within
    a row are adjacent (a slice of rows of a larger array is fine). Nothing is checked beyond what
    BLAS needs: this is an inner kernel, and its callers build the views.
    """
    rows, inner = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    size = out.itemsize
    gemm_at(out.dtype, rows, b.shape[1], inner, address(a), a.strides[0] // size, address(b), b.strides[0] // size,
            address(out), out.strides[0] // size, accumulate, transpose_a)


def gemm_at(dtype: np.dtype, rows: int, cols: int, inner: int, a: int, lda: int, b: int, ldb: int, out: int,
            ldc: int, accumulate: bool = False, transpose_a: bool = False) -> None:
    """``gemm`` on raw addresses and row strides (in elements): for loops that would otherwise build a
    view and ask for its address for every product (a few microseconds each, with the GIL held)."""
    _find()[dtype](_ROW_MAJOR, _TRANS if transpose_a else _NO_TRANS, _NO_TRANS, rows, cols, inner, 1.0, a, lda,
                   b, ldb, 1.0 if accumulate else 0.0, out, ldc)


def address(a: np.ndarray) -> int:
    """The address of ``a``'s first element."""
    return a.__array_interface__["data"][0]


def _find() -> dict[np.dtype, Any]:
    """dtype -> ctypes function, for each ``gemm`` found in NumPy's BLAS."""
    global _routines
    if _routines is None:
        _routines = {} if os.environ.get("STRIDENET_BLAS", "").lower() == "numpy" else _load()
    return _routines


def _load() -> dict[np.dtype, Any]:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return {}
    controllers = ThreadpoolController().select(user_api="blas").lib_controllers
    # NumPy's own library first (the one ``_parallel`` holds to one thread), then any other CBLAS loaded
    for controller in sorted(controllers, key=lambda c: "numpy" not in c.filepath):
        try:
            library = ctypes.CDLL(controller.filepath)
        except OSError:
            continue
        for pattern in _NAMES:
            index = ctypes.c_int64 if pattern.endswith("64_") or _openblas_int64(library) else ctypes.c_int
            found = {}
            for letter, dtype, scalar in (("s", np.float32, ctypes.c_float), ("d", np.float64, ctypes.c_double)):
                routine = getattr(library, pattern.format(letter), None)
                if routine is None:
                    break
                routine.restype = None
                routine.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index, scalar,
                                    ctypes.c_void_p, index, ctypes.c_void_p, index, scalar, ctypes.c_void_p, index]
                found[np.dtype(dtype)] = routine
            if len(found) == 2:
                return found
    return {}


def _openblas_int64(library: ctypes.CDLL) -> bool:
    """True for an OpenBLAS built with 64-bit integers but unsuffixed names (its config says USE64BITINT)."""
    for name in ("openblas_get_config", "scipy_openblas_get_config64_", "openblas_get_config64_"):
        config = getattr(library, name, None)
        if config is not None:
            config.restype = ctypes.c_char_p
            return b"USE64BITINT" in (config() or b"")
    return False
