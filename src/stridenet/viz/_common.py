"""Shared helpers of the plotting modules: matplotlib import, figure saving, image tiles, progress.

Figures are built as ``matplotlib.figure.Figure`` objects, not through ``pyplot``, so no GUI backend
and no global figure registry are involved: ``fig.savefig`` renders with Agg. matplotlib is imported
inside the functions, so ``import stridenet.viz`` works without it.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

T = TypeVar("T")

MATPLOTLIB_HINT = "plots need matplotlib: pip install 'stridenet[viz]'"


def new_figure(width: float, height: float) -> Figure:
    """An empty ``Figure`` of ``width`` x ``height`` inches, drawn with Agg.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(MATPLOTLIB_HINT) from error
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG to ``path`` (parent folders are created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The PNG bytes of ``fig`` (for embedding in a page)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def grid_shape(n: int, max_cols: int = 8) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding ``n`` tiles, at most ``max_cols`` wide."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(n))))
    return max(1, math.ceil(n / cols)), cols


def tile_axes(fig: Figure, n: int, cols: int) -> list[Axes]:
    """``n`` axes in a grid ``cols`` wide on ``fig``, ticks off; surplus grid cells are hidden."""
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    return list(axes[:n])


def show_image(ax: Axes, image: np.ndarray) -> None:
    """Draw one (C, H, W) image: grayscale for C = 1, RGB for C = 3, else the channel mean in gray.

    uint8 images are shown as they are (0 = black, 255 = white); float images are min-max scaled.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = (image - low) / (high - low) if high > low else np.zeros_like(image, dtype=np.float64)
        vmax = 1.0
    else:
        vmax = 255
    if image.shape[0] == 3:
        ax.imshow(np.transpose(image, (1, 2, 0)), interpolation="nearest")
    else:
        ax.imshow(image.mean(axis=0) if image.shape[0] > 1 else image[0], cmap="gray", vmin=0, vmax=vmax,
                  interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def progress(items: Iterable[T], total: int, desc: str, enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` showing progress on stderr: a tqdm bar if tqdm is installed, else a
    line every 10 %. ``enabled=False`` shows nothing."""
    if not enabled:
        yield from items
        return
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(items, total=total, desc=desc, unit="batch", leave=False, file=sys.stderr)
        return
    step = max(1, total // 10)
    for i, item in enumerate(items, 1):
        yield item
        if i % step == 0 or i == total:
            print(f"{desc}: {i}/{total}", file=sys.stderr, flush=True)


def batches(n: int, batch_size: int) -> list[slice]:
    """Slices covering ``range(n)`` in steps of ``batch_size``."""
    return [slice(start, min(n, start + batch_size)) for start in range(0, n, batch_size)]


def describe(layer: Any) -> str:
    """A layer's repr on one line (containers are shown by their type name only)."""
    text = repr(layer)
    return text if "\n" not in text else type(layer).__name__
