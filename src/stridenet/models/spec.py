"""Architecture specs: build a model from a description (a file, a dict or one line).

A spec is a table with a ``layers`` list; each layer is a table with a ``type`` (``conv2d``, ``relu``,
``residual``, ...; see ``layers.KINDS``) and PyTorch's argument names. Sizes that follow from the input
may be left out: ``in_channels``, ``in_features`` and ``num_features`` are inferred by propagating the
input shape, a ``linear`` layer given an image gets a flatten before it, and an output count of
``"classes"`` is the number of classes. ``input_shape`` and ``num_classes`` at the top are defaults for
callers that give none. ``layers.to_spec`` is the way back, from a model to a spec dict. See
docs/specs-and-summary.md for the full format.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stridenet import nn
from stridenet.errors import ShapeError
from stridenet.models.layers import AUTO_BATCHNORM, CLASSES, KINDS, REQUIRED, check_value, to_spec, valid_types
from stridenet.models.shapes import Shape, output_shape
from stridenet.nn.init import RngLike, as_generator

SpecLike = str | os.PathLike | dict | list
SPEC_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
TOP_KEYS = ("name", "description", "input_shape", "num_classes", "layers")


class SpecError(ValueError):
    """A spec that cannot be read or built; the message says where (file line, layer) and what."""


@dataclass(frozen=True)
class SpecSource:
    """A spec's data and how to point at a place in it.

    Attributes:
        data: the top-level table (``layers`` and optional ``name``, ``input_shape``, ``num_classes``).
        where: layer path (``layers[3].block[0]``) -> location text for messages, e.g.
            ``"model.toml line 14, layers[3]"`` or ``"one-line spec item 4 'conv0x32'"``.
    """

    data: dict[str, Any]
    where: Callable[[str], str]


def source_of(spec: SpecLike) -> SpecSource:
    """Read ``spec``: a dict (or bare list of layers), a path to a .toml/.yaml/.yml/.json file, or a
    one-line spec string.

    Raises:
        FileNotFoundError: a path with a spec suffix that does not exist.
        SpecError: a file or line that cannot be parsed.
    """
    if isinstance(spec, (dict, list)):
        data = {"layers": spec} if isinstance(spec, list) else spec
        return SpecSource(data, lambda path: f"spec {path}")
    if isinstance(spec, os.PathLike) or (isinstance(spec, str) and _is_file_like(spec)):
        from stridenet.models.spec_files import read_spec_file

        return read_spec_file(Path(spec))
    if isinstance(spec, str):
        from stridenet.models.line import parse_line

        return parse_line(spec)
    raise TypeError(f"a model spec must be a dict, a path or a one-line string, received {type(spec).__name__}")


def _is_file_like(text: str) -> bool:
    return Path(text).suffix.lower() in SPEC_SUFFIXES or os.path.isfile(text)


def _positive_ints(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


def from_spec(spec: SpecLike, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
              rng: RngLike = None, *, upto_misfit: bool = False) -> nn.Sequential:
    """Build the model a spec describes.

    Args:
        spec: a dict, a spec file path, or a one-line spec (see ``source_of``).
        input_shape: (C, H, W) of one image; default the spec's ``input_shape``. Needed when the spec
            leaves sizes implicit.
        num_classes: what ``"classes"`` (or a bare ``fc`` in the line form) means; default the spec's.
        rng: Generator or seed for the initial weights; layers draw from it in spec order.
        upto_misfit: instead of raising, end the model at the first layer whose input does not fit
            (an output size below 1, say), keeping that layer; ``summary`` uses it to show where.

    Returns:
        an ``nn.Sequential`` of the spec's layers.

    Raises:
        SpecError: naming the file line or item and the layer path, with the offending value.
        FileNotFoundError: a spec file that does not exist.

    Example:
        >>> from_spec("conv3x8p1-relu-pool2-fc", (1, 28, 28), 10, rng=0)[-1]
        Linear(1568, 10)
    """
    source = source_of(spec)
    data = source.data
    if not isinstance(data, dict):
        raise SpecError(f"{source.where('')}: a spec must be a table with a 'layers' list, received "
                        f"{type(data).__name__}")
    unknown = [key for key in data if key not in TOP_KEYS]
    if unknown:
        raise SpecError(f"{source.where('')}: unknown top-level key {unknown[0]!r}; valid keys: {', '.join(TOP_KEYS)}")
    if "layers" not in data:
        raise SpecError(f"{source.where('')}: the spec has no 'layers' list")
    if input_shape is None and "input_shape" in data:
        if not _positive_ints(data["input_shape"]):
            raise SpecError(f"{source.where('input_shape')}: input_shape must be a list of positive ints "
                            f"such as [1, 28, 28], received {data['input_shape']!r}")
        input_shape = tuple(data["input_shape"])
    if num_classes is None and "num_classes" in data:
        num_classes = data["num_classes"]
        if not _positive_ints([num_classes]):
            raise SpecError(f"{source.where('num_classes')}: num_classes must be a positive int, "
                            f"received {num_classes!r}")
    builder = _Builder(source, num_classes, as_generator(rng), upto_misfit)
    try:
        layers, _ = builder.chain(data["layers"], "layers", None if input_shape is None else tuple(input_shape))
    except _Misfit as misfit:
        layers = list(misfit.partial)  # type: ignore[arg-type]
    return nn.Sequential(*layers)


class _Misfit(Exception):
    """A layer that does not fit its input, with the model built up to and including it."""

    def __init__(self, partial: nn.Layer) -> None:
        super().__init__()
        self.partial = partial


class _Builder:
    """Walks a spec's layers, building each and propagating the shape to infer implicit sizes."""

    def __init__(self, source: SpecSource, num_classes: int | None, rng: Any, upto_misfit: bool = False) -> None:
        self.upto_misfit = upto_misfit
        self.source = source
        self.num_classes = num_classes
        self.rng = rng

    def fail(self, path: str, entry: Any, message: str) -> SpecError:
        kind = entry.get("type") if isinstance(entry, dict) else None
        return SpecError(f"{self.source.where(path)}{f' ({kind})' if isinstance(kind, str) else ''}: {message}")

    def chain(self, entries: Any, path: str, shape: Shape | None) -> tuple[list[nn.Layer], Shape | None]:
        if not isinstance(entries, list):
            raise self.fail(path, None, f"expected a list of layers, received {entries!r}")
        layers: list[nn.Layer] = []
        for index, entry in enumerate(entries):
            if shape is not None and len(shape) == 3 and isinstance(entry, dict) \
                    and str(entry.get("type")).lower() == "linear":
                layers.append(nn.Flatten())  # a linear layer given an image: flatten it first
                shape = (math.prod(shape),)
            try:
                layer, shape = self.item(entry, f"{path}[{index}]", shape)
            except _Misfit as misfit:
                raise _Misfit(nn.Sequential(*layers, misfit.partial)) from None
            layers.append(layer)
        return layers, shape

    def branch(self, entry: Any, path: str, shape: Shape | None) -> tuple[nn.Layer, Shape | None]:
        """A residual branch: a list is a Sequential, a table one layer."""
        if isinstance(entry, list):
            layers, shape = self.chain(entry, path, shape)
            return nn.Sequential(*layers), shape
        return self.item(entry, path, shape)

    def item(self, entry: Any, path: str, shape: Shape | None) -> tuple[nn.Layer, Shape | None]:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise self.fail(path, None, f"expected a table with a 'type' key, received {entry!r}")
        name = entry["type"].lower()
        if name == "sequential":
            self.check_keys(entry, path, ("layers",))
            layers, shape = self.chain(entry.get("layers", []), f"{path}.layers", shape)
            return nn.Sequential(*layers), shape
        if name == "residual":
            return self.residual(entry, path, shape)
        if name == AUTO_BATCHNORM:
            if shape is None:
                raise self.fail(path, entry, "'batchnorm' picks 1d or 2d from the input shape, which is not known; "
                                "give input_shape or write batchnorm1d/batchnorm2d")
            name = "batchnorm2d" if len(shape) == 3 else "batchnorm1d"
        if name not in KINDS:
            raise self.fail(path, entry, f"unknown layer type {entry['type']!r}; valid types: "
                            f"{', '.join(valid_types())}")
        return self.leaf(name, entry, path, shape)

    def check_keys(self, entry: dict, path: str, valid: tuple[str, ...]) -> None:
        for key in entry:
            if key != "type" and key not in valid:
                raise self.fail(path, entry, f"unknown argument {key!r}; valid arguments: "
                                f"{', '.join(valid) if valid else 'none'}")

    def residual(self, entry: dict, path: str, shape: Shape | None) -> tuple[nn.Layer, Shape | None]:
        self.check_keys(entry, path, ("block", "shortcut"))
        if "block" not in entry:
            raise self.fail(path, entry, "missing block (the residual branch)")
        try:
            block, out = self.branch(entry["block"], f"{path}.block", shape)
        except _Misfit as misfit:
            raise _Misfit(nn.Residual(misfit.partial)) from None
        shortcut, skip = None, shape
        if entry.get("shortcut") is not None:
            try:
                shortcut, skip = self.branch(entry["shortcut"], f"{path}.shortcut", shape)
            except _Misfit as misfit:
                raise _Misfit(nn.Residual(block, misfit.partial)) from None
        if out is not None and out != skip:
            raise self.fail(path, entry, f"block output shape {out} does not match shortcut output shape {skip} "
                            f"for input shape {shape}; give a shortcut that maps one to the other")
        return nn.Residual(block, shortcut), out

    def leaf(self, name: str, entry: dict, path: str, shape: Shape | None) -> tuple[nn.Layer, Shape | None]:
        kind = KINDS[name]
        self.check_keys(entry, path, tuple(kind.args))
        kwargs: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "type":
                continue
            try:
                kwargs[key] = check_value(key, value)
            except ValueError as error:
                raise self.fail(path, entry, str(error)) from None
        if kind.count_arg and kwargs.get(kind.count_arg) == CLASSES:
            if self.num_classes is None:
                raise self.fail(path, entry, f"{kind.count_arg} = {CLASSES!r} but the number of classes is not "
                                "known; pass num_classes or set num_classes in the spec")
            kwargs[kind.count_arg] = self.num_classes
        if kind.size_arg:
            self.infer_size(kind.size_arg, kwargs, entry, path, shape)
        missing = [arg for arg, default in kind.args.items() if default is REQUIRED and arg not in kwargs]
        if missing:
            raise self.fail(path, entry, f"missing {', '.join(missing)}")
        if kind.takes_rng:
            kwargs["rng"] = self.rng
        try:
            layer = kind.cls(**kwargs)
        except (ValueError, TypeError) as error:
            raise self.fail(path, entry, str(error)) from None
        if shape is not None:
            try:
                shape = output_shape(layer, shape)
            except ShapeError as error:
                if self.upto_misfit:
                    raise _Misfit(layer) from None
                raise self.fail(path, entry, f"{layer!r}: {error}") from None
        return layer, shape

    def infer_size(self, arg: str, kwargs: dict, entry: dict, path: str, shape: Shape | None) -> None:
        """Fill in an implicit input size from ``shape``, or check an explicit one against it."""
        if shape is None:
            if arg not in kwargs:
                raise self.fail(path, entry, f"{arg} is left out and the input shape is not known; pass "
                                "input_shape or set input_shape = [C, H, W] in the spec")
            return
        actual = shape[-1] if arg == "in_features" else shape[0]
        if arg not in kwargs:
            kwargs[arg] = actual
        elif kwargs[arg] != actual:
            raise self.fail(path, entry, f"{arg} = {kwargs[arg]!r} does not match the input to this layer, shape "
                            f"{shape}; leave {arg} out to infer it")


