"""The one-line spec form: ``"conv3x32-relu-conv3x32-relu-pool2-fc128-relu-fc10"``.

Grammar (whitespace ignored)::

    chain := item ('-' item)*
    item  := atom ['*' N]                       repeat the atom N times
    atom  := LAYER | '[' chain ']'              a nested Sequential
           | 'res(' chain ['|' chain] ')'       Residual(block, shortcut); identity shortcut if none
           | '(' chain ')'                      a group, spliced in (useful with *N)

    conv{F}x{K}, conv{Fh}x{Fw}x{K}   Conv2d, kernel F, K filters; conv{F} alone: K = number of classes
        modifiers  s{S} stride, p{P} | psame | pvalid padding, d{D} dilation, g{G} groups, nb no bias
        (S, P, D may be pairs written 2x1)
    fc{N}, fc                         Linear to N features, or to the number of classes; nb: no bias
    pool{F}, maxpool{F}, avgpool{F}   pooling, stride F unless s{S}; p{P}, d{D} (max), ceil, excl
                                      (avg: padding not counted in the mean)
    gap  flatten  relu  lrelu[{a}]  drop[{p}]  bn  id
                                      global average pool, flatten, ReLU, LeakyReLU, Dropout,
                                      BatchNorm (1d or 2d from the input), Identity

A chain inside ``res( )`` is a Sequential unless it is a single atom. An ``fc`` that meets an image
gets a flatten before it. The line parses into an ordinary spec (a list of layer tables), so it builds
through ``from_spec`` like a file; ``to_line`` writes any spec or model back where the form can say it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from stridenet import nn
from stridenet.models.layers import CLASSES
from stridenet.models.spec import SpecError, SpecSource

LAYER_WORDS = ("conv{F}x{K}", "fc{N}", "pool{F}", "maxpool{F}", "avgpool{F}", "gap", "flatten", "relu",
               "lrelu{a}", "drop{p}", "bn", "id")
_VALID = (f"valid layers: {', '.join(LAYER_WORDS)}; blocks: [...] (Sequential), res(block|shortcut), "
          "(...)*N (repeat)")
_TOKEN = re.compile(r"\s*(res\(|[()\[\]|-]|\*\d+|[A-Za-z][A-Za-z0-9.]*)")
_MODIFIER = re.compile(r"([spdg])(\d+(?:x\d+)?|same|valid)|(nb|ceil|excl)")
_SIMPLE = {"gap": "globalavgpool2d", "flatten": "flatten", "relu": "relu", "bn": "batchnorm", "id": "identity"}
_PLACE = "_place"  # the parser's note of where an entry came from; removed before building


class LineSyntaxError(SpecError):
    """A one-line spec that does not parse; ``item`` is the 1-based layer word it failed at, if any."""

    def __init__(self, message: str, item: int | None = None) -> None:
        super().__init__(message)
        self.item = item


def parse_line(text: str) -> SpecSource:
    """Parse a one-line spec into a spec source (``{"layers": [...]}``) that ``from_spec`` builds.

    Raises:
        LineSyntaxError: naming the item (the n-th layer word) or character where parsing failed.

    Example:
        >>> parse_line("conv3x16s2-relu-fc").data["layers"][0]
        {'type': 'conv2d', 'out_channels': 16, 'kernel_size': 3, 'stride': 2}
    """
    parser = _Parser(text)
    entries = parser.chain()
    if parser.pos < len(parser.tokens):
        token, at = parser.tokens[parser.pos]
        raise LineSyntaxError(f"one-line spec: unexpected {token!r} at character {at + 1} of {text!r}")
    places: dict[str, str] = {}
    _strip_places(entries, "layers", places)
    return SpecSource({"layers": entries}, lambda path: places.get(path, f"one-line spec {path}".rstrip()))


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []
        self.words: list[str] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match:
                raise LineSyntaxError(f"one-line spec: unexpected {text[pos:].lstrip()[:1]!r} at character "
                                      f"{pos + 1} of {text!r}; {_VALID}")
            self.tokens.append((match.group(1), match.start(1)))
            pos = match.end()
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def expect(self, token: str) -> None:
        if self.peek() != token:
            where = f"character {self.tokens[self.pos][1] + 1}" if self.pos < len(self.tokens) else "the end"
            raise LineSyntaxError(f"one-line spec: expected {token!r} at {where} of {self.text!r}")
        self.pos += 1

    def chain(self) -> list[dict[str, Any]]:
        """Items separated by '-', spliced into one list of entries."""
        return [entry for entries, _ in self.items() for entry in entries]

    def items(self) -> list[tuple[list[dict[str, Any]], bool]]:
        """Each item's entries and whether it is a plain atom (not a group, not repeated). A chain may
        be empty only right before a closing bracket or '|'."""
        if self.peek() in (None, "]", ")", "|"):
            return []
        items = [self.item()]
        while self.peek() == "-":
            self.pos += 1
            items.append(self.item())
        return items

    def item(self) -> tuple[list[dict[str, Any]], bool]:
        plain = self.peek() != "("
        entries = self.atom()
        token = self.peek()
        if token is not None and token.startswith("*"):
            self.pos += 1
            entries = [copy.deepcopy(entry) for _ in range(int(token[1:])) for entry in entries]
            plain = False
        return entries, plain

    def atom(self) -> list[dict[str, Any]]:
        token = self.peek()
        if token is None or token in ("-", "|", ")", "]") or token.startswith("*"):
            where = f"character {self.tokens[self.pos][1] + 1}" if token is not None else "the end"
            raise LineSyntaxError(f"one-line spec: expected a layer at {where} of {self.text!r}; {_VALID}")
        at = f"one-line spec {token!r} at character {self.tokens[self.pos][1] + 1}"
        self.pos += 1
        if token == "[":
            layers = self.chain()
            self.expect("]")
            return [{"type": "sequential", "layers": layers, _PLACE: at}]
        if token == "(":
            entries = self.chain()
            self.expect(")")
            return entries
        if token == "res(":
            entry: dict[str, Any] = {"type": "residual", "block": self.branch(), _PLACE: at}
            if self.peek() == "|":
                self.pos += 1
                entry["shortcut"] = self.branch()
            self.expect(")")
            return [entry]
        self.words.append(token)
        entry = _layer(token, len(self.words))
        entry[_PLACE] = f"one-line spec item {len(self.words)} {token!r}"
        return [entry]

    def branch(self) -> dict[str, Any] | list[dict[str, Any]]:
        """A residual branch: a single plain atom stays itself; anything else is a Sequential (a list)."""
        items = self.items()
        if len(items) == 1 and items[0][1]:
            return items[0][0][0]
        return [entry for entries, _ in items for entry in entries]


def _pair(text: str) -> int | list[int]:
    numbers = [int(n) for n in text.split("x")]
    return numbers[0] if len(numbers) == 1 else numbers


def _modifiers(word: str, rest: str, allowed: str, item: int) -> dict[str, Any]:
    """Parse ``s2p1nb``-style modifiers; ``allowed`` lists the ones this layer takes (``psame`` stands
    for the named paddings 'same' and 'valid')."""
    names = {"s": "stride", "p": "padding", "d": "dilation", "g": "groups"}
    flags = {"nb": ("bias", False), "ceil": ("ceil_mode", True), "excl": ("count_include_pad", False)}
    args: dict[str, Any] = {}
    pos = 0
    while pos < len(rest):
        match = _MODIFIER.match(rest, pos)
        key = match and (match.group(3) or ("psame" if match.group(2) in ("same", "valid") else match.group(1)))
        if not match or key not in allowed.split():
            raise LineSyntaxError(f"one-line spec item {item} {word!r}: unexpected {rest[pos:]!r}; modifiers for "
                                  f"this layer: {allowed.replace(' ', ', ').replace('psame', 'psame, pvalid')}", item)
        if key in flags:
            args[flags[key][0]] = flags[key][1]
        elif key == "psame":
            args["padding"] = match.group(2)
        else:
            args[names[key]] = _pair(match.group(2))
        pos = match.end()
    return args


def _layer(word: str, item: int) -> dict[str, Any]:
    """One layer word -> a spec entry."""
    if word in _SIMPLE:
        return {"type": _SIMPLE[word]}
    if match := re.fullmatch(r"conv(\d+(?:x\d+){0,2})([a-z].*)?", word):
        numbers = [int(n) for n in match.group(1).split("x")]
        kernel: int | list[int] = numbers[0] if len(numbers) < 3 else numbers[:2]
        count: int | str = numbers[-1] if len(numbers) > 1 else CLASSES
        return {"type": "conv2d", "out_channels": count, "kernel_size": kernel,
                **_modifiers(word, match.group(2) or "", "s p psame d g nb", item)}
    if match := re.fullmatch(r"fc(\d*)([a-z].*)?", word):
        return {"type": "linear", "out_features": int(match.group(1)) if match.group(1) else CLASSES,
                **_modifiers(word, match.group(2) or "", "nb", item)}
    if match := re.fullmatch(r"(max|avg)?pool(\d+(?:x\d+)?)([a-z].*)?", word):
        avg = match.group(1) == "avg"
        return {"type": "avgpool2d" if avg else "maxpool2d", "kernel_size": _pair(match.group(2)),
                **_modifiers(word, match.group(3) or "", "s p ceil excl" if avg else "s p d ceil", item)}
    if match := re.fullmatch(r"(lrelu|drop)(\d*\.?\d*)", word):
        entry: dict[str, Any] = {"type": "leakyrelu" if match.group(1) == "lrelu" else "dropout"}
        if match.group(2) not in ("", "."):
            entry["negative_slope" if match.group(1) == "lrelu" else "p"] = float(match.group(2))
        return entry
    raise LineSyntaxError(f"one-line spec item {item} {word!r}: unknown layer; {_VALID}", item)


def _strip_places(node: Any, path: str, places: dict[str, str]) -> None:
    """Remove the parser's notes, recording where in the line each layer path came from."""
    if isinstance(node, list):
        for index, entry in enumerate(node):
            _strip_places(entry, f"{path}[{index}]", places)
        return
    places[path] = node.pop(_PLACE)
    if node["type"] == "sequential":
        _strip_places(node["layers"], f"{path}.layers", places)
    elif node["type"] == "residual":
        for key in ("block", "shortcut"):
            if key in node:
                _strip_places(node[key], f"{path}.{key}", places)


