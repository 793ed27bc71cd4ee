"""Training and inference speed and memory of the reference CNN, stridenet against PyTorch.

Usage::

    python benchmarks/bench_train.py               # the environment as it is
    python benchmarks/bench_train.py --blas-both   # then again with OPENBLAS_CORETYPE/L2_SIZE unset

The reference CNN (MNIST-sized, float32, batch 128, SGD with momentum 0.9)::

    conv3x3(1->32) relu conv3x3(32->32) relu maxpool2 conv3x3(32->64) relu conv3x3(64->64) relu
    maxpool2 flatten fc(3136->128) relu fc(128->10)

Each measurement runs in a fresh subprocess (so each framework's peak RSS is its own), the
frameworks alternate (stridenet, torch, torch, stridenet, ...), and the table shows medians. The torch
worker gets as many threads as NumPy's OpenBLAS has, and stridenet splits its batches across as many
(``STRIDENET_NUM_THREADS``). ``--engines both`` adds stridenet with its compiled engine switched off
(``STRIDENET_NUMBA=0``) to the rotation, so the two engines are compared in the same run.

"step memory" is the peak RSS while training minus the RSS before the first step (model, data and
imports excluded). Before that base is taken, each worker runs one convolution forward and backward
on two images, so that one-time set-up that happens on first use (PyTorch's kernel selection,
numba loading stridenet's compiled kernels) counts like an import: in the peak RSS, not in the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from _common import (
    CLOCKS,
    blas_description,
    blas_setting_label,
    blas_threads,
    engine_description,
    rerun_with_blas_unset,
)

BATCH, CLASSES, SIZE = 128, 10, 28


def rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def timed_phase(step, steps: int, now) -> tuple[float, float, float]:
    """Run ``step`` 3 times to warm up, then ``steps`` times: (seconds, RSS before in MB, peak RSS in MB)."""
    base = rss_mb("VmRSS")
    reset_peak_rss()
    for _ in range(3):
        step()
    start = now()
    for _ in range(steps):
        step()
    return now() - start, base, rss_mb("VmHWM")


def measure(train_step, infer_step, steps: int, clock: str) -> dict[str, float]:
    """Images per second of training and inference, and the memory each phase adds."""
    now = CLOCKS[clock]
    train_s, base, train_peak = timed_phase(train_step, steps, now)
    infer_s, infer_base, infer_peak = timed_phase(infer_step, steps, now)
    return {"train_ips": steps * BATCH / train_s, "infer_ips": steps * BATCH / infer_s,
            "peak_rss_mb": max(train_peak, infer_peak), "step_mb": train_peak - base,
            "infer_mb": infer_peak - infer_base}


def stridenet_worker(steps: int, clock: str) -> dict[str, float]:
    import numpy as np

    from stridenet import nn

    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1, rng=rng), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, rng=rng), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, rng=rng), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128, rng=rng), nn.ReLU(), nn.Linear(128, CLASSES, rng=rng),
    )
    loss_fn = nn.CrossEntropyLoss()
    batches = [(rng.standard_normal((BATCH, 1, SIZE, SIZE), dtype=np.float32),
                rng.integers(0, CLASSES, BATCH)) for _ in range(4)]
    params = model.parameters()
    try:
        from stridenet.optim import SGD

        optimizer = SGD(params, lr=0.01, momentum=0.9)
        update = optimizer.step
    except ImportError:  # before stridenet.optim existed: the same update, inline
        velocity = [np.zeros_like(p.data) for p in params]

        def update() -> None:
            for p, v in zip(params, velocity, strict=True):
                v *= 0.9
                v += p.grad
                p.data -= 0.01 * v

    count = iter(range(10**9))
    tiny = model[2]                                     # one-time set-up on first use, as an import
    tiny.backward_relu(tiny.forward_relu(batches[0][0][:2].repeat(32, axis=1), model[3]), model[3])
    model.zero_grad()

    def train_step() -> None:
        x, y = batches[next(count) % len(batches)]
        loss = loss_fn(model(x), y)
        model.zero_grad()
        with nn.input_grad_skipped(model):   # as torch: the images need no gradient
            model.backward(loss_fn.backward())
        update()
        assert np.isfinite(loss)

    def infer_step() -> None:
        with nn.no_grad():
            model.eval()
            model(batches[next(count) % len(batches)][0])
            model.train()

    return measure(train_step, infer_step, steps, clock)


def torch_worker(steps: int, threads: int, clock: str) -> dict[str, float]:
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )
    loss_fn = nn.CrossEntropyLoss()
    batches = [(torch.randn(BATCH, 1, SIZE, SIZE), torch.randint(0, CLASSES, (BATCH,))) for _ in range(4)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    count = iter(range(10**9))
    torch.relu(model[2](batches[0][0][:2].repeat(1, 32, 1, 1))).sum().backward()   # set-up on first use
    optimizer.zero_grad()

    def train_step() -> None:
        x, y = batches[next(count) % len(batches)]
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode():
            model.eval()
            model(batches[next(count) % len(batches)][0])
            model.train()

    return measure(train_step, infer_step, steps, clock)


def run_worker(framework: str, steps: int, threads: int, clock: str) -> dict[str, float]:
    """One measurement in a fresh subprocess; "stridenet-numpy" is stridenet with ``STRIDENET_NUMBA=0``."""
    worker = "torch" if framework == "torch" else "stridenet"
    command = [sys.executable, __file__, "--worker", worker, "--steps", str(steps), "--threads", str(threads),
               "--clock", clock]
    env = os.environ | {"OPENBLAS_NUM_THREADS": str(threads), "STRIDENET_NUM_THREADS": str(threads)}
    if framework == "stridenet-numpy":
        env["STRIDENET_NUMBA"] = "0"
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="subprocess runs per framework (median)")
    parser.add_argument("--steps", type=int, default=20, help="timed training (and inference) batches per run")
    parser.add_argument("--blas-both", action="store_true",
                        help="afterwards re-run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="'cpu': each worker's CPU time, steadier on a busy machine (with --threads 1)")
    parser.add_argument("--worker", choices=("stridenet", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both frameworks (default: as many as OpenBLAS has)")
    parser.add_argument("--engines", choices=("default", "both"), default="default",
                        help="'both': also stridenet with its compiled engine off (STRIDENET_NUMBA=0), "
                             "in the same rotation")
    args = parser.parse_args(argv)

    if args.worker:
        if args.worker == "stridenet":
            result = stridenet_worker(args.steps, args.clock)
        else:
            result = torch_worker(args.steps, args.threads, args.clock)
        print(json.dumps(result))
        return 0

    threads = args.threads or blas_threads()
    print(f"# stridenet reference-CNN benchmark: {blas_setting_label()}")
    print(f"# {blas_description()}; both frameworks run with {threads} thread(s)")
    print(f"# {engine_description()}")
    print(f"# batch {BATCH}, float32, {args.steps} timed steps per run, median of {args.repeats} runs "
          f"per framework, alternating subprocesses; {args.clock} clock", flush=True)
    ours = ["stridenet", "stridenet-numpy"] if args.engines == "both" else ["stridenet"]
    samples: dict[str, list[dict[str, float]]] = {fw: [] for fw in [*ours, "torch"]}
    for repeat in range(args.repeats):
        order = [*ours, "torch"] if repeat % 2 == 0 else ["torch", *reversed(ours)]
        for framework in order:
            samples[framework].append(run_worker(framework, args.steps, threads, args.clock))
    keys = ("train_ips", "infer_ips", "peak_rss_mb", "step_mb")
    med = {fw: {k: statistics.median(s[k] for s in runs) for k in keys} for fw, runs in samples.items()}
    print("| framework       | train img/s | inference img/s | peak RSS MB | training step memory MB |")
    print("|-----------------|-------------|-----------------|-------------|-------------------------|")
    for fw in [*ours, "torch"]:
        m = med[fw]
        print(f"| {fw:15s} | {m['train_ips']:11.0f} | {m['infer_ips']:15.0f} | {m['peak_rss_mb']:11.0f} | "
              f"{m['step_mb']:23.1f} |")
    theirs = med["torch"]
    for fw in ours:
        m = med[fw]
        label = "ratio" if fw == "stridenet" else "ratio (NumPy)"
        print(f"| {label:15s} | {m['train_ips'] / theirs['train_ips']:11.2f} | "
              f"{m['infer_ips'] / theirs['infer_ips']:15.2f} | {m['peak_rss_mb'] / theirs['peak_rss_mb']:11.2f} | "
              f"{m['step_mb'] / max(theirs['step_mb'], 1e-9):23.2f} |")
    print("# ratio: stridenet / torch (throughput above 1 = we are faster; memory below 1 = we use less)")
    if args.blas_both:
        return rerun_with_blas_unset(__file__, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
