"""Layer-by-layer summary: output shapes, parameters, receptive fields, multiply-adds and memory.

Everything is worked out from the layers' hyperparameters (no forward pass), with the same window
arithmetic the kernels use. Conventions:

- parameters: trainable = values in ``Parameter``s (what PyTorch's ``parameters()`` counts);
  non-trainable = BatchNorm's running mean and variance.
- MACs (multiply-adds, per image): conv ``H_out*W_out*K*(C/groups)*kH*kW``, linear ``in*out``; bias
  additions, BatchNorm, activations, pooling and residual additions count as 0.
- activation memory: the layer's output for a batch of 1 in float32 (containers: 0, except a
  residual block's sum). The memory total at batch size B is the input, twice the activations
  (kept for backward, and their gradients), parameters with their gradients, and the block
  buffers: convolutions work a block of images at a time in reused buffers of about ``COLS_BUDGET``
  (2 MiB) per thread (im2col columns, or the padded grids and products of the stride-1 shifted path,
  whose forward and backward grids are separate buffers, so up to about twice that), and rebuild them
  in backward instead of keeping them. The estimate is the largest layer's im2col columns for the
  batch, capped at the budget times the threads (``get_num_threads()``; the bias column left out).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from stridenet import nn
from stridenet.errors import ShapeError
from stridenet.functional import _im2col
from stridenet.functional._parallel import get_num_threads
from stridenet.functional.geometry import WindowAxis, output_size_formula, unseen_pixels
from stridenet.models.receptive import Field
from stridenet.models.shapes import Shape, layer_axes, num_non_trainable, num_trainable, output_shape

BYTES = 4  # float32


def _squash(value: tuple | None) -> Any:
    """(3, 3) -> 3; (3, 5) stays; None stays."""
    if value is None:
        return None
    return value[0] if value[0] == value[1] else value


@dataclass
class SummaryRow:
    """One layer (or container) of the summary.

    ``receptive_field`` is the side of the square region one output unit sees, or (h, w); ``jump`` and
    ``start`` likewise. After global pooling or a fully connected layer ``whole_input`` is True, jump
    and start are None and the field is the input region all units before it cover (the whole input,
    less any last rows or columns a layer never read). ``note`` says
    which input rows/columns the layer never reads where (W + 2P - F) is not a multiple of S.
    """

    path: str
    label: str
    name: str
    description: str
    depth: int
    container: bool
    output_shape: tuple[int, ...] | None = None
    params: int = 0
    non_trainable: int = 0
    receptive_field: int | tuple[int, int] | None = None
    jump: int | tuple[int, int] | None = None
    start: float | tuple[float, float] | None = None
    whole_input: bool = False
    macs: int = 0
    activation_bytes: int = 0
    note: str = ""
    unread: tuple[int, int] = (0, 0)


@dataclass
class Summary:
    """The summary of a model for one input shape; ``str()`` renders the table.

    Attributes:
        rows: one ``SummaryRow`` per layer and container, depth first.
        total_params, total_non_trainable, total_macs: sums over the (non-container) layers.
        memory: bytes at ``batch_size`` in float32: ``input``, ``activations`` (forward),
            ``forward_backward`` (activations and their gradients), ``params`` (with gradients),
            ``im2col`` (the reused column buffer), ``total``.
        error: why the summary stopped early (an output size below 1, a shape mismatch), or None.
    """

    input_shape: tuple[int, ...]
    batch_size: int
    rows: list[SummaryRow]
    total_params: int
    total_non_trainable: int
    total_macs: int
    memory: dict[str, int]
    error: str | None = None
    name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), the content of ``--format json``."""
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    def to_json(self) -> str:
        """The ``to_dict`` data as JSON, one row per line."""
        import json

        data = self.to_dict()
        rows = data.pop("rows")
        body = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
        body.append('  "rows": [\n' + ",\n".join("    " + json.dumps(row) for row in rows) + "\n  ]")
        return "{\n" + ",\n".join(body) + "\n}\n"

    def to_markdown(self) -> str:
        from stridenet.models.summary_format import render_markdown

        return render_markdown(self)

    def __str__(self) -> str:
        from stridenet.models.summary_format import render_text

        return render_text(self)


class _Stop(Exception):
    """Raised inside the walk when a layer cannot take its input; the message is the summary's error."""


