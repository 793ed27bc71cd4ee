"""The optimizer contract: ``Optimizer`` and the flat state-dict helpers shared with schedules.

An optimizer holds a list of ``Parameter``s and a learning rate ``lr``. Each ``step()`` reads every
``param.grad`` and updates ``param.data`` in place, in the parameter's own dtype (float32 stays float32),
exactly as the matching ``torch.optim`` class does with its default single-tensor implementation.

State dicts are *flat*: string keys, numpy array values (scalars as 0-d arrays), so a checkpoint can be
written with ``np.savez(path, **state, allow_pickle=False)``. Per-parameter buffers are keyed
``<buffer>.<index>``, e.g. ``momentum_buffer.0`` or ``exp_avg.3``, with the index of the parameter in the
list the optimizer was built with.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from stridenet.errors import CheckpointError
from stridenet.nn.layer import Parameter

StateDict = dict[str, np.ndarray]


def _list_keys(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def check_state_dict(owner: str, state: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Check that ``state`` has exactly the keys of ``expected``, with the same shapes and kinds of dtype.

    Args:
        owner: description of the object loading the state, used to start error messages.
        state: the state dict being loaded (a dict or the mapping ``np.load`` returns for an ``.npz``).
        expected: a state dict of the right layout, typically the loader's own ``state_dict()``.

    Raises:
        CheckpointError: when ``state`` is not a mapping, a key is missing or unexpected, a value has the
            wrong shape, or a value is not a real number array (integer counters must be integers).
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{owner}: expected a state dict mapping names to arrays, "
                              f"received {type(state).__name__}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_list_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_list_keys(unexpected)}")
        raise CheckpointError(f"{owner}: state dict does not match this optimizer/schedule: {'; '.join(parts)}")
    for key, reference in expected.items():
        value = np.asarray(state[key])
        if value.shape != reference.shape:
            raise CheckpointError(f"{owner}: state {key!r} expected shape {reference.shape}, "
                                  f"received shape {value.shape}")
        allowed = "iu" if reference.dtype.kind in "iu" else "fiu"
        if value.dtype.kind not in allowed:
            kind = "an integer" if allowed == "iu" else "a real number"
            raise CheckpointError(f"{owner}: state {key!r} expected {kind} array, received dtype {value.dtype}")


def scalar_from_state(owner: str, state: Mapping[str, np.ndarray], key: str, *, integer: bool = False) -> float:
    """Read a finite, non-negative 0-d value from a (checked) state dict.

    Raises:
        CheckpointError: when the value is negative or not finite.
    """
    value = np.asarray(state[key]).item()
    if not math.isfinite(value) or value < 0:
        raise CheckpointError(f"{owner}: state {key!r} expected a finite non-negative number, received {value}")
    return int(value) if integer else float(value)


class Optimizer:
    """Base class of the optimizers: holds the parameters, the learning rate and per-parameter buffers.

    Subclasses list their buffers in ``_buffer_names`` (allocated as zeros like each parameter, keyed
    ``<name>.<index>`` in the state dict) and implement ``_update(index, param)``.

    Args:
        params: the parameters to optimize (e.g. ``model.parameters()``); at least one, no repeats.
        lr: learning rate, at least 0. Schedules overwrite ``optimizer.lr`` as training goes on.

    Attributes:
        params: ``list[Parameter]`` in the order given.
        lr: the learning rate the next ``step()`` uses.
        step_count: number of ``step()`` calls so far.
        state: ``dict`` buffer name -> list of arrays, one per parameter, same shape and dtype.

    Raises:
        TypeError: when an element of ``params`` is not a ``Parameter``.
        ValueError: when ``params`` is empty or repeats a parameter, or ``lr`` is negative or not finite.
    """

    _buffer_names: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params: list[Parameter] = list(params)
        name = type(self).__name__
        if not self.params:
            raise ValueError(f"{name}: expected at least one parameter, received an empty list")
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameter objects, received {type(p).__name__} at index {i}")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once in the parameter list")
        check_range(name, "lr", lr, 0.0, math.inf)
        self.lr = float(lr)
        self.step_count = 0
        self.state: dict[str, list[np.ndarray]] = {
            buf: [np.zeros_like(p.data) for p in self.params] for buf in self._active_buffers()
        }

    def _active_buffers(self) -> tuple[str, ...]:
        """Buffers this configuration uses (e.g. no momentum buffer when momentum is 0)."""
        return self._buffer_names

    def _update(self, index: int, param: Parameter) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement _update")

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero (backward passes add into it)."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        """Update every parameter in place from its current ``.grad``, using ``self.lr``."""
        self.step_count += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> StateDict:
        """Return a flat copy of the state: ``lr``, ``step_count`` and ``<buffer>.<index>`` arrays."""
        state: StateDict = {"lr": np.array(self.lr, dtype=np.float64),
                            "step_count": np.array(self.step_count, dtype=np.int64)}
        for buf, arrays in self.state.items():
            for i, array in enumerate(arrays):
                state[f"{buf}.{i}"] = array.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a state saved by ``state_dict()`` of an optimizer built the same way.

        Buffers are copied into this optimizer's arrays, converted to the parameters' dtypes.

        Raises:
            CheckpointError: when keys are missing or unexpected, a buffer's shape differs from its
                parameter's, or ``lr``/``step_count`` are not valid numbers.
        """
        owner = repr(self)
        check_state_dict(owner, state, self.state_dict())
        lr = scalar_from_state(owner, state, "lr")
        step_count = scalar_from_state(owner, state, "step_count", integer=True)
        for buf, arrays in self.state.items():
            for i, array in enumerate(arrays):
                array[...] = state[f"{buf}.{i}"]
        self.lr = lr
        self.step_count = step_count

    def _hyperparameters(self) -> dict[str, object]:
        return {"lr": self.lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}({args})"


def check_range(owner: str, name: str, value: float, low: float, high: float, *,
                include_high: bool = True) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (or ``< high`` when ``include_high`` is False).

    The message names the owner, the hyperparameter, the valid interval and the received value, e.g.
    ``SGD: expected momentum in [0, 1), received 1.5``.
    """
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    inside = (is_number and math.isfinite(value) and low <= value
              and (value <= high if include_high else value < high))
    if not inside:
        closing = ")" if high == math.inf or not include_high else "]"
        raise ValueError(f"{owner}: expected {name} in [{low:g}, {high:g}{closing}, received {value!r}")


def check_int(owner: str, name: str, value: int, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{owner}: expected {name} to be an integer >= {low}, received {value!r}")
