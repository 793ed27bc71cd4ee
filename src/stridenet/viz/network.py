"""Figures of what a network has learned: first-layer filters, activation maps, strongest inputs of
deeper channels, and saliency maps. Each function returns a ``matplotlib.figure.Figure``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from stridenet.viz._common import describe, grid_shape, new_figure, show_image, tile_axes
from stridenet.viz.probe import LayerOutput, TopActivations

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def filter_tiles(weight: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Split conv weights (K, C, kH, kW) into images to show and their captions.

    With C = 3 each filter is one RGB tile (C, kH, kW); otherwise every (filter, channel) pair is a
    grayscale tile (1, kH, kW). Each tile is min-max scaled to [0, 1] on its own, so mid-gray is
    not zero: the pattern, not the magnitude, is what is shown.
    """
    k, c = weight.shape[:2]
    tiles, captions = [], []
    for f in range(k):
        parts = [weight[f]] if c == 3 else [weight[f, ch : ch + 1] for ch in range(c)]
        for ch, part in enumerate(parts):
            low, high = float(part.min()), float(part.max())
            tiles.append((part - low) / (high - low) if high > low else np.full(part.shape, 0.5))
            captions.append(f"{f}" if len(parts) == 1 else f"{f}/c{ch}")
    return tiles, captions


def plot_filters(weight: np.ndarray, title: str = "First-layer filters", max_tiles: int = 128) -> Figure:
    """The filters of a convolution as an image grid: RGB for 3 input channels, grayscale otherwise.

    Args:
        weight: conv weights (K, C, kH, kW), e.g. ``model[0].weight.data``.
        title: figure title (the shape is added).
        max_tiles: show at most this many tiles.

    Returns:
        The figure; each tile is captioned with its filter index (and channel when C is not 1 or 3).
    """
    tiles, captions = filter_tiles(np.asarray(weight, dtype=np.float64))
    shown = min(len(tiles), max_tiles)
    rows, cols = grid_shape(shown, 16)
    fig = new_figure(max(5.5, 0.75 * cols + 0.5), 0.8 * rows + 1.2)
    for ax, tile, caption in zip(tile_axes(fig, shown, cols), tiles, captions, strict=False):
        if tile.shape[0] == 3:
            ax.imshow(np.transpose(tile, (1, 2, 0)), interpolation="nearest")
        else:
            ax.imshow(tile[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(caption, fontsize=7, pad=2)
    kind = "RGB" if weight.shape[1] == 3 else "grayscale"
    more = f", first {shown} of {len(tiles)}" if shown < len(tiles) else ""
    fig.suptitle(f"{title}\n{weight.shape[0]} filters of shape {tuple(weight.shape[1:])} ({kind}{more})")
    return fig


def plot_activation_map(record: LayerOutput, index: int = 0, max_channels: int = 64) -> Figure:
    """One layer's activation maps for one input: a grid with one tile per channel.

    Args:
        record: from ``probe.activation_maps``; ``record.output`` is (N, K, H_out, W_out).
        index: which input of the batch.
        max_channels: show at most this many channels (the first ones).

    Returns:
        The figure; tile ``c`` shows ``record.output[index, c]`` (each tile with its own colour scale,
        the range in its caption) and the title names the layer and its output shape.
    """
    maps = record.output[index]
    shown = min(len(maps), max_channels)
    rows, cols = grid_shape(shown, 8)
    fig = new_figure(max(4.5, 1.25 * cols + 0.5), 1.3 * rows + 1.0)
    for c, ax in enumerate(tile_axes(fig, shown, cols)):
        ax.imshow(maps[c], cmap="viridis", interpolation="nearest")
        ax.set_title(f"ch {c}  [{maps[c].min():.2g}, {maps[c].max():.2g}]", fontsize=6, pad=2)
    more = f"; first {shown} of {len(maps)} channels" if shown < len(maps) else ""
    fig.suptitle(f"Layer {record.name}: {describe(record.layer)}\n"
                 f"output shape {tuple(maps.shape)} (channels, height, width){more}", fontsize=10)
    return fig


def plot_top_activations(top: TopActivations, images: np.ndarray) -> Figure:
    """For each chosen channel of a layer (one row), the images that activate it most, strongest first.

    Args:
        top: from ``probe.top_activating_images``.
        images: the uint8 (N, C, H, W) images ``top.indices`` point into.
    """
    n_rows, k = top.indices.shape
    fig = new_figure(1.3 * k + 0.8, 1.45 * n_rows + 0.9)
    axes = np.atleast_2d(fig.subplots(n_rows, k, squeeze=False))
    for r in range(n_rows):
        for j in range(k):
            ax = axes[r, j]
            show_image(ax, images[top.indices[r, j]])
            ax.set_title(f"#{top.indices[r, j]}: {top.scores[r, j]:.2g}", fontsize=7, pad=2)
        axes[r, 0].set_ylabel(f"channel {top.channels[r]}", fontsize=9)
    fig.suptitle(f"Layer {top.name}: {describe(top.layer)}\n"
                 "test images with the highest peak activation per channel (caption: index: peak)", fontsize=10)
    return fig


def plot_saliency(image: np.ndarray, saliency: np.ndarray, classes: Sequence[str], predicted: int,
                  probability: float, label: int | None = None) -> Figure:
    """Input image, its saliency map and the two overlaid.

    Args:
        image: the uint8 (C, H, W) input as the user sees it.
        saliency: (H, W) from ``probe.saliency_map``.
        classes: class names.
        predicted: the class explained.
        probability: the model's probability for it.
        label: the true class, if known.
    """
    fig = new_figure(9.5, 3.8)
    ax_image, ax_map, ax_overlay = fig.subplots(1, 3)
    truth = f" (true: {classes[label]})" if label is not None else ""
    show_image(ax_image, image)
    ax_image.set_title(f"input{truth}", fontsize=9)
    shown = ax_map.imshow(saliency, cmap="hot", interpolation="nearest")
    ax_map.set_title("|d score / d pixel|, max over channels", fontsize=9)
    ax_map.set_xticks([])
    ax_map.set_yticks([])
    fig.colorbar(shown, ax=ax_map, fraction=0.046, pad=0.04)
    show_image(ax_overlay, image)
    ax_overlay.imshow(saliency, cmap="hot", alpha=0.55, interpolation="bilinear")
    ax_overlay.set_title("overlay", fontsize=9)
    fig.suptitle(f"Saliency of the predicted class '{classes[predicted]}' (p = {probability:.2f})")
    return fig
