"""Batches split across threads (``functional._parallel``): the same numbers as the naive kernels.

The public-API tests mostly use arrays too small to be split, so here the size threshold is lowered
to 0 and two threads with two ranges each are asked for: N=7 images become four ranges of 1, 2, 2
and 2 images, every kernel path
(channel-major and channels-last convolution, the stride-1 shared backward, phases, groups, 1x1,
linear, ReLU, max pooling with its tiled shortcut, ties and NaN, batch norm's rows) runs on split batches, and its
results are compared with the naive loop kernels. Then the machinery itself: order of results,
errors, nesting, and the BLAS thread count during and after a parallel region.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

import stridenet
import stridenet.functional._parallel as parallel
import stridenet.functional.norm as norm
from reference import naive
from reference.gradcheck import rel_error
from reference.layouts import channels_last
from stridenet.functional import (
    batch_norm_backward,
    batch_norm_forward,
    conv2d_backward,
    conv2d_forward,
    conv2d_relu_forward,
    linear_backward,
    linear_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    relu_backward,
    relu_forward,
)

N = 7


@pytest.fixture
def split(monkeypatch):
    """Every kernel call splits its batch over 2 threads, into 4 ranges (two per thread, so that the
    threads also take turns), however small."""
    monkeypatch.setattr(parallel, "MIN_PARALLEL_SIZE", 0)
    monkeypatch.setattr(parallel, "RANGES_PER_THREAD", 2)
    parallel.set_num_threads(2)
    assert [s.stop - s.start for s in parallel.image_slices(N, 1)] == [1, 2, 2, 2]
    yield
    parallel.set_num_threads(None)


# (C, K, kernel, stride, padding, dilation, groups, layout)
CONV_CASES = [
    (2, 4, (3, 3), (1, 1), 1, (1, 1), 1, "nchw"),               # channel-major columns
    (3, 4, (2, 3), (2, 1), (1, 0), (1, 2), 1, "nchw"),          # channel-major, strided dx
    (10, 6, (3, 3), (1, 1), 1, (1, 1), 1, "channels_last"),     # stride 1: one set of columns for dx and dw
    (10, 6, (3, 3), (2, 2), 1, (1, 1), 1, "nchw"),              # stride 2: phases
    (12, 6, (3, 3), (1, 1), 2, (2, 2), 2, "channels_last"),     # groups and dilation
    (12, 6, (1, 1), (1, 1), 0, (1, 1), 1, "channels_last"),     # 1x1: the rows are the columns
]


def conv_arrays(case, seed: int):
    """A case's input (in its layout), filters, bias, its arguments, and its padding for the naive kernels."""
    C, K, kernel, stride, padding, dilation, groups, layout = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, 9, 8))
    if layout == "channels_last":
        x = channels_last(x)
    w = rng.standard_normal((K, C // groups, *kernel))
    b = rng.standard_normal(K)
    pads = ((padding, padding), (padding, padding)) if isinstance(padding, int) else tuple((p, p) for p in padding)
    return x, w, b, (stride, padding, dilation, groups), pads, rng


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no-dx"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"C{c[0]}-k{c[2]}-s{c[3]}-g{c[6]}-{c[7]}")
def test_split_convolution_matches_the_naive_kernel(case, need_dx, split) -> None:
    x, w, b, (stride, padding, dilation, groups), pads, rng = conv_arrays(case, seed=1)
    out, cache = conv2d_forward(x, w, b, stride, padding, dilation, groups)
    assert rel_error(out, naive.conv2d_forward(x, w, b, stride, pads, dilation, groups)) < 1e-12
    dout = rng.standard_normal(out.shape)
    dx, dw, db = conv2d_backward(dout, cache, need_dx=need_dx)
    dx_ref, dw_ref, db_ref = naive.conv2d_backward(dout, x, w, stride, pads, dilation, groups)
    assert rel_error(dw, dw_ref) < 1e-12
    assert rel_error(db, db_ref) < 1e-12
    if need_dx:
        assert rel_error(dx, dx_ref) < 1e-12
    else:
        assert dx is None


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"C{c[0]}-k{c[2]}-s{c[3]}-g{c[6]}-{c[7]}")
def test_split_convolution_with_its_relu_fused_matches_the_naive_kernels(case, split) -> None:
    x, w, b, (stride, padding, dilation, groups), pads, rng = conv_arrays(case, seed=7)
    out, cache, mask = conv2d_relu_forward(x, w, b, stride, padding, dilation, groups)
    expected = naive.conv2d_forward(x, w, b, stride, pads, dilation, groups)
    assert rel_error(out, np.maximum(expected, 0)) < 1e-12
    np.testing.assert_array_equal(mask, expected > 0)
    dout = rng.standard_normal(out.shape)
    for ours, ref in zip(conv2d_backward(dout, cache, positive=mask),
                         naive.conv2d_backward(dout * mask, x, w, stride, pads, dilation, groups), strict=True):
        assert rel_error(ours, ref) < 1e-12


def test_split_linear_relu_and_pooling_match_the_naive_kernels(split) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, 3, 7))                      # leading dimensions other than the batch
    w, b = rng.standard_normal((4, 7)), rng.standard_normal(4)
    out, cache = linear_forward(x, w, b)
    assert rel_error(out, naive.linear_forward(x, w, b)) < 1e-12
    dout = rng.standard_normal(out.shape)
    split = linear_backward(dout, cache)
    for ours, ref in zip(split, naive.linear_backward(dout, x, w), strict=True):
        assert rel_error(ours, ref) < 1e-12
    with parallel.num_threads(1):   # the weight and bias gradients are one product, one sum, however many threads
        whole = linear_backward(dout, cache)
    for ours, one_thread in zip(split[1:], whole[1:], strict=True):
        np.testing.assert_array_equal(ours, one_thread)

    x = channels_last(rng.standard_normal((N, 3, 6, 6)))
    out, positive = relu_forward(x)
    np.testing.assert_array_equal(out, naive.relu_forward(x))
    dout = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(relu_backward(dout, positive), naive.relu_backward(dout, x))
    dout[1, 0, 0, 0] = np.inf                               # one range takes the exact non-finite rule
    expected = naive.relu_backward(dout, x)
    np.testing.assert_array_equal(relu_backward(dout, positive), expected)


