"""Suite-wide setup: one BLAS/torch thread per process, and the PyTorch parity log.

Parity tests compare our kernels with PyTorch through the ``parity`` fixture, which asserts a
dtype-appropriate tolerance and remembers the largest error seen per op. The errors travel with the
test reports (so they survive pytest-xdist) and are printed as a table at the end of the run.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread limits, which numpy reads on import)
import pytest  # noqa: E402

from reference.gradcheck import rel_error  # noqa: E402

# largest rel_error(ours, torch) allowed, per dtype of the compared arrays
PARITY_TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(ParitySummary(), "stridenet-parity-summary")
    try:
        import torch
    except ImportError:     # the parity tests skip themselves
        return
    torch.set_num_threads(1)


class ParityLog:
    """Compares our arrays with PyTorch's and keeps the largest error per (op, dtype)."""

    def __init__(self) -> None:
        self.worst: dict[tuple[str, str], tuple[float, str]] = {}

    def check(self, op: str, quantity: str, ours: np.ndarray, theirs, floor: float = 0.0) -> float:
        """Assert ``ours`` matches ``theirs`` (a tensor or array) in shape, dtype and value.

        Floating arrays within the dtype's tolerance of ``rel_error`` (``floor`` as there), others exactly.
        """
        if hasattr(theirs, "detach"):
            theirs = theirs.detach().numpy()
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        assert ours.shape == theirs.shape, f"{op} {quantity}: shape {ours.shape} != torch's {theirs.shape}"
        assert ours.dtype == theirs.dtype, f"{op} {quantity}: dtype {ours.dtype} != torch's {theirs.dtype}"
        if not np.issubdtype(ours.dtype, np.floating):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{op} {quantity}")
            return 0.0
        error = rel_error(ours, theirs, floor)
        key = (op, ours.dtype.name)
        if error >= self.worst.get(key, (-1.0, ""))[0]:
            self.worst[key] = (error, quantity)
        tolerance = PARITY_TOLERANCE[ours.dtype.name]
        assert error < tolerance, f"{op} {quantity} ({ours.dtype}): scaled error {error:.3g} >= {tolerance:g}"
        return error


@pytest.fixture
def parity(request: pytest.FixtureRequest):
    log = ParityLog()
    yield log
    records = [[op, dtype, quantity, error] for (op, dtype), (error, quantity) in log.worst.items()]
    request.node.user_properties.append(("parity", records))


class ParitySummary:
    """Collects the parity records of every test report and prints the largest error per op."""

    def __init__(self) -> None:
        self.worst: dict[tuple[str, str], tuple[float, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown":
            return
        for name, records in report.user_properties:
            if name != "parity":
                continue
            for op, dtype, quantity, error in records:
                if error >= self.worst.get((op, dtype), (-1.0, ""))[0]:
                    self.worst[(op, dtype)] = (float(error), quantity)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.worst:
            return
        terminalreporter.write_sep("-", "largest parity error vs PyTorch: max|ours - torch| / max(|ours|, |torch|)")
        rows = [("op", "float64", "float32")]
        for op in sorted({op for op, _ in self.worst}):
            cells = []
            for dtype in ("float64", "float32"):
                error, quantity = self.worst.get((op, dtype), (None, ""))
                cells.append("-" if error is None else f"{error:.2e} ({quantity})")
            rows.append((op, *cells))
        widths = [max(len(row[i]) for row in rows) + 2 for i in range(2)]
        for op, f64, f32 in rows:
            terminalreporter.write_line(f"{op:<{widths[0]}}{f64:<{widths[1]}}{f32}")
