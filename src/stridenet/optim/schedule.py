"""Learning-rate schedules: a closed-form ``lr_at(t)`` per schedule, stepped per optimizer step or per epoch.

A schedule sets ``optimizer.lr`` when it is built (to ``lr_at(0)``) and after every ``step()`` (to
``lr_at(t)``, ``t`` being the number of ``step()`` calls so far). Whether one ``t`` is an optimizer step or
an epoch is up to the caller: call ``schedule.step()`` after each ``optimizer.step()`` and give the
lengths in optimizer steps, or after each epoch and give them in epochs. The usual loop::

    for x, y in loader:
        ...                # forward, backward
        optimizer.step()   # uses schedule.lr
        schedule.step()    # sets the lr of the next step

Every schedule computes the learning rate from ``t`` in closed form, so a resumed run reproduces the
original exactly (PyTorch's schedulers update recursively and drift by rounding, ~1e-15 relative).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from stridenet.errors import CheckpointError
from stridenet.optim.optimizer import (
    Optimizer,
    StateDict,
    check_int,
    check_range,
    check_state_dict,
    scalar_from_state,
)


class Schedule:
    """Base class of the learning-rate schedules.

    Subclasses implement ``lr_at(t)``. The base learning rate is the optimizer's ``lr`` when the schedule
    is built.

    Args:
        optimizer: the optimizer whose ``lr`` the schedule sets.

    Attributes:
        optimizer: the optimizer.
        base_lr: ``optimizer.lr`` when the schedule was built.
        step_count: number of ``step()`` calls so far.

    State dict:
        ``step_count`` and ``base_lr`` as 0-d arrays (``LinearWarmup`` adds its inner schedule's state
        under ``then.``).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, received {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.step_count = 0

    def lr_at(self, t: int) -> float:
        """Learning rate after ``t`` calls of ``step()``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement lr_at")

    @property
    def lr(self) -> float:
        """The learning rate of the next optimizer step."""
        return self.lr_at(self.step_count)

    def step(self) -> None:
        """Advance one step (or epoch) and set the optimizer's learning rate for the next one."""
        self.lr_at(self.step_count + 1)  # raises before changing anything when past the end
        self.step_count += 1
        self._apply()

    def _apply(self) -> None:
        """Write the values for the current ``step_count`` into the optimizer."""
        self.optimizer.lr = self.lr

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        """Return the flat state: ``step_count`` (int64) and ``base_lr`` (float64) as 0-d arrays."""
        return {"step_count": np.array(self.step_count, dtype=np.int64),
                "base_lr": np.array(self.base_lr, dtype=np.float64)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a state saved by ``state_dict()`` and set the optimizer's learning rate to match.

        Raises:
            CheckpointError: when keys are missing or unexpected, or values are not valid numbers.
        """
        previous = self.state_dict()
        check_state_dict(repr(self), state, previous)
        try:
            self._load_checked(state)
        except CheckpointError:
            self._load_checked(previous)  # a value of a nested schedule was bad: leave everything as it was
            raise
        self._apply()

    def _load_checked(self, state: Mapping[str, np.ndarray]) -> None:
        self.step_count = scalar_from_state(repr(self), state, "step_count", integer=True)
        self.base_lr = scalar_from_state(repr(self), state, "base_lr")

    def _hyperparameters(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


class ConstantLR(Schedule):
    """Multiply the learning rate by ``factor`` for the first ``total_iters`` steps, then keep it constant.

    With the defaults it changes nothing, so a trainer can always hold a schedule. Same sequence as
    ``torch.optim.lr_scheduler.ConstantLR(optimizer, factor, total_iters)``::

        lr_at(t) = base_lr * factor   if t < total_iters   else   base_lr

    Args:
        optimizer: the optimizer whose ``lr`` is set.
        factor: multiplier in [0, 1] during the first ``total_iters`` steps. Default: 1.
        total_iters: number of steps the factor applies, at least 0. Default: 0.

    Example:
        >>> from stridenet.nn.layer import Parameter; from stridenet.optim import SGD; import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=0.1)
        >>> print(ConstantLR(opt).lr)
        0.1
    """

    def __init__(self, optimizer: Optimizer, factor: float = 1.0, total_iters: int = 0) -> None:
        check_range("ConstantLR", "factor", factor, 0.0, 1.0)
        check_int("ConstantLR", "total_iters", total_iters, 0)
        super().__init__(optimizer)
        self.factor = float(factor)
        self.total_iters = int(total_iters)
        self._apply()

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.factor if t < self.total_iters else self.base_lr

    def _hyperparameters(self) -> dict[str, object]:
        return {"factor": self.factor, "total_iters": self.total_iters}


class StepLR(Schedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` steps, like ``torch``'s ``StepLR``::

        lr_at(t) = base_lr * gamma ** (t // step_size)

    Args:
        optimizer: the optimizer whose ``lr`` is set.
        step_size: steps (or epochs) between decays, at least 1.
        gamma: decay factor, in [0, 1]. Default: 0.1.

    Example:
        >>> from stridenet.nn.layer import Parameter; from stridenet.optim import SGD; import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> schedule = StepLR(opt, step_size=2, gamma=0.5)
        >>> print([schedule.lr_at(t) for t in range(5)])
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        check_int("StepLR", "step_size", step_size, 1)
        check_range("StepLR", "gamma", gamma, 0.0, 1.0)
        super().__init__(optimizer)
        self.step_size = int(step_size)
        self.gamma = float(gamma)
        self._apply()

    def lr_at(self, t: int) -> float:
        return self.base_lr * self.gamma ** (t // self.step_size)

    def _hyperparameters(self) -> dict[str, object]:
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(Schedule):
    """Anneal from the base learning rate to ``eta_min`` along half a cosine over ``T_max`` steps::

        lr_at(t) = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    This is the closed form of ``torch``'s ``CosineAnnealingLR`` (which updates recursively and so agrees
    to rounding, ~1e-15 relative). Past ``T_max`` the cosine continues, rising again, as in torch.

    Args:
        optimizer: the optimizer whose ``lr`` is set.
        T_max: steps (or epochs) from the base learning rate to ``eta_min``, at least 1.
        eta_min: final learning rate, at least 0. Default: 0.

    Example:
        >>> from stridenet.nn.layer import Parameter; from stridenet.optim import SGD; import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> schedule = CosineAnnealingLR(opt, T_max=4)
        >>> print([round(schedule.lr_at(t), 4) for t in range(5)])
        [1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        check_int("CosineAnnealingLR", "T_max", T_max, 1)
        check_range("CosineAnnealingLR", "eta_min", eta_min, 0.0, math.inf)
        super().__init__(optimizer)
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        self._apply()

    def lr_at(self, t: int) -> float:
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2

    def _hyperparameters(self) -> dict[str, object]:
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class LinearWarmup(Schedule):
    """Ramp the learning rate up linearly for ``warmup_steps``, then hand over to another schedule.

    With ``target = then.lr_at(0)`` (or the optimizer's ``lr`` when ``then`` is None)::

        lr_at(t) = target * (start_factor + (1 - start_factor) * t / warmup_steps)   for t < warmup_steps
        lr_at(t) = then.lr_at(t - warmup_steps)                                      after

    the same sequence as ``torch``'s ``SequentialLR([LinearLR(optimizer, start_factor, total_iters=W),
    then], milestones=[W])``. Build ``then`` first, on the same optimizer, and give its length without the
    warm-up (e.g. ``T_max = total_steps - warmup_steps``). Only step the warm-up; it steps ``then``.

    Args:
        optimizer: the optimizer whose ``lr`` is set.
        warmup_steps: length of the ramp, at least 1.
        start_factor: fraction of the target learning rate used at ``t = 0``, in [0, 1]. Default: 0.1.
        then: the schedule that follows the warm-up; None keeps the target learning rate. Default: None.

    Example:
        >>> from stridenet.nn.layer import Parameter; from stridenet.optim import SGD; import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
        >>> schedule = LinearWarmup(opt, 4, start_factor=0.2, then=StepLR(opt, step_size=2, gamma=0.5))
        >>> print([round(schedule.lr_at(t), 4) for t in range(9)])
        [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.1,
                 then: Schedule | None = None) -> None:
        check_int("LinearWarmup", "warmup_steps", warmup_steps, 1)
        check_range("LinearWarmup", "start_factor", start_factor, 0.0, 1.0)
        if then is not None and (not isinstance(then, Schedule) or then.optimizer is not optimizer):
            raise ValueError(f"LinearWarmup: expected `then` to be a Schedule of the same optimizer, "
                             f"received {then!r}")
        super().__init__(optimizer)
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        self.then = then
        self._apply()

    def lr_at(self, t: int) -> float:
        if t >= self.warmup_steps:
            return self.then.lr_at(t - self.warmup_steps) if self.then is not None else self.base_lr
        target = self.then.lr_at(0) if self.then is not None else self.base_lr
        return target * (self.start_factor + (1 - self.start_factor) * t / self.warmup_steps)

    def _apply(self) -> None:
        if self.then is not None:
            self.then.step_count = max(0, self.step_count - self.warmup_steps)
            self.then._apply()
        self.optimizer.lr = self.lr

    def state_dict(self) -> StateDict:
        state = super().state_dict()
        if self.then is not None:
            state.update({f"then.{k}": v for k, v in self.then.state_dict().items()})
        return state

    def _load_checked(self, state: Mapping[str, np.ndarray]) -> None:
        super()._load_checked(state)
        if self.then is not None:
            self.then._load_checked({k[len("then."):]: v for k, v in state.items() if k.startswith("then.")})

    def _hyperparameters(self) -> dict[str, object]:
        return {"warmup_steps": self.warmup_steps, "start_factor": self.start_factor, "then": self.then}