def _description(layer: nn.Layer) -> str:
    """Short form for the table: ``Conv2d(1->16, 3x3, s2, p1, no bias)``."""
    def pair(value: Any) -> str:
        return str(value) if isinstance(value, (int, str)) else (
            str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}")

    parts: list[str] = []
    if isinstance(layer, nn.Conv2d):
        parts = [f"{layer.in_channels}->{layer.out_channels}", "x".join(map(str, layer.kernel_size))]
    elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        parts = ["x".join(map(str, layer.kernel_size))]
    elif isinstance(layer, nn.Linear):
        parts = [f"{layer.in_features}->{layer.out_features}"]
    elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        parts = [str(layer.num_features)]
    elif isinstance(layer, (nn.Dropout, nn.LeakyReLU)):
        parts = [layer.extra_repr()]
    if isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        if layer.stride != (1, 1) and (isinstance(layer, nn.Conv2d) or layer.stride != layer.kernel_size):
            parts.append(f"s{pair(layer.stride)}")
        if layer.padding not in ((0, 0), "valid"):
            parts.append(f"p{pair(layer.padding)}")
        if layer.dilation != (1, 1):
            parts.append(f"d{pair(layer.dilation)}")
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        parts.append(f"g{layer.groups}")
    if isinstance(layer, (nn.Conv2d, nn.Linear)) and layer.bias is None:
        parts.append("no bias")
    return f"{type(layer).__name__}({', '.join(parts)})" if parts else type(layer).__name__


def _unread_note(axes: tuple[WindowAxis, WindowAxis]) -> tuple[str, tuple[int, int]]:
    """Where (W + 2P - F) is not a multiple of S: the formula and what the layer never reads."""
    parts, unread = [], [0, 0]
    for index, (name, unit) in enumerate((("height", "row"), ("width", "column"))):
        axis = axes[index]
        span = axis.size + axis.pad_lo + axis.pad_hi - axis.dilation * (axis.kernel - 1) - 1
        if span % axis.stride == 0:
            continue
        n = unread[index] = unseen_pixels(axis)
        if n:
            what = f"the last {n} input {unit}{'s are' if n > 1 else ' is'} never read"
        elif axis.extra_hi:
            what = "ceil_mode adds a last, partial window"
        else:
            what = "only padding is left unread"
        parts.append((name, output_size_formula(axis), what))
    if len(parts) == 2 and parts[0][1:] == (parts[1][1], parts[1][2].replace("column", "row")):
        n = unread[0]
        what = parts[0][2].replace(f"row{'s' if n > 1 else ''}", f"row{'s' if n > 1 else ''} and column"
                                   f"{'s' if n > 1 else ''}").replace(" is never", " are never")
        return f"height and width {parts[0][1]}: {what}", (unread[0], unread[1])
    return "; ".join(f"{name} {formula}: {what}" for name, formula, what in parts), (unread[0], unread[1])