@pytest.mark.parametrize("setting", [((2, 2), (2, 2), (0, 0)), ((3, 3), (2, 2), (1, 1))], ids=["tiled", "overlapping"])
def test_split_max_pooling_matches_the_naive_kernel_with_ties_and_nan(setting, split) -> None:
    kernel, stride, padding = setting
    rng = np.random.default_rng(3)
    x = channels_last(np.maximum(rng.standard_normal((N, 3, 7, 6)), 0))   # zeros: tied maxima, as after a ReLU
    out, cache = max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(out, naive.max_pool2d_forward(x, kernel, stride, padding))
    dout = rng.standard_normal(out.shape)
    dx = max_pool2d_backward(dout, cache)
    np.testing.assert_allclose(dx, naive.max_pool2d_backward(dout, x, kernel, stride, padding), rtol=1e-12)

    x[3, 1, 2, 2] = np.nan        # one range routes by index; the others keep the fast rule
    split_out, split_cache = max_pool2d_forward(x, kernel, stride, padding)
    split_dx = max_pool2d_backward(dout, split_cache)
    parallel.set_num_threads(1)
    whole_out, whole_cache = max_pool2d_forward(x, kernel, stride, padding)
    np.testing.assert_array_equal(split_out, whole_out)
    np.testing.assert_array_equal(split_dx, max_pool2d_backward(dout, whole_cache))
    assert np.isnan(split_out[3, 1]).any()


def test_run_parallel_keeps_order_and_runs_on_several_threads(split) -> None:
    threads = set()
    both = threading.Barrier(2)

    def task(s: slice) -> list[int]:
        if threading.get_ident() not in threads:    # each thread's first range waits for the other's
            threads.add(threading.get_ident())
            both.wait(timeout=30)
        return list(range(s.start, s.stop))

    assert parallel.run_parallel(task, parallel.image_slices(N, 1)) == [[0], [1, 2], [3, 4], [5, 6]]
    assert len(threads) == 2


