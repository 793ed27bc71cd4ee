"""Architectures: presets, and (see spec.py, summary.py) specs and layer-by-layer summaries."""

from stridenet.models.presets import PRESETS, build_preset

__all__ = ["PRESETS", "build_preset"]
