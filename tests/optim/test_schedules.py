"""Learning-rate (and momentum) sequences of every schedule against torch.optim.lr_scheduler."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

from stridenet.nn.layer import Parameter
from stridenet.optim import (
    SGD,
    Adam,
    ConstantLR,
    CosineAnnealingLR,
    LinearWarmup,
    OneCycleLR,
    Optimizer,
    Schedule,
    StepLR,
)

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch: scheduler.step() before optimizer.step()

BASE_LR = 0.5

# (name, ours, torch's, number of steps); a builder takes the optimizer
CASES: list[tuple[str, Callable, Callable, int]] = [
    ("constant-noop", lambda o: ConstantLR(o), lambda o: L.ConstantLR(o, factor=1.0, total_iters=0), 10),
    ("constant", lambda o: ConstantLR(o, 0.25, 4), lambda o: L.ConstantLR(o, 0.25, 4), 10),
    ("step", lambda o: StepLR(o, 3, 0.5), lambda o: L.StepLR(o, 3, 0.5), 20),
    ("step-1", lambda o: StepLR(o, 1, 0.9), lambda o: L.StepLR(o, 1, 0.9), 30),
    # past T_max the cosine rises again, in both
    ("cosine", lambda o: CosineAnnealingLR(o, 15, 0.01), lambda o: L.CosineAnnealingLR(o, 15, 0.01), 45),
    ("cosine-long", lambda o: CosineAnnealingLR(o, 400), lambda o: L.CosineAnnealingLR(o, 400), 400),
    ("warmup", lambda o: LinearWarmup(o, 5, 0.2), lambda o: L.LinearLR(o, 0.2, total_iters=5), 12),
    ("warmup-cosine",
     lambda o: LinearWarmup(o, 5, 0.1, then=CosineAnnealingLR(o, 20, 0.001)),
     lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=5), L.CosineAnnealingLR(o, 20, 0.001)], [5]),
     25),
    ("warmup-step",
     lambda o: LinearWarmup(o, 4, 0.5, then=StepLR(o, 3, 0.1)),
     lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.5, total_iters=4), L.StepLR(o, 3, 0.1)], [4]),
     16),
    ("onecycle", lambda o: OneCycleLR(o, 1.0, 50), lambda o: L.OneCycleLR(o, 1.0, total_steps=50), 50),
    ("onecycle-linear",
     lambda o: OneCycleLR(o, 2.0, 37, pct_start=0.25, anneal_strategy="linear", div_factor=10.0),
     lambda o: L.OneCycleLR(o, 2.0, total_steps=37, pct_start=0.25, anneal_strategy="linear", div_factor=10.0),
     37),
    ("onecycle-3phase",
     lambda o: OneCycleLR(o, 1.0, 60, three_phase=True, final_div_factor=100.0, base_momentum=0.8),
     lambda o: L.OneCycleLR(o, 1.0, total_steps=60, three_phase=True, final_div_factor=100.0,
                            base_momentum=0.8),
     60),
    ("onecycle-3phase-linear",
     lambda o: OneCycleLR(o, 0.3, 45, pct_start=0.4, anneal_strategy="linear", three_phase=True),
     lambda o: L.OneCycleLR(o, 0.3, total_steps=45, pct_start=0.4, anneal_strategy="linear", three_phase=True),
     45),
]


def _momentum(opt: Optimizer | torch.optim.Optimizer) -> float:
    if isinstance(opt, torch.optim.Optimizer):
        group = opt.param_groups[0]
        return group["betas"][0] if "betas" in group else group["momentum"]
    return opt.betas[0] if isinstance(opt, Adam) else opt.momentum


def _sequences(optimizer: str, ours: Callable, theirs: Callable, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps + 1, 2) arrays of (lr, momentum) before the first step and after each schedule step."""
    weight, tensor = Parameter(np.zeros(3)), torch.zeros(3, requires_grad=True)
    if optimizer == "sgd":
        opt, topt = SGD([weight], BASE_LR, momentum=0.9), torch.optim.SGD([tensor], BASE_LR, momentum=0.9)
    else:
        opt, topt = Adam([weight], BASE_LR), torch.optim.Adam([tensor], BASE_LR)
    schedule, tschedule = ours(opt), theirs(topt)
    mine, ref = [(opt.lr, _momentum(opt))], [(topt.param_groups[0]["lr"], _momentum(topt))]
    for _ in range(steps):
        schedule.step()
        tschedule.step()
        mine.append((opt.lr, _momentum(opt)))
        ref.append((topt.param_groups[0]["lr"], _momentum(topt)))
    return np.array(mine), np.array(ref)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize(("name", "ours", "theirs", "steps"), CASES, ids=[c[0] for c in CASES])
def test_sequence_matches_torch(name: str, ours: Callable, theirs: Callable, steps: int, optimizer: str) -> None:
    mine, ref = _sequences(optimizer, ours, theirs, steps)
    # torch's recursive updates (cosine, linear warm-up) drift by rounding from the closed form we use
    np.testing.assert_allclose(mine[:, 0], ref[:, 0], rtol=1e-12, atol=1e-14 * BASE_LR)
    np.testing.assert_allclose(mine[:, 1], ref[:, 1], rtol=0, atol=1e-15)  # momentum / beta1


