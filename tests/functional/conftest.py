"""Fixtures shared by the functional tests."""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._compiled as compiled


@pytest.fixture(params=["numpy", "compiled"])
def engine(request, monkeypatch) -> str:
    """The test runs twice: with NumPy and BLAS calls (``STRIDENET_NUMBA=0``), and with the compiled
    kernels of ``functional._compiled`` (skipped without numba). The same numbers are expected of both, to
    rounding (the compiled engine's tiled products add in another order than the BLAS)."""
    monkeypatch.setenv("STRIDENET_NUMBA", "0" if request.param == "numpy" else "1")
    if request.param == "compiled" and not compiled.available(np.float32):
        pytest.skip("numba is not installed (pip install 'stridenet[fast]'): the compiled kernels never run")
    return request.param
