"""The layer contract: ``Parameter`` and the ``Layer`` base class every layer builds on.

A layer runs ``y = layer(x)`` (forward, caching what backward needs), ``dx = layer.backward(dy)``
(returns the input gradient and *adds* parameter gradients into ``param.grad``). Parameters and
buffers are found by walking attributes in the order they were set, so ``state_dict()`` keys match
PyTorch's (``0.weight``, ``3.running_mean``, ...).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from stridenet.errors import ShapeError

_grad_enabled: ContextVar[bool] = ContextVar("stridenet_grad_enabled", default=True)


def grad_enabled() -> bool:
    """False inside ``no_grad()``: layers then keep no cache, so inference holds no extra memory."""
    return _grad_enabled.get()


@contextmanager
def no_grad() -> Iterator[None]:
    """Run forward passes without keeping what backward would need (evaluation, prediction)."""
    token = _grad_enabled.set(False)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


class Parameter:
    """A trainable array and its gradient.

    Args:
        data: the values; kept as given (no copy, no dtype change).

    Attributes:
        data: ``np.ndarray`` of values.
        grad: ``np.ndarray`` of the same shape and dtype; backward passes add into it.
    """

    def __init__(self, data: np.ndarray) -> None:
        if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"Parameter: expected a floating-point numpy array, received {type(data).__name__}"
                            f"{'' if not isinstance(data, np.ndarray) else ' of dtype ' + str(data.dtype)}")
        self.data = data
        self.grad = np.zeros_like(data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


def _locate(error: ShapeError, layer: Layer) -> ShapeError:
    """``error`` prefixed with the layer that raised it; an error already located passes unchanged."""
    if error.located:
        return error
    located = ShapeError(f"{layer!r}: {error}")
    located.located = True
    return located


@contextmanager
def located(layer: Layer) -> Iterator[None]:
    """Within the block, a ``ShapeError`` comes out prefixed with ``layer`` (as from ``layer(x)``)."""
    try:
        yield
    except ShapeError as error:
        raise _locate(error, layer) from None


def _located_backward(backward: Callable) -> Callable:
    @functools.wraps(backward)
    def wrapper(self: Layer, *args: Any) -> Any:
        try:
            return backward(self, *args)
        except ShapeError as error:
            raise _locate(error, self) from None
    return wrapper


class Layer:
    """Base class of every layer and container.

    Subclasses implement ``forward(x)`` and ``backward(dout)``; a kernel's ``ShapeError`` raised in
    either comes out naming the layer (``__call__`` wraps forward; every subclass's ``backward`` is
    wrapped when the class is defined). Attributes that are ``Parameter``s, numpy buffers listed in
    ``_buffer_names`` or child ``Layer``s are discovered automatically.
    """

    _buffer_names: tuple[str, ...] = ()
    # False: backward may skip the input gradient and return None (a network's first layer, whose
    # input is data; see ``containers.input_grad_skipped``). Conv2d honours it.
    input_grad = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backward" in cls.__dict__:
            cls.backward = _located_backward(cls.__dict__["backward"])  # type: ignore[method-assign]

    def __init__(self) -> None:
        self.training = True

    # -- running -------------------------------------------------------------------------
    def __call__(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.forward(x)
        except ShapeError as error:
            raise _locate(error, self) from None

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def _keep(self, cache: Any) -> None:
        """Remember ``cache`` for backward, unless gradients are off (``no_grad``)."""
        self._cache = cache if grad_enabled() else None

    def _take_cache(self) -> Any:
        """The last forward pass's cache, used once; backward without a fresh forward is an error."""
        cache = getattr(self, "_cache", None)
        if cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward (or twice for one forward); "
                               "run layer(x) outside no_grad() first")
        self._cache = None
        return cache

    # -- structure -----------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Layer]]:
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                yield name, value

    def children(self) -> Iterator[Layer]:
        for _, child in self.named_children():
            yield child

    def modules(self) -> Iterator[Layer]:
        """This layer and every layer inside it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Layer]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield (f"{prefix}.{name}" if prefix else name), value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name in self._buffer_names:
            yield (f"{prefix}.{name}" if prefix else name), getattr(self, name)
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    # -- modes and gradients ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def astype(self, dtype: Any) -> Layer:
        """Cast every parameter (and its gradient) and floating buffer to ``dtype``, in place."""
        dtype = np.dtype(dtype)
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = np.zeros_like(p.data)
        for module in self.modules():
            for name in module._buffer_names:
                value = getattr(module, name)
                if np.issubdtype(value.dtype, np.floating):
                    setattr(module, name, value.astype(dtype))
        return self

    # -- weights in and out ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer under PyTorch's key names, in PyTorch's order."""
        state: dict[str, np.ndarray] = {}
        self._collect_state("", state)
        return state

    def _collect_state(self, prefix: str, state: dict[str, np.ndarray]) -> None:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                state[prefix + name] = value.data.copy()
        for name in self._buffer_names:
            state[prefix + name] = np.array(getattr(self, name), copy=True)
        for name, child in self.named_children():
            child._collect_state(f"{prefix}{name}.", state)

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays from ``state`` into this model's parameters and buffers.

        Values may be numpy arrays or anything ``np.asarray`` accepts (a torch tensor's ``.numpy()``).
        Values are cast to the dtype the model already has. With ``strict`` the key sets must match.

        Raises:
            KeyError: with ``strict``, listing missing and unexpected keys.
            ShapeError: a value whose shape differs from the model's, naming the key.
        """
        own = self.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        targets = self._state_targets()
        for key, (owner, attr) in targets.items():
            if key not in state:
                continue
            current = own[key]
            value = np.asarray(state[key])
            if value.shape != current.shape:
                raise ShapeError(f"load_state_dict: key {key!r} expected shape {current.shape}, "
                                 f"received shape {value.shape}")
            value = value.astype(current.dtype, copy=True)
            slot = getattr(owner, attr)
            if isinstance(slot, Parameter):
                slot.data = value
                if slot.grad.shape != value.shape or slot.grad.dtype != value.dtype:
                    slot.grad = np.zeros_like(value)
            else:
                setattr(owner, attr, value)

    def _state_targets(self, prefix: str = "") -> dict[str, tuple[Layer, str]]:
        targets: dict[str, tuple[Layer, str]] = {}
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                targets[prefix + name] = (self, name)
        for name in self._buffer_names:
            targets[prefix + name] = (self, name)
        for name, child in self.named_children():
            targets.update(child._state_targets(f"{prefix}{name}."))
        return targets

    def num_parameters(self) -> int:
        return int(sum(p.data.size for p in self.parameters()))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
