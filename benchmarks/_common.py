"""Shared helpers for the benchmarks: thread counts, BLAS report, timing, and the ``--blas-both`` re-run.

The benchmarks compare stridenet with PyTorch on equal terms: torch gets as many threads as OpenBLAS
has (threadpoolctl tells) and stridenet splits its batches across as many, the two are timed
alternately in the same run, and every number is a
median over repeats. Timings on a shared machine drift between runs, so only ratios within one run
mean anything.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

BLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def blas_threads() -> int:
    """Threads OpenBLAS (NumPy's BLAS) uses, which the torch side is set to match."""
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        if pool["user_api"] == "blas":
            return int(pool["num_threads"])
    return os.cpu_count() or 1


def blas_description() -> str:
    """Which BLAS library and kernel NumPy runs, and the environment variables that steer OpenBLAS."""
    import numpy as np  # noqa: F401  (loads the BLAS so threadpoolctl can see it)
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p["user_api"] == "blas"]
    kernel = ", ".join(f"{p['internal_api']} {p.get('version')} kernel={p.get('architecture')} "
                       f"threads={p['num_threads']}" for p in pools) or "no BLAS found"
    settings = ", ".join(f"{name}={os.environ[name]}" if name in os.environ else f"{name} unset"
                         for name in BLAS_VARIABLES)
    return f"NumPy BLAS: {kernel} ({settings})"


def engine_description() -> str:
    """Which engine runs stridenet's stride-1 convolutions: compiled blocks (numba) or NumPy and BLAS calls."""
    import numpy as np

    from stridenet.functional import _compiled

    if _compiled.available(np.float32):
        import numba

        return f"stridenet engine: compiled blocks (numba {numba.__version__})"
    reason = "STRIDENET_NUMBA=0" if os.environ.get("STRIDENET_NUMBA", "").strip() == "0" else "numba not available"
    return f"stridenet engine: NumPy and BLAS calls ({reason})"


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_call(fn: Callable[[], object], min_seconds: float = 0.05, clock: str = "wall") -> float:
    """Seconds per call of ``fn``: as many calls as last ``min_seconds``, timed together.

    ``clock="cpu"`` counts this process's CPU time instead of wall time: on a machine busy with other
    work it leaves out the time the process waited for a core (meaningful with one thread only).
    """
    now = CLOCKS[clock]
    calls, start = 0, now()
    while True:
        fn()
        calls += 1
        elapsed = now() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def alternate(candidates: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.05,
              pause: float = 0.02, clock: str = "wall") -> dict[str, float]:
    """Median seconds per call for each candidate, timed in turn (A B A B ...) ``repeats`` times.

    A short pause between timings lets the other library's spinning worker threads go to sleep.
    """
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm-up: first-call allocations, library initialisation
    for _ in range(repeats):
        for name, fn in candidates.items():
            time.sleep(pause)
            samples[name].append(time_call(fn, min_seconds, clock))
    return {name: statistics.median(values) for name, values in samples.items()}


def rerun_with_blas_unset(script: str, argv: list[str] | None) -> int:
    """Run ``script`` again, with the same arguments less ``--blas-both``, and the OpenBLAS variables
    removed from its environment."""
    rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--blas-both"]
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARIABLES}
    print(f"\n=== again with {' and '.join(BLAS_VARIABLES)} unset ===\n", flush=True)
    return subprocess.call([sys.executable, script, *rest], env=env)


def blas_setting_label() -> str:
    present = [name for name in BLAS_VARIABLES if name in os.environ]
    if not present:
        return "BLAS variables unset"
    return "BLAS variables as set (" + ", ".join(f"{n}={os.environ[n]}" for n in present) + ")"