def to_line(spec: nn.Layer | dict[str, Any] | list[Any], num_classes: int | None = None) -> str:
    """Write a model or spec in the one-line form.

    Args:
        spec: a model (described with ``to_spec``), a spec dict or a list of layer entries.
        num_classes: for a model, write its classifier head's count as ``fc``/``conv{F}`` (classes).

    Raises:
        ValueError: a layer the one-line form cannot express (say BatchNorm with another eps).

    Example:
        >>> to_line({"layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}]})
        'conv3x8p1'
    """
    if isinstance(spec, nn.Layer):
        from stridenet.models.layers import to_spec

        spec = to_spec(spec, num_classes=num_classes)
    entries = spec["layers"] if isinstance(spec, dict) else spec
    return "-".join(_word(entry) for entry in entries)


def _number(value: float, entry: dict[str, Any]) -> str:
    text = f"{value:g}"
    if "e" in text:
        raise ValueError(f"the one-line form cannot write {value!r} in {entry}; use a spec file")
    return text


def _pair_text(value: int | list[int] | tuple[int, int]) -> str:
    return str(value) if isinstance(value, int) else f"{value[0]}x{value[1]}"


def _word(entry: dict[str, Any]) -> str:
    kind = entry["type"]
    extra = {k: v for k, v in entry.items() if k not in ("type", "in_channels", "in_features", "num_features")}
    if kind == "sequential":
        return "[" + "-".join(_word(e) for e in entry["layers"]) + "]"
    if kind == "residual":
        text = "res(" + _branch_text(entry["block"])
        return text + ("|" + _branch_text(entry["shortcut"]) if "shortcut" in entry else "") + ")"
    words = {v: k for k, v in _SIMPLE.items()} | {"batchnorm2d": "bn", "batchnorm1d": "bn"}
    if kind in words and not extra:
        return words[kind]
    if kind == "conv2d":
        kernel, count = extra.pop("kernel_size"), extra.pop("out_channels")
        if count == CLASSES and not isinstance(kernel, int):
            raise ValueError(f"the one-line form cannot write a non-square conv with a class count: {entry}")
        text = "conv" + _pair_text(kernel) + ("" if count == CLASSES else f"x{count}")
        return text + _modifier_text(extra, entry)
    if kind == "linear":
        count = extra.pop("out_features")
        return "fc" + ("" if count == CLASSES else str(count)) + _modifier_text(extra, entry)
    if kind in ("maxpool2d", "avgpool2d"):
        text = ("pool" if kind == "maxpool2d" else "avgpool") + _pair_text(extra.pop("kernel_size"))
        return text + _modifier_text(extra, entry)
    if kind in ("leakyrelu", "dropout"):
        value = extra.pop("negative_slope" if kind == "leakyrelu" else "p", None)
        if not extra:
            return ("lrelu" if kind == "leakyrelu" else "drop") + ("" if value is None else _number(value, entry))
    raise ValueError(f"the one-line form cannot write {entry}; use a spec file (toml, yaml or json)")


def _branch_text(branch: dict[str, Any] | list[dict[str, Any]]) -> str:
    if isinstance(branch, dict):
        return _word(branch)
    return "[" + _word(branch[0]) + "]" if len(branch) == 1 else "-".join(_word(e) for e in branch) or "[]"


def _modifier_text(args: dict[str, Any], entry: dict[str, Any]) -> str:
    letters = {"stride": "s", "padding": "p", "dilation": "d", "groups": "g"}
    flags = {("bias", False): "nb", ("ceil_mode", True): "ceil", ("count_include_pad", False): "excl"}
    text = ""
    for key, value in args.items():
        if key in letters:
            text += letters[key] + (value if isinstance(value, str) else _pair_text(value))
        elif (key, value) in flags:
            text += flags[key, value]
        else:
            raise ValueError(f"the one-line form cannot write {key}={value!r} in {entry}; use a spec file")
    return text
