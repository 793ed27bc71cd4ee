"""The vocabulary of model specs: each layer ``type`` name, its class, its arguments and defaults.

A spec names a layer by its class name in lower case (``conv2d``, ``maxpool2d``, ``batchnorm2d``) and
gives PyTorch's argument names. ``describe`` and ``to_spec`` are the way back: they read a built
model's layers and attributes and write the arguments that differ from the defaults, so any model
made of these layers can be written out as a spec without a hand-written description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stridenet import nn

REQUIRED = object()
CLASSES = "classes"          # an output count that means "the number of classes"
CUMULATIVE = "cumulative"    # BatchNorm momentum=None (a cumulative average) in a spec
CONTAINERS = ("sequential", "residual")
# layers that may follow the classifier's last conv2d/linear without changing its output count
_HEAD_PASSTHROUGH = frozenset({"relu", "leakyrelu", "dropout", "identity", "globalavgpool2d", "flatten",
                               "batchnorm2d", "batchnorm1d", "maxpool2d", "avgpool2d"})

_BOOL_ARGS = frozenset({"bias", "ceil_mode", "count_include_pad", "affine", "track_running_stats"})
_FLOAT_ARGS = frozenset({"eps", "p", "negative_slope"})
_PAIR_ARGS = frozenset({"kernel_size", "stride", "padding", "dilation"})


@dataclass(frozen=True)
class LayerKind:
    """One layer type of the spec vocabulary.

    Attributes:
        name: the spec's ``type`` value.
        cls: the layer class it builds.
        args: argument name -> default (``REQUIRED`` when it has none), in PyTorch's order.
        size_arg: the input size the builder infers from the incoming shape when a spec leaves it out.
        count_arg: the output count that a spec may give as ``"classes"``.
        takes_rng: the constructor takes ``rng`` (initialisation or dropout masks).
    """

    name: str
    cls: type[nn.Layer]
    args: dict[str, Any] = field(default_factory=dict)
    size_arg: str | None = None
    count_arg: str | None = None
    takes_rng: bool = False


_BN_ARGS = {"num_features": REQUIRED, "eps": 1e-5, "momentum": 0.1, "affine": True, "track_running_stats": True}

KINDS: dict[str, LayerKind] = {kind.name: kind for kind in (
    LayerKind("conv2d", nn.Conv2d, {"in_channels": REQUIRED, "out_channels": REQUIRED, "kernel_size": REQUIRED,
                                    "stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True},
              size_arg="in_channels", count_arg="out_channels", takes_rng=True),
    LayerKind("linear", nn.Linear, {"in_features": REQUIRED, "out_features": REQUIRED, "bias": True},
              size_arg="in_features", count_arg="out_features", takes_rng=True),
    LayerKind("maxpool2d", nn.MaxPool2d, {"kernel_size": REQUIRED, "stride": None, "padding": 0, "dilation": 1,
                                          "ceil_mode": False}),
    LayerKind("avgpool2d", nn.AvgPool2d, {"kernel_size": REQUIRED, "stride": None, "padding": 0, "ceil_mode": False,
                                          "count_include_pad": True}),
    LayerKind("globalavgpool2d", nn.GlobalAvgPool2d),
    LayerKind("flatten", nn.Flatten),
    LayerKind("relu", nn.ReLU),
    LayerKind("leakyrelu", nn.LeakyReLU, {"negative_slope": 0.01}),
    LayerKind("dropout", nn.Dropout, {"p": 0.5}, takes_rng=True),
    LayerKind("identity", nn.Identity),
    LayerKind("batchnorm2d", nn.BatchNorm2d, dict(_BN_ARGS), size_arg="num_features"),
    LayerKind("batchnorm1d", nn.BatchNorm1d, dict(_BN_ARGS), size_arg="num_features"),
)}

# ``batchnorm`` in a spec picks batchnorm2d for a (C, H, W) input and batchnorm1d for (F,) or (C, L)
AUTO_BATCHNORM = "batchnorm"


def valid_types() -> list[str]:
    """Every ``type`` a spec may use, for error messages."""
    return [*KINDS, AUTO_BATCHNORM, *CONTAINERS]


def kind_of(layer: nn.Layer) -> LayerKind:
    """The spec kind of a built layer; TypeError for a layer class outside the vocabulary."""
    for kind in KINDS.values():
        if type(layer) is kind.cls:
            return kind
    raise TypeError(f"{type(layer).__name__} is not a layer specs can describe; "
                    f"known layers: {', '.join(k.cls.__name__ for k in KINDS.values())}, Sequential, Residual")


def _plain(value: Any) -> Any:
    """Spec form of an attribute: a square pair becomes one int, other pairs a list."""
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] if value[0] == value[1] else list(value)
    return value


def describe(layer: nn.Layer) -> dict[str, Any]:
    """The spec of one (non-container) layer: ``{"type": ..., arguments that differ from defaults}``.

    Example:
        >>> describe(nn.Conv2d(3, 16, 3, padding=1, bias=False))
        {'type': 'conv2d', 'in_channels': 3, 'out_channels': 16, 'kernel_size': 3, 'padding': 1, 'bias': False}
    """
    kind = kind_of(layer)
    spec: dict[str, Any] = {"type": kind.name}
    for arg, default in kind.args.items():
        if arg == "bias":
            value: Any = layer.bias is not None
        elif arg == "affine":
            value = layer.weight is not None
        elif arg == "stride" and default is None:
            value = None if layer.stride == layer.kernel_size else _plain(layer.stride)
        elif arg == "momentum" and layer.momentum is None:
            value = CUMULATIVE
        else:
            value = _plain(getattr(layer, arg))
        if default is REQUIRED or value != _plain(default):
            spec[arg] = value
    return spec


def to_spec(model: nn.Layer, *, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
            name: str | None = None, explicit: bool = False) -> dict[str, Any]:
    """Describe a model built from stridenet's layers as a spec dict (walking its layers).

    Args:
        model: a ``Sequential`` (its layers become the spec's list) or any single layer.
        input_shape: recorded in the spec; when given, sizes that follow from it (``in_channels``,
            ``in_features``, ``num_features``) are left out, so the spec adapts to other inputs.
        num_classes: recorded in the spec; the head layer whose output count equals it (the last
            conv2d or linear) gets ``"classes"``.
        name: recorded as ``name``.
        explicit: write every size and count even when ``input_shape``/``num_classes`` are given.

    Raises:
        TypeError: a layer class that specs cannot describe.

    Example:
        >>> to_spec(nn.Sequential(nn.Linear(4, 2)))
        {'layers': [{'type': 'linear', 'in_features': 4, 'out_features': 2}]}
    """
    implicit = input_shape is not None and not explicit
    layers = list(model) if isinstance(model, nn.Sequential) else [model]
    entries = [_entry(layer, implicit) for layer in layers]
    if num_classes is not None and not explicit:
        _mark_head(entries, num_classes)
    spec: dict[str, Any] = {}
    if name is not None:
        spec["name"] = name
    if input_shape is not None:
        spec["input_shape"] = list(input_shape)
    if num_classes is not None:
        spec["num_classes"] = num_classes
    spec["layers"] = entries
    return spec


def _entry(layer: nn.Layer, implicit: bool) -> dict[str, Any]:
    if isinstance(layer, nn.Sequential):
        return {"type": "sequential", "layers": [_entry(child, implicit) for child in layer]}
    if isinstance(layer, nn.Residual):
        entry: dict[str, Any] = {"type": "residual", "block": _branch(layer.block, implicit)}
        if layer.shortcut is not None:
            entry["shortcut"] = _branch(layer.shortcut, implicit)
        return entry
    entry = describe(layer)
    size_arg = KINDS[entry["type"]].size_arg
    if implicit and size_arg:
        del entry[size_arg]
    return entry


def _branch(layer: nn.Layer, implicit: bool) -> dict[str, Any] | list[dict[str, Any]]:
    if isinstance(layer, nn.Sequential):
        return [_entry(child, implicit) for child in layer]
    return _entry(layer, implicit)


def _mark_head(entries: list[dict[str, Any]], num_classes: int) -> None:
    """Write ``"classes"`` into the output count of the classifier's last conv2d or linear layer."""
    for entry in reversed(entries):
        count_arg = KINDS[entry["type"]].count_arg if entry["type"] in KINDS else None
        if count_arg:
            if entry[count_arg] == num_classes:
                entry[count_arg] = CLASSES
            return
        if entry["type"] not in _HEAD_PASSTHROUGH:
            return


def check_value(arg: str, value: Any) -> Any:
    """Type-check one spec argument the layer constructors would accept silently (a string for a
    bool, say); returns the value as the constructor wants it (lists become tuples).

    Raises:
        ValueError: naming the argument, what was expected and the value received.
    """
    if arg in _BOOL_ARGS and not isinstance(value, bool):
        raise ValueError(f"{arg} must be true or false, received {value!r}")
    if arg in _FLOAT_ARGS and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ValueError(f"{arg} must be a number, received {value!r}")
    if arg == "momentum":
        if value == CUMULATIVE:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"momentum must be a number or {CUMULATIVE!r}, received {value!r}")
    if arg in _PAIR_ARGS and isinstance(value, list):
        return tuple(value)
    return value