def test_schedule_lr_is_the_lr_of_the_next_step() -> None:
    opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    schedule = LinearWarmup(opt, 4, start_factor=0.0, then=CosineAnnealingLR(opt, 8))
    for t in range(13):
        assert schedule.step_count == t and schedule.lr == opt.lr == schedule.lr_at(t)
        schedule.step()
    assert schedule.then.step_count == 13 - 4


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_onecycle_trains_like_torch(optimizer: str) -> None:
    """Momentum cycling reaches the update: weights agree with torch's over a whole cycle."""
    rng = np.random.default_rng(3)
    init = rng.standard_normal((4, 5))
    weight, tensor = Parameter(init.copy()), torch.tensor(init.copy(), requires_grad=True)
    if optimizer == "sgd":
        opt = SGD([weight], 0.1, momentum=0.9, nesterov=True)
        topt = torch.optim.SGD([tensor], 0.1, momentum=0.9, nesterov=True, foreach=False)
    else:
        opt, topt = Adam([weight], 0.1), torch.optim.Adam([tensor], 0.1, foreach=False)
    schedule, tschedule = OneCycleLR(opt, 0.05, 30), L.OneCycleLR(topt, 0.05, total_steps=30)
    for _ in range(30):
        grad = rng.standard_normal((4, 5))
        weight.grad[...] = grad
        tensor.grad = torch.tensor(grad)
        opt.step()
        topt.step()
        schedule.step()
        tschedule.step()
        np.testing.assert_allclose(weight.data, tensor.detach().numpy(), rtol=1e-12, atol=1e-13)


def test_onecycle_stepping_past_the_end_raises_and_changes_nothing() -> None:
    opt = SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
    schedule = OneCycleLR(opt, 1.0, 5)
    for _ in range(5):
        schedule.step()
    lr, momentum = opt.lr, opt.momentum
    with pytest.raises(ValueError, match="OneCycleLR: tried to step 6 times, but total_steps=5"):
        schedule.step()
    assert (schedule.step_count, opt.lr, opt.momentum) == (5, lr, momentum)


def test_onecycle_without_momentum_cycling_leaves_momentum_alone() -> None:
    opt = SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.7)
    schedule = OneCycleLR(opt, 1.0, 10, cycle_momentum=False)
    schedule.step()
    assert opt.momentum == 0.7


def _sgd(momentum: float = 0.9) -> SGD:
    return SGD([Parameter(np.zeros(1))], lr=0.1, momentum=momentum)


BAD = [
    (lambda: StepLR(_sgd(), 0), "StepLR: expected step_size to be an integer >= 1, received 0"),
    (lambda: StepLR(_sgd(), 2.5), "StepLR: expected step_size to be an integer >= 1, received 2.5"),
    (lambda: StepLR(_sgd(), 2, gamma=-0.1), "StepLR: expected gamma"),
    (lambda: ConstantLR(_sgd(), factor=1.5), "ConstantLR: expected factor"),
    (lambda: ConstantLR(_sgd(), total_iters=-1), "ConstantLR: expected total_iters"),
    (lambda: CosineAnnealingLR(_sgd(), 0), "CosineAnnealingLR: expected T_max to be an integer >= 1"),
    (lambda: CosineAnnealingLR(_sgd(), 5, eta_min=-1.0), "CosineAnnealingLR: expected eta_min"),
    (lambda: LinearWarmup(_sgd(), 0), "LinearWarmup: expected warmup_steps"),
    (lambda: LinearWarmup(_sgd(), 3, start_factor=2.0), "LinearWarmup: expected start_factor"),
    (lambda: LinearWarmup(_sgd(), 3, then=StepLR(_sgd(), 2)), "LinearWarmup: expected `then` to be a Schedule of"),
    (lambda: OneCycleLR(_sgd(), 0.0, 10), "OneCycleLR: expected max_lr > 0, received 0.0"),
    (lambda: OneCycleLR(_sgd(), 1.0, 1), "OneCycleLR: expected total_steps to be an integer >= 2"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, pct_start=1.2), "OneCycleLR: expected pct_start"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, pct_start=0.1), "OneCycleLR: phase end steps"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, pct_start=0.6, three_phase=True), "OneCycleLR: phase end steps"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, anneal_strategy="exp"), "OneCycleLR: expected anneal_strategy"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, div_factor=0), "OneCycleLR: expected div_factor > 0"),
    (lambda: OneCycleLR(_sgd(), 1.0, 10, max_momentum=1.0), "OneCycleLR: expected max_momentum"),
    (lambda: OneCycleLR(_sgd(0.0), 1.0, 10), "OneCycleLR: cycle_momentum=True needs an optimizer with momentum"),
]


@pytest.mark.parametrize(("build", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_arguments_raise(build: Callable[[], Schedule], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_schedule_needs_an_optimizer() -> None:
    with pytest.raises(TypeError, match="StepLR: expected an Optimizer, received SGD"):
        StepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), 3)
