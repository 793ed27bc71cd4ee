"""Checks of layer hyperparameters, run when a layer is built."""

from __future__ import annotations

from stridenet.functional.geometry import Pair, pair


def _bounded_pair(value, name: str, layer: str, minimum: int, word: str) -> Pair:
    try:
        result = pair(value, name)
    except ValueError as error:
        raise ValueError(f"{layer}: {error}") from None
    if min(result) < minimum:
        raise ValueError(f"{layer}: {name} must be {word}, received {value!r}")
    return result


def positive_pair(value, name: str, layer: str) -> Pair:
    return _bounded_pair(value, name, layer, 1, "positive")


def non_negative_pair(value, name: str, layer: str) -> Pair:
    return _bounded_pair(value, name, layer, 0, "non-negative")


def positive_int(value, name: str, layer: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer}: {name} must be a positive int, received {value!r}")
    return value


def show_pair(name: str, value: Pair, default: int | None) -> str:
    """``stride=2`` for a square pair, ``stride=(2, 1)`` otherwise; '' when equal to the default."""
    if default is not None and value == (default, default):
        return ""
    return f", {name}={value[0] if value[0] == value[1] else value}"
