"""Per-channel normalisation and batch augmentation (random crop, horizontal flip), vectorised.

Images stay uint8 (N, C, H, W) until a batch is drawn; augmentation works on the uint8 batch (zero
padding is a black border, as in torchvision's ``RandomCrop(padding=4)`` before ``Normalize``), and
normalisation turns it into float32 ``(x / 255 - mean) / std``. Mean and std are computed on the
training split only and kept as plain lists so they can go into a JSON config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _check_images(images: np.ndarray, where: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"{where}: expected uint8 images of shape (N, C, H, W), received {images.dtype} of shape {images.shape}"
        )


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1].

    Counts pixel values with ``np.bincount`` in blocks of samples, so the result is exact (up to
    float64 rounding) and no float copy of the whole array is made.

    Args:
        images: uint8 (N, C, H, W), N >= 1.

    Returns:
        ``(mean, std)``, two lists of C floats. A channel with zero std gets std 1.0.

    Raises:
        ValueError: not uint8 NCHW, or no images.
    """
    _check_images(images, "channel_stats")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("channel_stats: expected at least one image, received shape (0, ...)")
    counts = np.zeros((c, 256), dtype=np.int64)
    block = max(1, (1 << 22) // (h * w))  # samples per block: about 4M pixels a channel
    for start in range(0, n, block):
        chunk = images[start : start + block]
        for channel in range(c):
            counts[channel] += np.bincount(chunk[:, channel].ravel(), minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ values / total
    var = (counts * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / total
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return [float(m) for m in mean], [float(s) for s in std]


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Map uint8 images to float32 ``(x / 255 - mean[c]) / std[c]``.

    Args:
        images: uint8 (N, C, H, W).
        mean: C channel means on the [0, 1] scale.
        std: C channel stds, all positive.

    Returns:
        float32 (N, C, H, W).

    Raises:
        ValueError: wrong dtype or rank, or mean/std do not have C positive entries.
    """
    _check_images(images, "normalize")
    c = images.shape[1]
    mean_arr = np.asarray(mean, dtype=np.float64)
    std_arr = np.asarray(std, dtype=np.float64)
    if mean_arr.shape != (c,) or std_arr.shape != (c,) or not np.all(std_arr > 0):
        raise ValueError(
            f"normalize: expected {c} means and {c} positive stds for images of shape {images.shape}, "
            f"received mean {list(mean)} and std {list(std)}"
        )
    scale = (1.0 / (255.0 * std_arr)).astype(np.float32).reshape(1, c, 1, 1)
    shift = (-mean_arr / std_arr).astype(np.float32).reshape(1, c, 1, 1)
    out = images.astype(np.float32)
    out *= scale
    out += shift
    return out


@dataclass
class Normalizer:
    """Per-channel normalisation with statistics fitted on a training split.

    Attributes:
        mean: C channel means on the [0, 1] scale.
        std: C channel stds.

    Example:
        >>> images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
        >>> Normalizer.fit(images)(images).shape
        (8, 1, 28, 28)
    """

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: np.ndarray) -> Normalizer:
        """Compute mean and std from uint8 (N, C, H, W) training images (see :func:`channel_stats`)."""
        mean, std = channel_stats(images)
        return cls(mean, std)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Normalise uint8 (N, C, H, W) images to float32 (see :func:`normalize`)."""
        return normalize(images, self.mean, self.std)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}`` of plain floats, for a JSON config."""
        return {"mean": [float(m) for m in self.mean], "std": [float(s) for s in self.std]}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[float]]) -> Normalizer:
        """Rebuild from :meth:`to_dict` output."""
        return cls([float(m) for m in data["mean"]], [float(s) for s in data["std"]])


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, applied per sample with the loader's per-epoch generator.

    Args:
        crop_padding: pad each side with P zero pixels, then crop a random window of the original
            size; 0 disables cropping. Default: 4.
        flip: mirror left-right with probability 0.5. Default: True.

    Raises:
        ValueError: ``crop_padding`` negative or not an integer.
    """

    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.crop_padding, bool) or not isinstance(self.crop_padding, int) or self.crop_padding < 0:
            raise ValueError(f"Augment: expected crop_padding >= 0 (int), received {self.crop_padding!r}")


def crop_padded(images: np.ndarray, padding: int, offsets: np.ndarray) -> np.ndarray:
    """Zero-pad each image by ``padding`` and cut an H x W window at per-sample offsets.

    Args:
        images: (N, C, H, W).
        padding: P >= 0.
        offsets: int (N, 2), ``(top, left)`` of each window in the padded image, each in
            ``0 .. 2P``; ``(P, P)`` gives back the original image.

    Returns:
        (N, C, H, W), same dtype.

    Raises:
        ValueError: offsets of the wrong shape or out of range.
    """
    n, _, h, w = images.shape
    offsets = np.asarray(offsets)
    if offsets.shape != (n, 2) or (offsets.size and (offsets.min() < 0 or offsets.max() > 2 * padding)):
        raise ValueError(
            f"crop_padded: expected offsets of shape ({n}, 2) in 0..{2 * padding}, received shape {offsets.shape}"
        )
    padded = np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2P+1, 2P+1, H, W), a view
    # indices on axes 0, 2, 3 around a slice: the indexed axis goes first -> (N, C, H, W)
    return windows[np.arange(n), :, offsets[:, 0], offsets[:, 1]]


def flip_horizontal(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mirror left-right the images where ``mask`` is True; others are copied unchanged.

    Args:
        images: (N, C, H, W).
        mask: bool (N,).

    Returns:
        (N, C, H, W), a new array.
    """
    out = images.copy()
    out[mask] = images[mask, :, :, ::-1]
    return out


def draw_augment(augment: Augment, n: int, rng: np.random.Generator) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Draw the crop offsets and flip mask for ``n`` samples, in that order.

    Returns:
        ``(offsets, flips)``: int64 (n, 2) in ``0 .. 2P`` or None when cropping is off, and
        bool (n,) or None when flipping is off.
    """
    p = augment.crop_padding
    offsets = rng.integers(0, 2 * p + 1, size=(n, 2)) if p > 0 else None
    flips = rng.random(n) < 0.5 if augment.flip else None
    return offsets, flips


def apply_augment(images: np.ndarray, padding: int, offsets: np.ndarray | None, flips: np.ndarray | None) -> np.ndarray:
    """Apply the crops then flips drawn by :func:`draw_augment` to a batch (N, C, H, W)."""
    if offsets is not None:
        images = crop_padded(images, padding, offsets)
    if flips is not None:
        images = flip_horizontal(images, flips)
    return images
