"""Forward+backward time of single conv and pool layers, stridenet against torch.nn.functional.

Usage::

    python benchmarks/bench_layers.py               # the environment as it is
    python benchmarks/bench_layers.py --blas-both   # then again with OPENBLAS_CORETYPE/L2_SIZE unset

Both libraries get the same float32 NCHW-contiguous input, the same thread count, and are timed in
turn (ours, torch, ours, ...); each cell is a median. ``ratio = torch_ms / our_ms``: above 1 we are
faster. GFLOP/s counts forward + both gradients (3x the forward's 2*N*K*H_out*W_out*C*kH*kW).
"""

from __future__ import annotations

import argparse
import sys
from typing import NamedTuple

import numpy as np

from _common import (
    alternate,
    blas_description,
    blas_setting_label,
    blas_threads,
    engine_description,
    rerun_with_blas_unset,
)


class ConvCase(NamedTuple):
    N: int
    C: int
    K: int
    size: int
    kernel: int
    stride: int = 1
    groups: int = 1

    @property
    def padding(self) -> int:
        return self.kernel // 2

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def label(self) -> str:
        k = f" {self.kernel}x{self.kernel}" if self.kernel != 3 else ""
        s = f" s{self.stride}" if self.stride != 1 else ""
        g = " depthwise" if self.groups == self.C > 1 else (f" groups={self.groups}" if self.groups > 1 else "")
        return f"conv {self.C}->{self.K}{k}{g} @{self.size}x{self.size}{s}"

    def flops(self) -> float:
        forward = 2 * self.N * self.K * self.out_size ** 2 * (self.C // self.groups) * self.kernel ** 2
        return 3.0 * forward


CONV_CASES = [
    ConvCase(64, 1, 32, 28, 3),
    ConvCase(64, 32, 64, 14, 3),
    ConvCase(64, 3, 96, 32, 3),
    ConvCase(64, 96, 96, 32, 3),
    ConvCase(64, 96, 96, 32, 3, stride=2),
    ConvCase(64, 96, 192, 16, 3),
    ConvCase(64, 192, 192, 8, 3),
    ConvCase(64, 192, 192, 8, 1),
    ConvCase(64, 3, 64, 32, 7),
    ConvCase(64, 96, 96, 32, 3, groups=96),   # not in the table: MobileNet's depthwise layer
    ConvCase(64, 128, 128, 16, 3, groups=4),  # ... nor this: ResNeXt's grouped 3x3 (32 channels a group)
]
POOL_SHAPE = (64, 96, 32, 32)


def conv_row(case: ConvCase, repeats: int, clock: str) -> tuple[str, dict[str, float], float]:
    import torch
    import torch.nn.functional as F

    from stridenet.functional import conv2d_backward, conv2d_forward

    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.N, case.C, case.size, case.size), dtype=np.float32)
    w = rng.standard_normal((case.K, case.C // case.groups, case.kernel, case.kernel), dtype=np.float32) * 0.1
    b = rng.standard_normal(case.K, dtype=np.float32)
    dout = rng.standard_normal((case.N, case.K, case.out_size, case.out_size), dtype=np.float32)
    xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    doutt = torch.from_numpy(dout)
    s, p, g = case.stride, case.padding, case.groups

    def ours_fwd():
        return conv2d_forward(x, w, b, s, p, groups=g)

    def ours_both():
        cache = conv2d_forward(x, w, b, s, p, groups=g)[1]
        return conv2d_backward(dout, cache)

    def torch_fwd():
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, s, p, groups=g)

    def torch_both():
        out = F.conv2d(xt, wt, bt, s, p, groups=g)
        return torch.autograd.grad(out, (xt, wt, bt), doutt)

    times = alternate({"ours_fwd": ours_fwd, "torch_fwd": torch_fwd}, repeats, clock=clock)
    times |= alternate({"ours": ours_both, "torch": torch_both}, repeats, clock=clock)
    return case.label, times, case.flops()


def pool_row(channels_last: bool, repeats: int, clock: str) -> tuple[str, dict[str, float], float]:
    import torch
    import torch.nn.functional as F

    from stridenet.functional import max_pool2d_backward, max_pool2d_forward

    rng = np.random.default_rng(0)
    N, C, H, W = POOL_SHAPE
    x = rng.standard_normal(POOL_SHAPE, dtype=np.float32)
    dout = rng.standard_normal((N, C, H // 2, W // 2), dtype=np.float32)
    if channels_last:  # what a stridenet conv hands on: NCHW shape, channels innermost in memory
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
        dout = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xt = torch.from_numpy(x).contiguous(memory_format=fmt).requires_grad_()
    doutt = torch.from_numpy(dout).contiguous(memory_format=fmt)

    def ours_fwd():
        return max_pool2d_forward(x, 2)

    def ours_both():
        cache = max_pool2d_forward(x, 2)[1]
        return max_pool2d_backward(dout, cache)

    def torch_fwd():
        with torch.no_grad():
            return F.max_pool2d(xt, 2)

    def torch_both():
        return torch.autograd.grad(F.max_pool2d(xt, 2), xt, doutt)

    times = alternate({"ours_fwd": ours_fwd, "torch_fwd": torch_fwd}, repeats, clock=clock)
    times |= alternate({"ours": ours_both, "torch": torch_both}, repeats, clock=clock)
    layout = "channels-last" if channels_last else "NCHW"
    return f"maxpool 2x2 {'x'.join(map(str, POOL_SHAPE))} {layout}", times, 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="alternating timings per cell (median)")
    parser.add_argument("--only", default="", help="run only rows whose label contains this text")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both libraries (default: as many as OpenBLAS has)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="'cpu': this process's CPU time, steadier on a busy machine (with --threads 1)")
    parser.add_argument("--blas-both", action="store_true",
                        help="afterwards re-run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    import stridenet

    if args.threads:
        threadpool_limits(args.threads, user_api="blas")
    threads = blas_threads()
    torch.set_num_threads(threads)
    stridenet.set_num_threads(threads)
    print(f"# stridenet layer benchmark: {blas_setting_label()}")
    print(f"# {blas_description()}")
    print(f"# {engine_description()}")
    print(f"# stridenet {stridenet.get_num_threads()} threads (BLAS held to 1 thread inside them); torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; NumPy {np.__version__}; "
          f"median of {args.repeats}, alternating; {args.clock} clock")
    header = (f"| {'layer':34s} | fwd ms ours | fwd ms torch | fwd ratio | fwd+bwd ms ours | "
              f"fwd+bwd ms torch | ratio | GFLOP/s ours | GFLOP/s torch |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    rows = [lambda c=case: conv_row(c, args.repeats, args.clock) for case in CONV_CASES]
    rows += [lambda: pool_row(False, args.repeats, args.clock), lambda: pool_row(True, args.repeats, args.clock)]
    labels = [case.label for case in CONV_CASES] + ["maxpool 2x2 NCHW", "maxpool 2x2 channels-last"]
    for label, row in zip(labels, rows, strict=True):
        if args.only and args.only not in label:
            continue
        name, t, flops = row()
        gf = (f"{flops / t['ours'] / 1e9:12.1f} | {flops / t['torch'] / 1e9:13.1f}" if flops
              else f"{'':12s} | {'':13s}")
        print(f"| {name:34s} | {t['ours_fwd'] * 1e3:11.2f} | {t['torch_fwd'] * 1e3:12.2f} | "
              f"{t['torch_fwd'] / t['ours_fwd']:9.2f} | {t['ours'] * 1e3:15.2f} | {t['torch'] * 1e3:16.2f} | "
              f"{t['torch'] / t['ours']:5.2f} | {gf} |", flush=True)
    if not args.only:
        print(blas_ceiling(args.repeats, args.clock))
    if args.blas_both:
        return rerun_with_blas_unset(__file__, argv)
    return 0


def blas_ceiling(repeats: int, clock: str) -> str:
    """The matrix product under the 96->96 convolution's forward pass, NumPy's BLAS against torch's.

    Every convolution here ends in products like this one, so their speed bounds ours: a convolution
    cannot beat torch by more than its BLAS does (torch's own convolutions use oneDNN, not this product).
    """
    import torch

    M, L, K = 64 * 32 * 32, 9 * 96, 96
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((M, L), dtype=np.float32), rng.standard_normal((L, K), dtype=np.float32)
    out = np.empty((M, K), np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    t_out = torch.empty(M, K)
    t = alternate({"numpy": lambda: np.matmul(a, b, out=out), "torch": lambda: torch.mm(ta, tb, out=t_out)},
                  repeats, clock=clock)
    flops = 2 * M * L * K
    return (f"# BLAS ceiling: ({M} x {L}) @ ({L} x {K}) float32: NumPy {flops / t['numpy'] / 1e9:.1f} GFLOP/s, "
            f"torch.mm {flops / t['torch'] / 1e9:.1f} GFLOP/s (torch_ms/numpy_ms {t['torch'] / t['numpy']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
