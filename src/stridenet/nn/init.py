"""Weight initialisation: PyTorch's defaults, He/Kaiming and Xavier/Glorot.

Every function takes ``rng``: a ``numpy.random.Generator``, an int seed, or None (fresh entropy).
"""

from __future__ import annotations

import math

import numpy as np

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a Linear (out, in) or conv (K, C/groups, kH, kW) weight."""
    if len(shape) < 2:
        raise ValueError(f"fan_in and fan_out need a weight of rank at least 2, received shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform(shape: tuple[int, ...], bound: float, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    return as_generator(rng).uniform(-bound, bound, size=shape).astype(dtype)


def torch_default_weight(shape: tuple[int, ...], rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """PyTorch's Conv2d/Linear default: kaiming_uniform(a=sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1.0 / math.sqrt(fans(shape)[0]), rng, dtype)


def torch_default_bias(size: int, fan_in: int, rng: RngLike = None, dtype=np.float32) -> np.ndarray:
    """PyTorch's bias default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform((size,), 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, rng, dtype)


def kaiming_normal(shape: tuple[int, ...], rng: RngLike = None, dtype=np.float32, mode: str = "fan_in",
                   negative_slope: float = 0.0) -> np.ndarray:
    """He et al. (2015): N(0, gain^2/fan) with gain sqrt(2/(1 + a^2)), for ReLU networks."""
    fan = fans(shape)[0 if mode == "fan_in" else 1]
    std = math.sqrt(2.0 / (1 + negative_slope**2)) / math.sqrt(fan)
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)


def kaiming_uniform(shape: tuple[int, ...], rng: RngLike = None, dtype=np.float32, mode: str = "fan_in",
                    negative_slope: float = 0.0) -> np.ndarray:
    """He et al. (2015), uniform: U(-b, b) with b = gain*sqrt(3/fan)."""
    fan = fans(shape)[0 if mode == "fan_in" else 1]
    return uniform(shape, math.sqrt(2.0 / (1 + negative_slope**2)) * math.sqrt(3.0 / fan), rng, dtype)


def xavier_uniform(shape: tuple[int, ...], rng: RngLike = None, dtype=np.float32, gain: float = 1.0) -> np.ndarray:
    """Glorot & Bengio (2010): U(-b, b) with b = gain*sqrt(6/(fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return uniform(shape, gain * math.sqrt(6.0 / (fan_in + fan_out)), rng, dtype)


def xavier_normal(shape: tuple[int, ...], rng: RngLike = None, dtype=np.float32, gain: float = 1.0) -> np.ndarray:
    """Glorot & Bengio (2010): N(0, gain^2 * 2/(fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return (as_generator(rng).standard_normal(shape) * std).astype(dtype)