def test_a_free_thread_takes_the_ranges_a_busy_one_has_not_begun(split) -> None:
    """Ranges are handed out as threads come free: while one thread is held up in the first range,
    the other runs all three others (a fixed share per thread would wait forever)."""
    others_done = threading.Event()
    done: list[int] = []

    def task(s: slice) -> int:
        if s.start == 0:
            assert others_done.wait(timeout=30), "the other ranges were not taken by the free thread"
        else:
            done.append(s.start)
            if len(done) == 3:
                others_done.set()
        return threading.get_ident()

    threads = parallel.run_parallel(task, parallel.image_slices(N, 1))
    assert sorted(done) == [1, 3, 5]
    assert len(set(threads[1:])) == 1 and threads[1] != threads[0]   # one thread held up, the other did the rest


def test_run_parallel_raises_a_tasks_error_after_every_task_finished(split) -> None:
    finished = []

    def task(s: slice) -> None:
        if s.start == 1:
            raise ValueError("range 1 failed")
        finished.append(s.start)

    with pytest.raises(ValueError, match="range 1 failed"):
        parallel.run_parallel(task, parallel.image_slices(N, 1))
    assert sorted(finished) == [0, 3, 5]


def test_a_kernel_called_inside_a_task_runs_in_that_task_alone(split) -> None:
    inner = parallel.run_parallel(lambda s: parallel.image_slices(N, 1), parallel.image_slices(N, 1))
    assert inner == [[slice(0, N)]] * 4

    def nested(s: slice) -> set[int]:   # slices handed in explicitly still run on the task's thread
        seen = parallel.run_parallel(lambda inner: threading.get_ident(), [slice(0, 1), slice(1, 2)])
        return set(seen) | {threading.get_ident()}

    assert all(len(threads) == 1 for threads in parallel.run_parallel(nested, parallel.image_slices(N, 1)))


def test_the_blas_runs_one_thread_during_a_parallel_region_and_its_setting_returns_after(split) -> None:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    controller = threadpoolctl.ThreadpoolController().select(user_api="blas")
    if not controller.lib_controllers:
        pytest.skip("threadpoolctl finds no BLAS in this NumPy")
    with controller.limit(limits=2):
        seen = parallel.run_parallel(lambda s: controller.info()[0]["num_threads"], parallel.image_slices(N, 1))
        assert seen == [1, 1, 1, 1]
        assert controller.info()[0]["num_threads"] == 2


def test_small_work_and_one_thread_stay_on_the_calling_thread() -> None:
    assert parallel.image_slices(64, parallel.MIN_PARALLEL_SIZE - 1) == [slice(0, 64)]
    parallel.set_num_threads(2)
    try:
        assert parallel.image_slices(64, 10**9) == [slice(0, 32), slice(32, 64)]    # one range per thread
        parallel.set_num_threads(1)
        assert stridenet.get_num_threads() == 1
        assert parallel.image_slices(64, 10**9) == [slice(0, 64)]
    finally:
        parallel.set_num_threads(None)


def test_thread_count_setting_is_checked(monkeypatch) -> None:
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            stridenet.set_num_threads(bad)
    monkeypatch.setenv("STRIDENET_NUM_THREADS", "3")
    parallel.set_num_threads(None)
    assert stridenet.get_num_threads() == 3
    monkeypatch.setenv("STRIDENET_NUM_THREADS", "many")
    parallel.set_num_threads(None)
    with pytest.raises(ValueError, match="STRIDENET_NUM_THREADS must be a positive integer, received 'many'"):
        stridenet.get_num_threads()
    monkeypatch.delenv("STRIDENET_NUM_THREADS")
    parallel.set_num_threads(None)
    assert stridenet.get_num_threads() >= 1