class _Walker:
    def __init__(self, input_shape: Shape) -> None:
        self.input_size = (input_shape[1], input_shape[2]) if len(input_shape) == 3 else (1, 1)
        self.rows: list[SummaryRow] = []
        self.im2col = 0

    def visit(self, layer: nn.Layer, path: str, label: str, depth: int, shape: Shape,
              field: Field) -> tuple[Shape, Field]:
        if isinstance(layer, nn.Sequential):
            start = self.open(path, label, "Sequential", depth)
            for index, child in enumerate(layer):
                shape, field = self.visit(child, f"{path}.{index}", str(index), depth + 1, shape, field)
            return self.close(start, shape, field, activations=0)
        if isinstance(layer, nn.Residual):
            start = self.open(path, label, "Residual" + (" (identity shortcut)" if layer.shortcut is None else ""),
                              depth)
            out, out_field = self.visit(layer.block, f"{path}.block", "block", depth + 1, shape, field)
            skip, skip_field = shape, field
            if layer.shortcut is not None:
                skip, skip_field = self.visit(layer.shortcut, f"{path}.shortcut", "shortcut", depth + 1, shape, field)
            if out != skip:
                raise _Stop(f"{path} Residual: block output shape {out} does not match shortcut output shape {skip} "
                            f"for input shape {shape}")
            return self.close(start, out, out_field.union(skip_field), activations=math.prod(out))
        return self.leaf(layer, path, label, depth, shape, field)

    def open(self, path: str, label: str, description: str, depth: int) -> int:
        self.rows.append(SummaryRow(path, label, description.split(" ")[0], description, depth, container=True))
        return len(self.rows) - 1

    def close(self, start: int, shape: Shape, field: Field, activations: int) -> tuple[Shape, Field]:
        row = self.rows[start]
        inner = [r for r in self.rows[start + 1:] if not r.container]
        row.params = sum(r.params for r in inner)
        row.non_trainable = sum(r.non_trainable for r in inner)
        row.macs = sum(r.macs for r in inner)
        self.fill(row, shape, field, activations)
        return shape, field

    def fill(self, row: SummaryRow, shape: Shape, field: Field, activations: int) -> None:
        row.output_shape = tuple(shape)
        row.receptive_field = _squash(field.size)
        row.jump = _squash(field.jump)
        row.start = _squash(field.start)
        row.whole_input = field.whole
        row.activation_bytes = activations * BYTES

    def leaf(self, layer: nn.Layer, path: str, label: str, depth: int, shape: Shape,
             field: Field) -> tuple[Shape, Field]:
        row = SummaryRow(path, label, type(layer).__name__, _description(layer), depth, container=False,
                         params=num_trainable(layer), non_trainable=num_non_trainable(layer))
        try:
            out = output_shape(layer, shape)
            axes = layer_axes(layer, shape)
        except (ShapeError, TypeError) as error:
            raise _Stop(f"{path} {row.description}: {error}") from None
        if axes is not None:
            field = field.through(axes)
            row.note, row.unread = _unread_note(axes)
        elif isinstance(layer, (nn.Linear, nn.GlobalAvgPool2d)):
            field = field.pooled(self.input_size)
        if isinstance(layer, nn.Conv2d):
            window = (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
            row.macs = math.prod(out) * window
            self.im2col = max(self.im2col, math.prod(out[1:]) * window * layer.groups)   # per image
        elif isinstance(layer, nn.Linear):
            row.macs = math.prod(out) * layer.in_features
        self.fill(row, out, field, math.prod(out))
        self.rows.append(row)
        return out, field


def summary(model: Any, input_shape: tuple[int, ...], *, num_classes: int = 10, batch_size: int = 1,
            name: str | None = None) -> Summary:
    """Summarise ``model`` for images of ``input_shape`` (C, H, W), layer by layer.

    Args:
        model: an ``nn.Layer``, or anything ``build_model`` takes (preset name, spec file, dict, line).
        input_shape: (C, H, W) of one image.
        num_classes: for building a preset or spec (default 10).
        batch_size: batch size of the memory estimate (default 1).
        name: shown above the table (default: the model argument when it is a string).

    Returns:
        a ``Summary``; it stops at a layer whose input does not fit (``error`` says why, with the
        output-size formula and the numbers), keeping the rows before it.

    Example:
        >>> s = summary("conv5x6", (3, 32, 32))
        >>> s.rows[0].output_shape, s.total_params
        ((6, 28, 28), 456)
    """
    if not isinstance(model, nn.Layer):
        from stridenet.models.spec import build_model

        name = name if name is not None else (model if isinstance(model, str) else None)
        model = build_model(model, tuple(input_shape), num_classes, rng=0, upto_misfit=True)  # type: ignore[arg-type]
    walker = _Walker(tuple(input_shape))
    error = None
    shape, field = tuple(input_shape), Field.of_input(walker.input_size)
    try:
        if isinstance(model, nn.Sequential):
            for index, child in enumerate(model):
                shape, field = walker.visit(child, str(index), str(index), 0, shape, field)
        else:
            walker.visit(model, type(model).__name__, type(model).__name__, 0, shape, field)
    except _Stop as stop:
        error = str(stop)
    leaves = [row for row in walker.rows if not row.container]
    total_params = sum(row.params for row in leaves)
    total_non_trainable = sum(row.non_trainable for row in leaves)
    activations = batch_size * sum(row.activation_bytes for row in walker.rows)
    memory = {
        "input": batch_size * math.prod(input_shape) * BYTES,
        "activations": activations,
        "forward_backward": 2 * activations,
        "params": (2 * total_params + total_non_trainable) * BYTES,
        "im2col": min(batch_size * walker.im2col * BYTES, _im2col.COLS_BUDGET * get_num_threads()),
    }
    memory["total"] = memory["input"] + memory["forward_backward"] + memory["params"] + memory["im2col"]
    return Summary(tuple(input_shape), batch_size, walker.rows, total_params, total_non_trainable,
                   sum(row.macs for row in leaves), memory, error, name)
