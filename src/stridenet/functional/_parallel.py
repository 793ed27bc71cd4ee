"""How the kernels use the cores: a batch split into one range of images per thread.

NumPy runs copies and element-wise operations on one core, and OpenBLAS runs each matrix product on
all of them; after a product its threads keep spinning for a while, so NumPy work on a second thread
right after it has to compete with them. The kernels therefore bring their own parallelism: each
large operation splits its images into contiguous ranges, one per thread (``image_slices``), and
runs them at the same time (``run_parallel``) while the BLAS is held to one thread, so copies,
element-wise work and matrix products all use every core and no thread spins. Each thread takes the
next range nobody has begun, so a range whose thread starts late is taken by one that is free.
NumPy and the BLAS release the GIL while they work, so plain Python threads suffice.
Each range writes its own slice of the output; sums over images (weight gradients) are added up
afterwards in range order, so results depend on the number of threads but not on which thread ran
which range.

The number of threads defaults to the cores this process may use; ``STRIDENET_NUM_THREADS`` or
``set_num_threads`` changes it (1 runs everything in the calling thread, as before).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

# Work below this many array elements stays on the calling thread: a hand-off costs tens of microseconds.
MIN_PARALLEL_SIZE = 1 << 16
# Ranges per thread. More let the threads even out a host that slows one of them, but each range
# has its own fixed costs and smaller blocks: two per thread trained 7% faster on one run of the
# reference CNN and 7-10% slower on others (the 5x5 default model at batch 64 too), so one.
RANGES_PER_THREAD = 1

_lock = threading.Lock()
_local = threading.local()
_state: dict[str, Any] = {"threads": None, "pool": None, "blas": None, "blas_users": 0, "blas_saved": []}


def _default_threads() -> int:
    setting = os.environ.get("STRIDENET_NUM_THREADS", "").strip()
    if setting:
        try:
            threads = int(setting)
        except ValueError:
            raise ValueError(f"STRIDENET_NUM_THREADS must be a positive integer, received {setting!r}") from None
        if threads < 1:
            raise ValueError(f"STRIDENET_NUM_THREADS must be a positive integer, received {setting!r}")
        return threads
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:   # not on Linux
        return max(os.cpu_count() or 1, 1)


def get_num_threads() -> int:
    """Threads the kernels split a batch across (``STRIDENET_NUM_THREADS``, else the usable cores)."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def set_num_threads(threads: int | None) -> None:
    """Split batches across ``threads`` threads from now on; None goes back to the default."""
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"set_num_threads: expected a positive integer or None, received {threads!r}")
    with _lock:
        pool = _state["pool"]
        _state["threads"], _state["pool"] = threads, None
    if pool is not None:
        pool.shutdown(wait=True)


@contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """``set_num_threads(threads)`` inside the block, the previous setting after it."""
    previous = _state["threads"]
    set_num_threads(threads)
    try:
        yield
    finally:
        set_num_threads(previous)


def image_slices(count: int, size: int) -> list[slice]:
    """Split ``count`` images (``size`` array elements in all) into contiguous ranges, ``RANGES_PER_THREAD``
    per thread (at most one per image).

    One range when the work is too small to be worth a hand-off, or inside a parallel task.
    """
    threads = get_num_threads()
    parts = min(threads * RANGES_PER_THREAD, count)
    if threads <= 1 or parts <= 1 or size < MIN_PARALLEL_SIZE or getattr(_local, "in_task", False):
        return [slice(0, count)]
    bounds = [count * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds) if hi > lo]


def run_parallel(task: Callable[[slice], T], slices: Sequence[slice]) -> list[T]:
    """``[task(s) for s in slices]``, run by every thread at once, the BLAS held to one thread meanwhile.

    The calling thread and the pool's threads each take the next slice not yet begun until none is
    left; the results come back in slice order. Inside a task, every slice runs there in turn. If a
    task raises, the remaining slices still run (others may be writing into shared arrays) before
    the first error, in slice order, is raised.
    """
    if len(slices) <= 1 or getattr(_local, "in_task", False):
        return [task(s) for s in slices]
    results: list[Any] = [None] * len(slices)
    errors: list[BaseException | None] = [None] * len(slices)
    pending = iter(range(len(slices)))
    taking = threading.Lock()

    def work() -> None:
        while True:
            with taking:
                index = next(pending, None)
            if index is None:
                return
            try:
                results[index] = _as_task(task, slices[index])
            except BaseException as error:   # re-raised below, after every slice ran
                errors[index] = error

    pool = _pool()
    with single_threaded_blas():
        helpers = [pool.submit(work) for _ in range(min(get_num_threads(), len(slices)) - 1)]
        try:
            work()
        finally:
            for helper in helpers:
                helper.result()
    for error in errors:
        if error is not None:
            raise error
    return results


def contiguous_copy(values: np.ndarray) -> np.ndarray:
    """``values`` (N, ...) C-contiguous: itself, or a copy made by all the threads, a range of images each
    (an NCHW caller's gradient seen channels-last)."""
    if values.flags.c_contiguous:
        return values
    copy = np.empty(values.shape, values.dtype)
    run_parallel(lambda s: np.copyto(copy[s], values[s]), image_slices(values.shape[0], values.size))
    return copy


def total(parts: Sequence[Any]) -> Any:
    """The sum of per-range partial results, in range order (weight gradients, statistics).

    Arrays are added into the first sum's result (one new array, not one per part).
    """
    if len(parts) == 1:
        return parts[0]
    result = parts[0] + parts[1]
    for part in parts[2:]:
        result += part
    return result


def _as_task(task: Callable[[slice], T], part: slice) -> T:
    """Run one slice with nested parallelism off (a task that calls a kernel runs it in its own thread)."""
    outer = getattr(_local, "in_task", False)
    _local.in_task = True
    try:
        return task(part)
    finally:
        _local.in_task = outer


def _forget_threads() -> None:
    """In a forked child: the parent's pool threads do not exist there, so start afresh."""
    global _lock
    _lock = threading.Lock()
    _state.update(pool=None, blas_users=0, blas_saved=[])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)


def _pool() -> ThreadPoolExecutor:
    with _lock:
        if _state["pool"] is None:
            _state["pool"] = ThreadPoolExecutor(max(get_num_threads() - 1, 1), thread_name_prefix="stridenet")
        return _state["pool"]


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold NumPy's BLAS to one thread while any parallel region runs, then restore its setting.

    Without threadpoolctl, or with a BLAS it cannot find, the BLAS keeps its own threads.
    """
    controllers = _blas_controllers()
    with _lock:
        if _state["blas_users"] == 0:
            _state["blas_saved"] = [c.get_num_threads() for c in controllers]
            for c in controllers:
                c.set_num_threads(1)
        _state["blas_users"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["blas_users"] -= 1
            if _state["blas_users"] == 0:
                for c, threads in zip(controllers, _state["blas_saved"], strict=True):
                    c.set_num_threads(threads)


def _blas_controllers() -> list[Any]:
    if _state["blas"] is None:
        try:
            import numpy as np  # noqa: F401  (loads the BLAS so that threadpoolctl can find it)
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _state["blas"] = []
        else:
            _state["blas"] = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    return _state["blas"]
