"""Central-difference gradient checking, CS231n style, for kernels and layers alike."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def rel_error(ours: np.ndarray, reference: np.ndarray, floor: float = 0.0) -> float:
    """Scaled error ``max|ours - reference| / max(|ours|, |reference|, floor)``; 0 when all are zero.

    Scaling by the largest magnitude rather than elementwise keeps entries that are zero up to
    rounding (a gradient that cancels, a conv output near 0) from dominating. ``floor`` sets the scale
    for an array that is zero up to rounding as a whole (a conv bias feeding batch norm gets none).
    """
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    scale = max(float(np.max(np.abs(ours), initial=0.0)), float(np.max(np.abs(reference), initial=0.0)), floor)
    diff = float(np.max(np.abs(ours - reference), initial=0.0))
    return diff / scale if scale > 0 else diff


def assert_results_close(ours: tuple[np.ndarray | None, ...], expected: tuple[np.ndarray, ...], dtype: type,
                         tolerance: float, has_bias: bool,
                         names: tuple[str, ...] = ("out", "dx", "dw", "db")) -> None:
    """A layer's (out, dx, dw, db) against the naive loops': each of ``dtype`` and the expected shape, within
    ``tolerance`` (``rel_error``); ``db`` None where the layer has no bias."""
    for got, reference, name in zip(ours, expected, names, strict=True):
        if name == "db" and not has_bias:
            assert got is None, f"{name}: expected None without a bias"
            continue
        assert got.dtype == dtype and got.shape == reference.shape, f"{name}: {got.dtype} {got.shape}"
        assert rel_error(got, reference) < tolerance, f"{name}: scaled error {rel_error(got, reference):.3g}"


def assert_same_weight_gradients_without_dx(with_dx: tuple[np.ndarray | None, ...],
                                            without_dx: tuple[np.ndarray | None, ...]) -> None:
    """A layer's (out, dx, dw, db) with and without ``need_dx``: no dx without it, the same dw and db to the bit."""
    assert without_dx[1] is None and with_dx[1] is not None
    np.testing.assert_array_equal(with_dx[2], without_dx[2])
    np.testing.assert_array_equal(with_dx[3], without_dx[3])


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f() / d x by central differences, perturbing ``x`` in place (and restoring it).

    ``f`` takes no arguments: it must read ``x`` (a closure over the same array), so the same helper
    checks a kernel's input, a weight array or a layer's ``Parameter.data``.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        f_plus = f()
        x[index] = old - h
        f_minus = f()
        x[index] = old
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def gradient_errors(forward: Callable[[], np.ndarray], backward: Callable[[np.ndarray], dict[str, np.ndarray]],
                    arrays: dict[str, np.ndarray], seed: int = 0, h: float = 1e-6) -> dict[str, float]:
    """Relative error of each analytic gradient against central differences.

    The scalar loss is a fixed random projection of the output, ``L = sum(out * P)``, so every
    output element contributes. ``forward()`` recomputes the output from ``arrays`` (float64, edited
    in place by the check); ``backward(P)`` runs a fresh forward and returns ``dL/d(name)`` for each
    name in ``arrays``.
    """
    out = np.asarray(forward())
    projection = np.random.default_rng(seed).standard_normal(out.shape)
    analytic = backward(projection if out.shape else np.float64(projection))

    def loss() -> float:
        return float(np.sum(np.asarray(forward()) * projection))

    return {name: rel_error(analytic[name], numerical_gradient(loss, array, h)) for name, array in arrays.items()}
