"""When the optional compiled engine (``functional._compiled``, numba) runs, and when it stays off.

Its numbers are checked case by case against the naive loops and the NumPy engine in
``test_shifted_conv.py``, which runs every test under both engines.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys

import numpy as np
import pytest

import stridenet.functional._blas as blas
import stridenet.functional._compiled as compiled


def test_importing_stridenet_does_not_import_numba() -> None:
    """numba costs half a second to import: it is loaded by the first convolution, not by ``import stridenet``."""
    code = "import sys, stridenet, stridenet.nn, stridenet.functional; print('numba' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_environment_switch_turns_it_off(monkeypatch) -> None:
    monkeypatch.setenv("STRIDENET_NUMBA", "0")
    assert not compiled.available(np.float32) and not compiled.available(np.float64)


def test_without_numba_it_is_off(monkeypatch) -> None:
    monkeypatch.setitem(compiled._state, "kernels", None)
    monkeypatch.setitem(sys.modules, "stridenet.functional._compiled_kernels", None)   # import raises ImportError
    monkeypatch.delenv("STRIDENET_NUMBA", raising=False)
    assert compiled._kernels() is None
    assert not compiled.available(np.float32)


def test_a_blas_with_32_bit_integers_is_not_called_from_compiled_code(monkeypatch) -> None:
    """The compiled kernels pass 64-bit integers; a BLAS that takes 32-bit ones keeps the NumPy engine."""
    narrow = ctypes.CFUNCTYPE(None)(lambda: None)
    narrow.argtypes = [ctypes.c_int] * 14   # type: ignore[attr-defined]
    monkeypatch.setattr(blas, "_routines", {np.dtype(np.float32): narrow, np.dtype(np.float64): narrow})
    monkeypatch.setitem(compiled._state, "routines", None)
    assert compiled._routines() == {}
    assert not compiled.available(np.float32)


def test_an_unknown_dtype_is_not_handled() -> None:
    assert not compiled.available(np.float16)


@pytest.mark.skipif(not blas.available(np.float32), reason="no BLAS gemm found: nothing to compile against")
def test_with_numba_and_numpys_blas_it_is_on(monkeypatch) -> None:
    pytest.importorskip("numba", reason="numba is not installed (pip install 'stridenet[fast]')")
    monkeypatch.delenv("STRIDENET_NUMBA", raising=False)
    if any(r.argtypes[3] is not ctypes.c_int64 for r in blas._find().values()):
        pytest.skip("this NumPy's BLAS takes 32-bit integers: the compiled engine stays off by design")
    assert compiled.available(np.float32) and compiled.available(np.float64)


@pytest.mark.parametrize(("features", "expected"), [({"avx512f": True, "avx2": True, "fma": True}, True),
                                                    ({"avx512f": False, "avx2": True, "fma": True}, True),
                                                    ({"avx2": True}, False), ({"fma": True}, False), ({}, False)])
def test_the_tiles_run_with_avx512_or_avx2_and_fma(features: dict, expected: bool, monkeypatch) -> None:
    binding = pytest.importorskip("llvmlite.binding", reason="numba (and its llvmlite) is not installed")
    monkeypatch.setattr(binding, "get_host_cpu_features", lambda: features)
    monkeypatch.setitem(compiled._state, "tiles", None)
    assert compiled.tiles_enabled() is expected


def _compiled_engine() -> None:
    pytest.importorskip("numba", reason="numba is not installed (pip install 'stridenet[fast]')")
    if not compiled.available(np.float32):
        pytest.skip("the compiled engine is off here (no BLAS with 64-bit integers)")


@pytest.mark.parametrize("shape", [(2, 16, 4, 6), (3, 13, 5, 7), (1, 3, 2, 2), (2, 8, 1, 9), (2, 20, 3, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.bool_])
def test_channels_last_transposes_every_plane(shape: tuple[int, ...], dtype: type) -> None:
    """``channels_last``: each image's (K, P) plane as (P, K) rows, whole 8 x 8 tiles and the edges where 8
    divides neither P nor K (13 channels, 35 pixels; fewer than 8 of both; 8 x 9; 20 channels of 9 pixels)."""
    _compiled_engine()
    N, K, H, W = shape
    values = np.random.default_rng(0).standard_normal((N, K, H * W)) > 0 if dtype is np.bool_ else \
        np.random.default_rng(0).standard_normal((N, K, H * W)).astype(dtype)
    out = np.full((N, H * W, K), 7, dtype)
    compiled._kernels().channels_last(values, out)
    np.testing.assert_array_equal(out, values.transpose(0, 2, 1))


@pytest.mark.parametrize("native", [True, False])
def test_contiguous_copy_of_an_nchw_array_seen_channels_last(native: bool, monkeypatch) -> None:
    """An NCHW array's channels-last view (or some of its channels) is copied by ``channels_last``, the images
    in ranges on numba's threads (``native``) or Python's; a contiguous array is itself; other strides take
    NumPy's copy."""
    _compiled_engine()
    import stridenet.functional._parallel as parallel
    if native and not compiled._threading_layer_is_safe():
        pytest.skip("numba's threads do not run the compiled kernels here")
    monkeypatch.setitem(compiled._state, "native", native)
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    numpys = []   # the arrays NumPy's copy was asked for
    monkeypatch.setattr(parallel, "contiguous_copy",
                        lambda values, copy=parallel.contiguous_copy: numpys.append(values) or copy(values))
    nchw = np.random.default_rng(1).standard_normal((5, 11, 6, 9)).astype(np.float32)
    view = nchw.transpose(0, 2, 3, 1)
    with parallel.num_threads(2):
        assert len(parallel.image_slices(5, view.size)) > 1
        assert (compiled._native_ranges(parallel.image_slices(5, view.size)) is not None) is native
        copy = compiled.contiguous_copy(view)
        channels = compiled.contiguous_copy(view[..., 3:10])
    assert copy.flags.c_contiguous and copy.base is None
    np.testing.assert_array_equal(copy, view)
    assert channels.flags.c_contiguous
    np.testing.assert_array_equal(channels, view[..., 3:10])
    assert numpys == []
    contiguous = np.ascontiguousarray(view)
    assert compiled.contiguous_copy(contiguous) is contiguous
    strided = view[:, ::2]
    copy = compiled.contiguous_copy(strided)
    np.testing.assert_array_equal(copy, strided)
    assert copy.flags.c_contiguous and len(numpys) == 2 and numpys[1] is strided
