"""Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay."""

from __future__ import annotations

from collections.abc import Iterable

from stridenet.nn.layer import Parameter
from stridenet.optim.optimizer import Optimizer, check_range


class SGD(Optimizer):
    """Stochastic gradient descent, step for step the same as ``torch.optim.SGD``.

    For each parameter ``p`` with gradient ``g``, at step ``t``::

        g = g + weight_decay * p                        (if weight_decay != 0)
        b = g                            at t = 1       (if momentum != 0)
        b = momentum * b + (1 - dampening) * g   after
        g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    The first step copies the gradient into the momentum buffer without dampening, as PyTorch does.
    ``param.grad`` itself is never modified.

    Args:
        params: parameters to optimize.
        lr: learning rate, at least 0.
        momentum: momentum factor in [0, 1). Default: 0.
        dampening: dampening for momentum in [0, 1]. Default: 0.
        weight_decay: L2 penalty added to the gradient, at least 0. Default: 0.
        nesterov: use Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``. Default: False.

    State dict:
        ``lr``, ``step_count`` and, when ``momentum > 0``, ``momentum_buffer.<i>`` for each parameter.

    Raises:
        ValueError: for a hyperparameter out of range, or ``nesterov`` without momentum or with dampening.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.ones(3, dtype=np.float32))
        >>> opt = SGD([w], lr=0.1, momentum=0.9)
        >>> w.grad[...] = 1.0
        >>> opt.step()
        >>> print(w.data, w.data.dtype)
        [0.9 0.9 0.9] float32
    """

    _buffer_names = ("momentum_buffer",)

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        check_range("SGD", "momentum", momentum, 0.0, 1.0, include_high=False)
        check_range("SGD", "dampening", dampening, 0.0, 1.0)
        check_range("SGD", "weight_decay", weight_decay, 0.0, float("inf"))
        if nesterov and (momentum == 0 or dampening != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening = 0, "
                             f"received momentum={momentum}, dampening={dampening}")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        super().__init__(params, lr)

    def _active_buffers(self) -> tuple[str, ...]:
        return self._buffer_names if self.momentum != 0 else ()

    def _update(self, index: int, param: Parameter) -> None:
        lr, momentum = float(self.lr), float(self.momentum)
        grad = param.grad
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param.data
        if momentum != 0:
            if "momentum_buffer" not in self.state:
                raise RuntimeError("SGD: momentum was set after building with momentum=0, so there is no "
                                   "momentum buffer; build the optimizer with momentum > 0")
            buf = self.state["momentum_buffer"][index]
            if self.step_count == 1:
                buf[...] = grad
            else:
                buf *= momentum
                buf += (1 - self.dampening) * grad
            grad = grad + momentum * buf if self.nesterov else buf
        param.data += -lr * grad

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}
