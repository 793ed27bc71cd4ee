"""Architectures: presets, specs (files, dicts, one-line strings) and layer-by-layer summaries.

Names are imported on first use, so ``stridenet --help`` (which loads ``stridenet.models.cli``) does
not pay for NumPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PRESETS": "presets", "build_preset": "presets",
    "SpecError": "spec", "build_model": "spec", "from_spec": "spec", "to_spec": "layers",
    "LineSyntaxError": "line", "parse_line": "line", "to_line": "line",
    "dump_spec": "spec_files",
    "Summary": "summary", "SummaryRow": "summary", "summary": "summary",
    "MeasuredField": "receptive", "measure_receptive_field": "receptive",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stridenet.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stridenet.models.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
