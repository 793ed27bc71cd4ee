"""Build an optimizer or a schedule from a name and a few numbers, as the CLI and trainer config give them."""

from __future__ import annotations

from collections.abc import Iterable

from stridenet.nn.layer import Parameter
from stridenet.optim.adam import Adam, AdamW
from stridenet.optim.onecycle import OneCycleLR
from stridenet.optim.optimizer import Optimizer, check_int
from stridenet.optim.schedule import ConstantLR, CosineAnnealingLR, LinearWarmup, Schedule, StepLR
from stridenet.optim.sgd import SGD

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine", "onecycle")


def _lookup(kind: str, name: str, valid: tuple[str, ...]) -> str:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(valid)}")
    return key


def build_optimizer(name: str, params: Iterable[Parameter], lr: float, weight_decay: float = 0.0,
                    momentum: float = 0.9) -> Optimizer:
    """Build an optimizer by name.

    Args:
        name: 'sgd', 'adam' or 'adamw' (case-insensitive).
        params: parameters to optimize.
        lr: learning rate.
        weight_decay: L2 penalty (sgd, adam) or decoupled decay (adamw). Default: 0.
        momentum: SGD momentum, or beta1 for adam/adamw (beta2 stays 0.999). Default: 0.9.

    Returns:
        ``SGD(params, lr, momentum, weight_decay=...)``, ``Adam(params, lr, betas=(momentum, 0.999), ...)``
        or ``AdamW(...)`` likewise.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or an out-of-range value.

    Example:
        >>> import numpy as np
        >>> print(build_optimizer("adamw", [Parameter(np.zeros(3))], lr=1e-3, weight_decay=0.05))
        AdamW(lr=0.001, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.05, amsgrad=False)
    """
    key = _lookup("optimizer", name, OPTIMIZERS)
    if key == "sgd":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay)
    cls = Adam if key == "adam" else AdamW
    return cls(params, lr, betas=(momentum, 0.999), weight_decay=weight_decay)


def build_schedule(name: str, optimizer: Optimizer, total_steps: int, steps_per_epoch: int,
                   warmup_steps: int = 0, *, warmup_start_factor: float = 0.1, gamma: float = 0.1,
                   step_epochs: int | None = None, eta_min: float = 0.0, max_lr: float | None = None,
                   pct_start: float = 0.3) -> Schedule:
    """Build a schedule by name, to be stepped once per optimizer step.

    Args:
        name: 'constant', 'step', 'cosine' or 'onecycle' (case-insensitive).
        optimizer: the optimizer; its ``lr`` is the base (or, for onecycle, default peak) learning rate.
        total_steps: optimizer steps in the whole run, at least 1.
        steps_per_epoch: optimizer steps per epoch, at least 1 (used by 'step', which decays per epoch).
        warmup_steps: linear warm-up steps before the schedule, 0 for none; must be below ``total_steps``.
            The schedule after the warm-up spans the remaining steps. Not for 'onecycle', which has its own.
        warmup_start_factor: the warm-up starts at this fraction of the lr. Default: 0.1.
        gamma: 'step' decay factor. Default: 0.1.
        step_epochs: 'step' decays every this many epochs; None: every third of the run (at least 1).
        eta_min: 'cosine' final learning rate. Default: 0.
        max_lr: 'onecycle' peak learning rate; None: the optimizer's lr.
        pct_start: 'onecycle' fraction of the run spent rising. Default: 0.3.

    Returns:
        The schedule; it has already set ``optimizer.lr`` for the first step.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones), warm-up with 'onecycle',
            ``warmup_steps >= total_steps``, or an out-of-range value.

    Example:
        >>> import numpy as np
        >>> opt = build_optimizer("sgd", [Parameter(np.zeros(3))], lr=0.1)
        >>> print(build_schedule("cosine", opt, total_steps=100, steps_per_epoch=10, warmup_steps=5))
        LinearWarmup(warmup_steps=5, start_factor=0.1, then=CosineAnnealingLR(T_max=95, eta_min=0.0))
    """
    key = _lookup("schedule", name, SCHEDULES)
    check_int("build_schedule", "total_steps", total_steps, 1)
    check_int("build_schedule", "steps_per_epoch", steps_per_epoch, 1)
    check_int("build_schedule", "warmup_steps", warmup_steps, 0)
    if warmup_steps >= total_steps:
        raise ValueError(f"build_schedule: expected warmup_steps below total_steps={total_steps}, "
                         f"received {warmup_steps}")
    if key == "onecycle":
        if warmup_steps:
            raise ValueError(f"build_schedule: 'onecycle' has its own warm-up (pct_start); expected "
                             f"warmup_steps=0, received {warmup_steps}")
        cycle_momentum = isinstance(optimizer, Adam) or getattr(optimizer, "momentum", 0) > 0
        return OneCycleLR(optimizer, optimizer.lr if max_lr is None else max_lr, total_steps,
                          pct_start=pct_start, cycle_momentum=cycle_momentum)
    remaining = total_steps - warmup_steps
    schedule: Schedule
    if key == "constant":
        schedule = ConstantLR(optimizer)
    elif key == "step":
        if step_epochs is None:
            epochs = -(-total_steps // steps_per_epoch)
            step_epochs = max(1, epochs // 3)
        check_int("build_schedule", "step_epochs", step_epochs, 1)
        schedule = StepLR(optimizer, step_size=step_epochs * steps_per_epoch, gamma=gamma)
    else:
        schedule = CosineAnnealingLR(optimizer, T_max=remaining, eta_min=eta_min)
    if warmup_steps == 0:
        return schedule
    return LinearWarmup(optimizer, warmup_steps, start_factor=warmup_start_factor, then=schedule)
