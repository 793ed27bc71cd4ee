"""The one-cycle policy (Smith & Topin, 2018): warm up to ``max_lr``, then anneal far below the start."""

from __future__ import annotations

import math

from stridenet.optim.optimizer import Optimizer, check_int, check_range
from stridenet.optim.schedule import Schedule


def _anneal_cos(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    """Straight line from ``start`` to ``end`` as ``pct`` goes from 0 to 1."""
    return (end - start) * pct + start


class OneCycleLR(Schedule):
    """One-cycle learning rate (and momentum), the same sequence as ``torch``'s ``OneCycleLR``.

    The learning rate starts at ``max_lr / div_factor``, rises to ``max_lr`` over the first
    ``pct_start * total_steps`` steps, then falls to ``max_lr / div_factor / final_div_factor`` at step
    ``total_steps - 1``. With ``three_phase`` it first falls back to the start value symmetrically, and
    only the last phase goes below it. Phases end at steps (as torch, counted from 0)::

        two phases:   pct_start * total_steps - 1,  total_steps - 1
        three phases: pct_start * total_steps - 1,  2 * pct_start * total_steps - 2,  total_steps - 1

    and within a phase the value moves from its start to its end by ``anneal_strategy`` ('cos' or
    'linear'). With ``cycle_momentum`` the momentum (SGD's ``momentum``, or Adam's ``beta1``) moves the
    opposite way, between ``max_momentum`` and ``base_momentum``. The optimizer's own ``lr`` (and momentum)
    are overwritten when the schedule is built. Stepping past ``total_steps`` raises, as in torch.

    Args:
        optimizer: the optimizer whose ``lr`` (and momentum) is set.
        max_lr: peak learning rate, > 0.
        total_steps: number of steps (or epochs) in the cycle, at least 2.
        pct_start: fraction of the cycle spent rising, in [0, 1]. Default: 0.3.
        anneal_strategy: 'cos' or 'linear'. Default: 'cos'.
        div_factor: start lr = ``max_lr / div_factor``, > 0. Default: 25.
        final_div_factor: final lr = start lr / ``final_div_factor``, > 0. Default: 1e4.
        three_phase: rise, fall back to the start lr, then anneal below it. Default: False.
        cycle_momentum: cycle the momentum inversely to the lr. Needs SGD with momentum > 0, or Adam/AdamW.
            Default: True.
        base_momentum: lowest momentum (at the peak lr), in [0, 1). Default: 0.85.
        max_momentum: highest momentum (at the ends), in [0, 1). Default: 0.95.

    Raises:
        ValueError: for an argument out of range, a phase with no steps (``pct_start * total_steps`` must
            exceed 1; with ``three_phase``, ``2 * pct_start * total_steps`` must also be below
            ``total_steps + 1``), or ``cycle_momentum`` with an optimizer that has no momentum.

    Example:
        >>> from stridenet.nn.layer import Parameter; from stridenet.optim import SGD; import numpy as np
        >>> opt = SGD([Parameter(np.zeros(1))], lr=0.1, momentum=0.9)
        >>> schedule = OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="linear")
        >>> print([f"{schedule.lr_at(t):.0e}" for t in (0, 1, 2, 9)], opt.momentum)
        ['4e-02', '5e-01', '1e+00', '4e-06'] 0.95
    """

    def __init__(self, optimizer: Optimizer, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95) -> None:
        name = "OneCycleLR"
        check_int(name, "total_steps", total_steps, 2)
        check_range(name, "pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"{name}: expected anneal_strategy 'cos' or 'linear', received {anneal_strategy!r}")
        for arg, value in (("max_lr", max_lr), ("div_factor", div_factor),
                           ("final_div_factor", final_div_factor)):
            check_range(name, arg, value, 0.0, math.inf)
            if value == 0:
                raise ValueError(f"{name}: expected {arg} > 0, received {value!r}")
        check_range(name, "base_momentum", base_momentum, 0.0, 1.0, include_high=False)
        check_range(name, "max_momentum", max_momentum, 0.0, 1.0, include_high=False)

        rise = float(pct_start * total_steps)
        ends = [rise - 1, 2 * rise - 2, total_steps - 1] if three_phase else [rise - 1, total_steps - 1]
        if any(b <= a for a, b in zip([0.0, *ends[:-1]], ends, strict=True)):
            raise ValueError(f"{name}: phase end steps {ends} must increase from 0 so every phase has steps; "
                             f"received pct_start={pct_start}, total_steps={total_steps}, "
                             f"three_phase={three_phase}")

        self.use_beta1 = hasattr(optimizer, "betas")
        if cycle_momentum and not self.use_beta1 and getattr(optimizer, "momentum", 0) == 0:
            raise ValueError(f"{name}: cycle_momentum=True needs an optimizer with momentum (SGD with "
                             f"momentum > 0, Adam, AdamW), received {optimizer!r}; pass cycle_momentum=False")
        super().__init__(optimizer)
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.anneal_strategy = anneal_strategy
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.three_phase = bool(three_phase)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = float(base_momentum)
        self.max_momentum = float(max_momentum)

        initial_lr = self.max_lr / self.div_factor
        min_lr = initial_lr / self.final_div_factor
        lo, hi = self.base_momentum, self.max_momentum
        if three_phase:
            values = [(initial_lr, self.max_lr, hi, lo), (self.max_lr, initial_lr, lo, hi),
                      (initial_lr, min_lr, hi, hi)]
        else:
            values = [(initial_lr, self.max_lr, hi, lo), (self.max_lr, min_lr, lo, hi)]
        # (end_step, start_lr, end_lr, start_momentum, end_momentum) per phase
        self._phases = [(end, *vals) for end, vals in zip(ends, values, strict=True)]
        self._anneal = _anneal_cos if anneal_strategy == "cos" else _anneal_linear
        self._apply()

    def _phase_values(self, t: int) -> tuple[float, float]:
        """(lr, momentum) after ``t`` steps."""
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: tried to step {t} times, but total_steps={self.total_steps}")
        start_step = 0.0
        for i, (end_step, start_lr, end_lr, start_m, end_m) in enumerate(self._phases):
            if t <= end_step or i == len(self._phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                return self._anneal(start_lr, end_lr, pct), self._anneal(start_m, end_m, pct)
            start_step = end_step
        raise AssertionError("unreachable: the last phase always matches")

    def lr_at(self, t: int) -> float:
        return self._phase_values(t)[0]

    def momentum_at(self, t: int) -> float:
        """Momentum (or Adam's beta1) after ``t`` steps, when ``cycle_momentum`` is on."""
        return self._phase_values(t)[1]

    def _apply(self) -> None:
        lr, momentum = self._phase_values(self.step_count)
        self.optimizer.lr = lr
        if self.cycle_momentum:
            if self.use_beta1:
                self.optimizer.betas = (momentum, self.optimizer.betas[1])
            else:
                self.optimizer.momentum = momentum

    def _hyperparameters(self) -> dict[str, object]:
        return {"max_lr": self.max_lr, "total_steps": self.total_steps, "pct_start": self.pct_start,
                "anneal_strategy": self.anneal_strategy, "three_phase": self.three_phase,
                "cycle_momentum": self.cycle_momentum}
