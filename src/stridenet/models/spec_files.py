"""Spec files: read TOML (stdlib ``tomllib``), YAML (PyYAML's ``safe_load``, optional) and JSON, and
write all three, with the line of each layer kept for error messages.

Writers are hand-rolled for the small shape specs have (tables of scalars, lists of ints, lists of
tables), so writing needs no extra package: TOML uses ``[[layers]]`` tables, YAML and JSON put each
simple layer on one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stridenet.models.spec import SpecError, SpecSource

FORMATS = ("toml", "yaml", "json")
_TOML_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\s]+?)\s*\]\]?\s*(#.*)?$")


def read_spec_file(path: Path) -> SpecSource:
    """Read a .toml, .yaml/.yml or .json spec file.

    Raises:
        FileNotFoundError: the file does not exist.
        SpecError: an unknown suffix, a syntax error (with the parser's line), or YAML without PyYAML.
    """
    if not path.is_file():
        raise FileNotFoundError(f"model spec file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise SpecError(f"{path}: unknown spec file type {suffix!r}; use .toml, .yaml, .yml or .json")
    lines: dict[str, int] = {}
    if suffix in (".yaml", ".yml"):
        data, lines = _read_yaml(text, path)
    else:
        loads = _toml_module(path).loads if suffix == ".toml" else json.loads
        try:
            data = loads(text)
        except ValueError as error:  # TOMLDecodeError, JSONDecodeError: the message has the line
            raise SpecError(f"{path}: {error}") from None
        if suffix == ".toml":
            lines = _toml_lines(text)
    return SpecSource(data, _where(str(path), lines))


def _toml_module(path: Path) -> Any:
    """``tomllib`` (Python 3.11+), else the ``tomli`` backport."""
    try:
        import tomllib
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise SpecError(f"{path}: reading TOML on Python 3.10 needs tomli (pip install tomli)") from None
    return tomllib


def _where(name: str, lines: dict[str, int]) -> Callable[[str], str]:
    def where(layer_path: str) -> str:
        line = lines.get(layer_path)
        place = f"{name} line {line}" if line else name
        return f"{place}, {layer_path}" if layer_path else place
    return where


def _toml_lines(text: str) -> dict[str, int]:
    """Layer path (``layers[3].block[0]``) -> line of its ``[[...]]`` or ``[...]`` header."""
    counts: dict[str, int] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _TOML_HEADER.match(line)
        if not match:
            continue
        keys = [key.strip() for key in match.group(2).split(".")]
        path = ""
        for key in keys[:-1]:
            path = f"{path}.{key}" if path else key
            if path in counts:
                path += f"[{counts[path] - 1}]"
        path = f"{path}.{keys[-1]}" if path else keys[-1]
        if match.group(1) == "[[":
            counts[path] = counts.get(path, 0) + 1
            path += f"[{counts[path] - 1}]"
        lines[path] = number
    return lines


def _read_yaml(text: str, path: Path) -> tuple[Any, dict[str, int]]:
    try:
        import yaml
    except ModuleNotFoundError:
        raise SpecError(f"{path}: reading YAML specs needs PyYAML (pip install pyyaml); "
                        "or write the spec as TOML or JSON") from None
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: {' '.join(str(error).split())}") from None
    lines: dict[str, int] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, yaml.MappingNode):
            if where:
                lines[where] = node.start_mark.line + 1
            for key, value in node.value:
                walk(value, f"{where}.{key.value}" if where else str(key.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                walk(value, f"{where}[{index}]")

    if root is not None:
        walk(root, "")
    return data, lines


def dump_spec(spec: dict[str, Any], fmt: str) -> str:
    """Write a spec dict as ``toml``, ``yaml`` or ``json`` text (ends with a newline).

    Raises:
        ValueError: an unknown format.
    """
    if fmt == "toml":
        return _toml_table(spec, "").lstrip("\n")
    if fmt == "yaml":
        return _yaml(spec, 0) + "\n"
    if fmt == "json":
        return _json(spec, 0) + "\n"
    raise ValueError(f"unknown spec format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, dict) for v in value)


def _toml_table(table: dict[str, Any], prefix: str) -> str:
    """Scalars first, then sub-tables and arrays of tables under dotted headers."""
    text = ""
    nested = []
    for key, value in table.items():
        if isinstance(value, dict) or _is_table_list(value):
            nested.append((key, value))
        else:
            text += f"{key} = {json.dumps(value)}\n"
    for key, value in nested:
        path = f"{prefix}.{key}" if prefix else key
        for entry in value if isinstance(value, list) else [value]:
            header = f"[[{path}]]" if isinstance(value, list) else f"[{path}]"
            text += f"\n{header}\n" + _toml_table(entry, path)
    return text


def _scalar(value: Any) -> str:
    """JSON text of a scalar; floats always with a '.' so YAML 1.1 (PyYAML) reads 1e-06 as a number."""
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value):
        mantissa, exponent = repr(value).split("e")
        return f"{mantissa}.0e{exponent}"
    return json.dumps(value)


def _flow(value: Any) -> str | None:
    """Single-line YAML flow form of a value without layer lists (strings JSON-quoted, so a string
    such as "no" is never read as a bool); None for a value that holds layer tables."""
    if isinstance(value, dict):
        if any(isinstance(item, dict) for item in value.values()):
            return None
        parts = [(key, _flow(item)) for key, item in value.items()]
        return None if any(p is None for _, p in parts) else "{" + ", ".join(f"{k}: {p}" for k, p in parts) + "}"
    if isinstance(value, list):
        if any(isinstance(item, dict) for item in value):
            return None
        return "[" + ", ".join(_scalar(item) for item in value) + "]"
    return _scalar(value)


def _yaml(value: Any, indent: int) -> str:
    """Block style down to the layers; each layer without nested layers is one flow mapping."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            flow = _flow(item)
            lines.append(f"{pad}{key}: {flow}" if flow is not None else f"{pad}{key}:\n" + _yaml(item, indent + 2))
    else:
        for item in value:
            flow = _flow(item)
            # a mapping that holds layers: its first key on the dash line, the rest indented under it
            lines.append(f"{pad}- {flow}" if flow is not None else f"{pad}- " + _yaml(item, indent + 2)[indent + 2:])
    return "\n".join(lines) if lines else pad + ("{}" if isinstance(value, dict) else "[]")


def _holds_layers(value: Any) -> bool:
    """A list of tables, or a table with a table or list of tables inside (a container layer)."""
    return _is_table_list(value) or (isinstance(value, dict) and any(
        _is_table_list(v) or isinstance(v, dict) for v in value.values()))


def _json(value: Any, indent: int) -> str:
    """JSON with each layer that holds no other layers on one line; containers spread over lines."""
    flat = json.dumps(value)
    if not _holds_layers(value):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        body = [f"{pad}{json.dumps(key)}: {_json(item, indent + 2)}" for key, item in value.items()]
        return "{\n" + ",\n".join(body) + "\n" + " " * indent + "}"
    body = [pad + _json(item, indent + 2) for item in value]
    return "[\n" + ",\n".join(body) + "\n" + " " * indent + "]"
