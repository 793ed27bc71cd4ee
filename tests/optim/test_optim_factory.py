"""build_optimizer / build_schedule by name, and the examples in the optim docstrings."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import stridenet.optim.adam
import stridenet.optim.factory
import stridenet.optim.onecycle
import stridenet.optim.schedule
import stridenet.optim.sgd
from stridenet.nn.layer import Parameter
from stridenet.optim import (
    OPTIMIZERS,
    SCHEDULES,
    SGD,
    Adam,
    AdamW,
    ConstantLR,
    CosineAnnealingLR,
    LinearWarmup,
    OneCycleLR,
    StepLR,
    build_optimizer,
    build_schedule,
)


def _params() -> list[Parameter]:
    return [Parameter(np.zeros((2, 3), dtype=np.float32)), Parameter(np.zeros(3, dtype=np.float32))]


def test_build_optimizer_by_name() -> None:
    sgd = build_optimizer("sgd", _params(), lr=0.1, weight_decay=5e-4)
    assert type(sgd) is SGD and (sgd.lr, sgd.momentum, sgd.weight_decay) == (0.1, 0.9, 5e-4)
    adam = build_optimizer("Adam", _params(), lr=1e-3, momentum=0.8)
    assert type(adam) is Adam and adam.betas == (0.8, 0.999) and adam.weight_decay == 0.0
    adamw = build_optimizer(" ADAMW ", _params(), lr=1e-3, weight_decay=0.05)
    assert type(adamw) is AdamW and adamw.weight_decay == 0.05
    assert OPTIMIZERS == ("sgd", "adam", "adamw")


@pytest.mark.parametrize(("build", "kind"), [
    (lambda: build_optimizer("rmsprop", _params(), lr=0.1), "optimizer 'rmsprop'; valid names: sgd, adam, adamw"),
    (lambda: build_schedule("linear", SGD(_params(), lr=0.1), 10, 2),
     "schedule 'linear'; valid names: constant, step, cosine, onecycle"),
])
def test_unknown_names_list_the_valid_ones_on_one_line(build, kind: str) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == f"unknown {kind}"
    assert "\n" not in str(info.value)


def _lrs(schedule, steps: int) -> list[float]:
    out = [schedule.optimizer.lr]
    for _ in range(steps):
        schedule.step()
        out.append(schedule.optimizer.lr)
    return out


def test_build_constant() -> None:
    opt = SGD(_params(), lr=0.1)
    schedule = build_schedule("constant", opt, total_steps=10, steps_per_epoch=5)
    assert isinstance(schedule, ConstantLR) and _lrs(schedule, 10) == [0.1] * 11
    warm = build_schedule("constant", SGD(_params(), lr=0.1), 10, 5, warmup_steps=4, warmup_start_factor=0.5)
    assert isinstance(warm, LinearWarmup) and isinstance(warm.then, ConstantLR)
    np.testing.assert_allclose(_lrs(warm, 10), [0.05, 0.0625, 0.075, 0.0875] + [0.1] * 7)


def test_build_step_decays_per_epoch() -> None:
    schedule = build_schedule("step", SGD(_params(), lr=1.0), total_steps=30, steps_per_epoch=5, step_epochs=2,
                              gamma=0.5)
    assert isinstance(schedule, StepLR) and schedule.step_size == 10
    # default: every third of the run, in whole epochs: 6 epochs -> every 2 epochs
    default = build_schedule("step", SGD(_params(), lr=1.0), total_steps=30, steps_per_epoch=5)
    assert default.step_size == 10 and default.gamma == 0.1
    assert build_schedule("step", SGD(_params(), lr=1.0), total_steps=4, steps_per_epoch=5).step_size == 5


def test_build_cosine_with_warmup_ends_at_eta_min() -> None:
    opt = SGD(_params(), lr=0.2)
    schedule = build_schedule("cosine", opt, total_steps=50, steps_per_epoch=10, warmup_steps=10, eta_min=1e-3)
    assert isinstance(schedule, LinearWarmup) and isinstance(schedule.then, CosineAnnealingLR)
    lrs = _lrs(schedule, 50)
    assert math.isclose(lrs[0], 0.02) and math.isclose(lrs[10], 0.2) and math.isclose(lrs[50], 1e-3)
    assert np.all(np.diff(lrs[:11]) > 0) and np.all(np.diff(lrs[10:]) <= 0)


def test_build_onecycle() -> None:
    sgd = SGD(_params(), lr=0.4, momentum=0.9)
    schedule = build_schedule("onecycle", sgd, total_steps=100, steps_per_epoch=10)
    assert isinstance(schedule, OneCycleLR) and schedule.max_lr == 0.4 and schedule.cycle_momentum
    assert math.isclose(sgd.lr, 0.4 / 25) and sgd.momentum == 0.95
    plain = SGD(_params(), lr=0.4)
    no_momentum = build_schedule("onecycle", plain, 100, 10, max_lr=1.0, pct_start=0.2)
    assert not no_momentum.cycle_momentum and plain.momentum == 0.0 and math.isclose(plain.lr, 1.0 / 25)
    assert build_schedule("onecycle", Adam(_params()), 100, 10).cycle_momentum


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "onecycle", "warmup_steps": 5}, "'onecycle' has its own warm-up"),
    ({"name": "cosine", "warmup_steps": 20}, "expected warmup_steps below total_steps=20, received 20"),
    ({"name": "cosine", "warmup_steps": -1}, "expected warmup_steps to be an integer >= 0"),
    ({"name": "step", "total_steps": 0}, "expected total_steps to be an integer >= 1"),
    ({"name": "step", "steps_per_epoch": 0}, "expected steps_per_epoch to be an integer >= 1"),
    ({"name": "step", "step_epochs": 0}, "expected step_epochs to be an integer >= 1"),
])
def test_build_schedule_bad_arguments(kwargs: dict, message: str) -> None:
    args = {"optimizer": SGD(_params(), lr=0.1), "total_steps": 20, "steps_per_epoch": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_schedule(**args)
    assert SCHEDULES == ("constant", "step", "cosine", "onecycle")


@pytest.mark.parametrize("module", [stridenet.optim.sgd, stridenet.optim.adam, stridenet.optim.schedule,
                                    stridenet.optim.onecycle, stridenet.optim.factory], ids=lambda m: m.__name__)
def test_docstring_examples(module) -> None:
    result = doctest.testmod(module, extraglobs={"Parameter": Parameter}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
