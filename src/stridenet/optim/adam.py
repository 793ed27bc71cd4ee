"""Adam and AdamW: adaptive moment estimation, with L2 or decoupled weight decay and optional AMSGrad."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from stridenet.nn.layer import Parameter
from stridenet.optim.optimizer import Optimizer, check_range


class Adam(Optimizer):
    """Adam, step for step the same as ``torch.optim.Adam`` (default single-tensor implementation).

    For each parameter ``p`` with gradient ``g``, at step ``t`` (counting from 1)::

        g = g + weight_decay * p                       (Adam: L2 penalty in the gradient)
        p = p * (1 - lr * weight_decay)                (AdamW: decoupled decay instead)
        m = beta1 * m + (1 - beta1) * g                (as torch: m.lerp_(g, 1 - beta1))
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                          (if amsgrad; v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    ``param.grad`` itself is never modified.

    Args:
        params: parameters to optimize.
        lr: learning rate, at least 0. Default: 1e-3.
        betas: ``(beta1, beta2)``, decay rates of the first and second moment averages, each in [0, 1).
            Default: (0.9, 0.999).
        eps: added to the denominator, at least 0. Default: 1e-8.
        weight_decay: L2 penalty added to the gradient, at least 0. Default: 0.
        amsgrad: use the running maximum of the second moment (AMSGrad). Default: False.

    State dict:
        ``lr``, ``step_count``, ``exp_avg.<i>``, ``exp_avg_sq.<i>`` and with amsgrad ``max_exp_avg_sq.<i>``.

    Raises:
        ValueError: for a hyperparameter out of range.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.zeros(2, dtype=np.float32))
        >>> opt = Adam([w], lr=0.1)
        >>> w.grad[...] = [3.0, -5.0]
        >>> opt.step()
        >>> print(w.data.round(6))
        [-0.1  0.1]
    """

    _buffer_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled_weight_decay = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False) -> None:
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: expected betas as a pair (beta1, beta2), received {betas!r}")
        check_range(name, "betas[0]", betas[0], 0.0, 1.0, include_high=False)
        check_range(name, "betas[1]", betas[1], 0.0, 1.0, include_high=False)
        check_range(name, "eps", eps, 0.0, float("inf"))
        check_range(name, "weight_decay", weight_decay, 0.0, float("inf"))
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)
        super().__init__(params, lr)

    def _active_buffers(self) -> tuple[str, ...]:
        return self._buffer_names if self.amsgrad else self._buffer_names[:2]

    def _update(self, index: int, param: Parameter) -> None:
        lr = float(self.lr)
        beta1, beta2 = float(self.betas[0]), float(self.betas[1])
        grad = param.grad
        if self.weight_decay != 0:
            if self._decoupled_weight_decay:
                param.data *= 1 - lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param.data
        exp_avg = self.state["exp_avg"][index]
        exp_avg_sq = self.state["exp_avg_sq"][index]

        # The same arithmetic as torch, in place, through one temporary (fewer passes over memory).
        tmp = np.subtract(grad, exp_avg)
        # torch's lerp: the formula depends on which side of 0.5 the weight is, for accuracy
        weight = 1 - beta1
        if abs(weight) < 0.5:
            tmp *= weight
            exp_avg += tmp
        else:
            tmp *= 1 - param.data.dtype.type(weight)
            np.subtract(grad, tmp, out=exp_avg)
        exp_avg_sq *= beta2
        np.multiply(grad, 1 - beta2, out=tmp)
        tmp *= grad
        exp_avg_sq += tmp
        step = self.step_count
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.amsgrad:
            second = self.state["max_exp_avg_sq"][index]
            np.maximum(second, exp_avg_sq, out=second)
        else:
            second = exp_avg_sq
        denom = np.sqrt(second, out=tmp)
        denom /= bias_correction2_sqrt
        denom += self.eps
        update = np.multiply(exp_avg, -step_size)
        update /= denom
        param.data += update

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                "amsgrad": self.amsgrad}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, step for step the same as ``torch.optim.AdamW``.

    Instead of adding ``weight_decay * p`` to the gradient, each step first shrinks the parameter,
    ``p = p * (1 - lr * weight_decay)``, then applies the Adam update (see ``Adam``).

    Args:
        params: parameters to optimize.
        lr: learning rate, at least 0. Default: 1e-3.
        betas: ``(beta1, beta2)``, each in [0, 1). Default: (0.9, 0.999).
        eps: added to the denominator, at least 0. Default: 1e-8.
        weight_decay: decoupled weight decay, at least 0. Default: 1e-2.
        amsgrad: use the running maximum of the second moment (AMSGrad). Default: False.

    Raises:
        ValueError: for a hyperparameter out of range.

    Example:
        >>> import numpy as np
        >>> w = Parameter(np.ones(2))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
        >>> opt.step()  # zero gradient: only the decay acts
        >>> print(w.data)
        [0.95 0.95]
    """

    _decoupled_weight_decay = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