def build_model(model: SpecLike, input_shape: tuple[int, int, int], num_classes: int,
                rng: RngLike = None, *, upto_misfit: bool = False) -> nn.Sequential:
    """Build a preset (by name), a spec file, a spec dict or a one-line spec for the given data.

    Args:
        model: ``"lenet5"`` (see ``PRESETS``), ``"net.toml"``, a spec dict, or ``"conv3x32-relu-pool2-fc"``.
        input_shape: (C, H, W) of one image; overrides a spec's ``input_shape``.
        num_classes: number of classes; overrides a spec's ``num_classes``.
        rng: Generator or seed for the initial weights.
        upto_misfit: end the model at the first layer that does not fit its input (see ``from_spec``).

    Raises:
        ValueError: (``SpecError``) an unknown name, listing the presets and the valid layers, or a spec
            that cannot be built, naming where and what.
        FileNotFoundError: a spec path that does not exist.

    Example:
        >>> build_model("lenet5", (1, 28, 28), 10, rng=0)[-1]
        Linear(84, 10)
    """
    from stridenet.models.line import LineSyntaxError
    from stridenet.models.presets import PRESETS, build_preset

    if isinstance(model, str) and model in PRESETS:
        try:
            return build_preset(model, input_shape, num_classes, rng)
        except ShapeError:
            if not upto_misfit:
                raise
            # the preset's architecture at a size it fits, rebuilt from its spec up to the misfit
            reference = build_preset(model, (input_shape[0], 224, 224), num_classes, rng)
            model = to_spec(reference, input_shape=input_shape, num_classes=num_classes)  # type: ignore[assignment]
    try:
        return from_spec(model, input_shape, num_classes, rng, upto_misfit=upto_misfit)
    except LineSyntaxError as error:
        if error.item != 1:
            raise
        raise SpecError(f"unknown model {model!r}: not a preset ({', '.join(PRESETS)}), not a spec file "
                        f"({', '.join(SPEC_SUFFIXES)}) and not a one-line spec: {error}") from None