@pytest.mark.parametrize("training", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("shape", [(N, 64, 4, 6), (40, 300)], ids=["channels-last-4d", "2d"])
def test_split_batch_norm_matches_the_naive_kernel(shape, training, split) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape) * 3 + 1
    if len(shape) == 4:
        x = channels_last(x)
    wide, _ = norm._rows(x)
    assert len(parallel.image_slices(wide.shape[0], wide.size)) == 4     # rows of whole channel vectors, split
    C = shape[1]
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)
    running_mean, running_var = rng.standard_normal(C), rng.random(C) + 0.5
    out, cache, _, _ = batch_norm_forward(x, gamma, beta, running_mean, running_var, training)
    assert rel_error(out, naive.batch_norm_forward(x, gamma, beta, running_mean, running_var, training)) < 1e-12
    dout = rng.standard_normal(shape)
    expected = naive.batch_norm_backward(dout, x, gamma, running_mean, running_var, training)
    for ours, ref in zip(batch_norm_backward(dout, cache), expected, strict=True):
        assert rel_error(ours, ref) < 1e-10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_a_forked_child_splits_batches_with_threads_of_its_own(split) -> None:
    """The parent's pool threads do not survive fork(); the child must not wait on them forever."""
    x = np.random.default_rng(5).standard_normal((N, 4))
    parallel.run_parallel(lambda s: time.sleep(0.05), parallel.image_slices(N, 1))   # pool threads, now idle
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_relu_in_child, args=(x, results))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0, "the forked child hung or failed"
    np.testing.assert_array_equal(results.get(timeout=5), np.maximum(x, 0))


def _relu_in_child(x: np.ndarray, results) -> None:
    results.put(relu_forward(x)[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_a_forked_child_convolves_after_the_parent_used_numbas_threads(split, monkeypatch) -> None:
    """GNU OpenMP's threads do not survive fork(): a child of a parent whose compiled engine ran on numba's
    threads (``_compiled.native_threads``) takes Python's, and does not hang."""
    from stridenet.functional import _compiled, _im2col
    if not (_compiled.available(np.float32) and _compiled.native_threads()):
        pytest.skip("the compiled engine does not run on numba's threads here")
    monkeypatch.setattr(_im2col, "COLS_BUDGET", 20_000)   # blocks of an image or two: both threads take some
    rng = np.random.default_rng(7)
    x = channels_last(rng.standard_normal((N, 16, 10, 10)).astype(np.float32))
    w = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    expected, _ = conv2d_forward(x, w, None, 1, 1)   # the parent's pass: numba's threads, where they run
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_convolve_in_child, args=(x, w, results))
    child.start()
    try:   # read before joining: the child's result is larger than the pipe holds
        native, out = results.get(timeout=120)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0, "the forked child failed"
    assert native is False, "the child kept numba's threads"
    np.testing.assert_array_equal(out, expected)


def _convolve_in_child(x: np.ndarray, w: np.ndarray, results) -> None:
    from stridenet.functional import _compiled
    out = conv2d_forward(x, w, None, 1, 1)[0]   # blocks on Python's threads
    results.put((_compiled._state["native"], np.ascontiguousarray(out)))


def test_split_results_are_bit_identical_from_call_to_call(split) -> None:
    """Per-range sums are added in range order, never in the order the threads finish: a run is
    reproducible for a given thread count."""
    rng = np.random.default_rng(6)
    x = channels_last(rng.standard_normal((N, 10, 9, 8)).astype(np.float32))
    w = rng.standard_normal((6, 10, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    out, cache = conv2d_forward(x, w, b, 1, 1)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    first = conv2d_backward(dout, cache)
    for _ in range(5):
        again = conv2d_backward(dout, conv2d_forward(x, w, b, 1, 1)[1])
        for ours, expected in zip(again, first, strict=True):
            np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_total_adds_the_parts_in_order_and_leaves_them_unchanged(count: int) -> None:
    rng = np.random.default_rng(count)
    parts = [rng.standard_normal((4, 3)) * 10.0 ** rng.integers(-8, 8) for _ in range(count)]
    copies = [p.copy() for p in parts]
    expected = copies[0]
    for part in copies[1:]:
        expected = expected + part                              # left to right, as the ranges came
    result = parallel.total(parts)
    np.testing.assert_array_equal(result, expected)
    for part, copy in zip(parts, copies, strict=True):
        np.testing.assert_array_equal(part, copy)
    assert parallel.total([2.5, 1.0, 0.5]) == 4.0
