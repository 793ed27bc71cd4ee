"""Flat state dicts: savez round trips that resume bit for bit, and clear errors for bad checkpoints."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest

from stridenet.errors import CheckpointError
from stridenet.nn.layer import Parameter
from stridenet.optim import (
    SGD,
    Adam,
    AdamW,
    CosineAnnealingLR,
    LinearWarmup,
    Optimizer,
    Schedule,
    StepLR,
    build_schedule,
)

SHAPES = [(3, 2, 3, 3), (5,), (4, 3)]

OPTIMIZERS: dict[str, Callable[[list[Parameter]], Optimizer]] = {
    "sgd": lambda ps: SGD(ps, lr=0.1),
    "sgd-momentum": lambda ps: SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01),
    "sgd-nesterov": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: Adam(ps, lr=0.01, weight_decay=0.01),
    "adam-amsgrad": lambda ps: Adam(ps, lr=0.01, amsgrad=True),
    "adamw": lambda ps: AdamW(ps, lr=0.01, amsgrad=True),
}

SCHEDULES: dict[str, Callable[[Optimizer], Schedule | None]] = {
    "none": lambda o: None,
    "step": lambda o: StepLR(o, 4, 0.5),
    "warmup-cosine": lambda o: LinearWarmup(o, 5, 0.1, then=CosineAnnealingLR(o, 15, 1e-4)),
    "onecycle": lambda o: build_schedule("onecycle", o, 20, steps_per_epoch=5, max_lr=0.2),
    "built-step-warmup": lambda o: build_schedule("step", o, 20, steps_per_epoch=3, warmup_steps=4),
}


def _savez_round_trip(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    buffer = io.BytesIO()
    np.savez(buffer, **state, allow_pickle=False)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as loaded:
        return {k: loaded[k] for k in loaded.files}


def _gradients(dtype: type) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(11)
    return [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(20)]


def _run(opt: Optimizer, schedule: Schedule | None, grads: list[list[np.ndarray]]) -> None:
    for round_grads in grads:
        for p, g in zip(opt.params, round_grads, strict=True):
            p.grad[...] = g
        opt.step()
        if schedule is not None:
            schedule.step()


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_resume_is_bit_for_bit(optimizer_name: str, schedule_name: str, dtype: type) -> None:
    grads = _gradients(dtype)
    init = [np.random.default_rng(5).standard_normal(s).astype(dtype) for s in SHAPES]
    make_opt, make_schedule = OPTIMIZERS[optimizer_name], SCHEDULES[schedule_name]

    straight = make_opt([Parameter(a.copy()) for a in init])
    straight_schedule = make_schedule(straight)
    _run(straight, straight_schedule, grads)

    first = make_opt([Parameter(a.copy()) for a in init])
    first_schedule = make_schedule(first)
    _run(first, first_schedule, grads[:10])
    opt_state = _savez_round_trip(first.state_dict())
    schedule_state = _savez_round_trip(first_schedule.state_dict()) if first_schedule else None

    resumed = make_opt([Parameter(p.data.copy()) for p in first.params])  # weights come from the model checkpoint
    resumed_schedule = make_schedule(resumed)
    resumed.load_state_dict(opt_state)
    if resumed_schedule is not None:
        resumed_schedule.load_state_dict(schedule_state)
        assert resumed.lr == first.lr
    _run(resumed, resumed_schedule, grads[10:])

    assert resumed.step_count == straight.step_count == 20
    assert resumed.lr == straight.lr
    for p, q in zip(resumed.params, straight.params, strict=True):
        assert p.data.dtype == dtype
        np.testing.assert_array_equal(p.data, q.data)
    for name in straight.state:
        for a, b in zip(resumed.state[name], straight.state[name], strict=True):
            np.testing.assert_array_equal(a, b)


def test_state_dict_is_flat_numeric_and_copied() -> None:
    p = Parameter(np.ones((2, 3), dtype=np.float32))
    opt = Adam([p, Parameter(np.ones(4))], amsgrad=True)
    p.grad[...] = 1.0
    opt.step()
    state = opt.state_dict()
    assert sorted(state) == ["exp_avg.0", "exp_avg.1", "exp_avg_sq.0", "exp_avg_sq.1", "lr",
                             "max_exp_avg_sq.0", "max_exp_avg_sq.1", "step_count"]
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "if" for v in state.values())
    assert state["lr"].shape == () and state["step_count"].dtype == np.int64 and state["step_count"] == 1
    assert state["exp_avg.0"].shape == (2, 3) and state["exp_avg.0"].dtype == np.float32
    state["exp_avg.0"][...] = 123.0
    assert not np.any(opt.state["exp_avg"][0] == 123.0)
    assert sorted(SGD([p], lr=0.1).state_dict()) == ["lr", "step_count"]
    assert sorted(SGD([p], lr=0.1, momentum=0.5).state_dict()) == ["lr", "momentum_buffer.0", "step_count"]


def test_loading_converts_buffers_to_the_parameter_dtype() -> None:
    opt = SGD([Parameter(np.zeros(3, dtype=np.float32))], lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["momentum_buffer.0"] = np.array([1.0, 2.0, 3.0])  # float64
    opt.load_state_dict(state)
    assert opt.state["momentum_buffer"][0].dtype == np.float32
    np.testing.assert_array_equal(opt.state["momentum_buffer"][0], [1, 2, 3])


def _adam() -> Adam:
    return Adam([Parameter(np.zeros((2, 3))), Parameter(np.zeros(4))])


def _edit(**changes: object) -> dict[str, np.ndarray]:
    state = _adam().state_dict()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


BAD_OPTIMIZER_STATES = [
    ("missing", _edit(exp_avg__1=None), r"missing keys \['exp_avg.1'\]"),
    ("unexpected", _edit(momentum_buffer__0=np.zeros((2, 3))), r"unexpected keys \['momentum_buffer.0'\]"),
    ("shape", _edit(exp_avg_sq__0=np.zeros((3, 2))), r"state 'exp_avg_sq.0' expected shape \(2, 3\), "
                                                       r"received shape \(3, 2\)"),
    ("scalar-shape", _edit(lr=np.array([0.1])), r"state 'lr' expected shape \(\), received shape \(1,\)"),
    ("step-float", _edit(step_count=np.array(3.0)), "state 'step_count' expected an integer array, received "
                                                     "dtype float64"),
    ("string", _edit(lr=np.array("0.1")), "state 'lr' expected a real number array"),
    ("negative-lr", _edit(lr=np.array(-0.1)), "state 'lr' expected a finite non-negative number, received -0.1"),
    ("negative-step", _edit(step_count=np.array(-2)), "state 'step_count' expected a finite non-negative"),
    ("nan-lr", _edit(lr=np.array(np.nan)), "state 'lr' expected a finite non-negative number"),
]


@pytest.mark.parametrize(("state", "message"), [c[1:] for c in BAD_OPTIMIZER_STATES],
                         ids=[c[0] for c in BAD_OPTIMIZER_STATES])
def test_bad_optimizer_state_raises(state: dict[str, np.ndarray], message: str) -> None:
    opt = _adam()
    before = opt.state_dict()
    with pytest.raises(CheckpointError, match=message) as info:
        opt.load_state_dict(state)
    assert str(info.value).startswith("Adam(lr=0.001")
    for key, value in opt.state_dict().items():  # nothing was half-loaded
        np.testing.assert_array_equal(value, before[key])


def test_optimizer_state_of_another_optimizer_raises() -> None:
    sgd = SGD([Parameter(np.zeros(3))], lr=0.1, momentum=0.9)
    with pytest.raises(CheckpointError, match=r"missing keys \['exp_avg.0', 'exp_avg_sq.0'\]; unexpected keys "
                                              r"\['momentum_buffer.0'\]"):
        Adam([Parameter(np.zeros(3))]).load_state_dict(sgd.state_dict())
    with pytest.raises(CheckpointError, match="expected a state dict mapping names to arrays, received list"):
        sgd.load_state_dict([("lr", np.array(0.1))])


def test_many_missing_keys_are_summarised() -> None:
    big = Adam([Parameter(np.zeros(1)) for _ in range(10)])
    with pytest.raises(CheckpointError, match=r"missing keys \[.*, \.\.\. \(14 more\)\]"):
        big.load_state_dict({"lr": np.array(0.1), "step_count": np.array(0)})


def test_bad_schedule_state_raises() -> None:
    opt = SGD([Parameter(np.zeros(1))], lr=0.1)
    warm = LinearWarmup(opt, 3, then=CosineAnnealingLR(opt, 10))
    state = warm.state_dict()
    assert sorted(state) == ["base_lr", "step_count", "then.base_lr", "then.step_count"]
    with pytest.raises(CheckpointError, match=r"LinearWarmup\(warmup_steps=3.*missing keys \['then.base_lr'"):
        warm.load_state_dict({k: v for k, v in state.items() if not k.startswith("then.")})
    with pytest.raises(CheckpointError, match=r"StepLR\(step_size=2, gamma=0.1\): .*unexpected keys"):
        StepLR(opt, 2).load_state_dict(state)
    with pytest.raises(CheckpointError, match="state 'step_count' expected an integer array"):
        warm.load_state_dict({**state, "step_count": np.array(1.5)})
    with pytest.raises(CheckpointError, match="state 'base_lr' expected a finite non-negative number"):
        warm.load_state_dict({**state, "base_lr": np.array(np.inf)})
