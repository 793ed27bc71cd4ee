"""Mini-batches with reproducible shuffling and augmentation, so a resumed run is bit-exact.

All randomness of epoch ``e`` comes from ``np.random.default_rng([seed, e])``, drawn at the start of
the epoch for every sample at once: first the permutation (when shuffling), then the crop offsets,
then the flip mask (when augmenting). Batch ``b`` of epoch ``e`` therefore depends only on
``(seed, e, b)``: a run resumed at epoch ``e``, batch ``b`` sees exactly the batches an uninterrupted
run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from stridenet.data.datasets import train_val_split
from stridenet.data.transforms import Augment, apply_augment, draw_augment, normalize

__all__ = ["DataLoader", "train_val_split"]


class DataLoader:
    """Batches of normalised float32 images and int64 labels from uint8 images.

    Args:
        images: uint8 (N, C, H, W); kept by reference, never modified.
        labels: integer (N,); stored as int64.
        batch_size: samples per batch, >= 1.
        shuffle: draw a fresh permutation each epoch. Default: False.
        seed: non-negative integer; epoch ``e`` uses ``np.random.default_rng([seed, e])``. Default: 0.
        mean: C channel means on the [0, 1] scale (e.g. ``Normalizer.mean``).
        std: C positive channel stds.
        augment: random crop / flip, or None for none. Default: None.
        drop_last: drop a last batch smaller than ``batch_size``. Default: False.

    Shape:
        Each batch: x float32 (B, C, H, W), y int64 (B,), B = batch_size except maybe the last.

    Raises:
        ValueError: wrong dtypes or shapes, counts differ, batch_size < 1, negative seed,
            or mean/std not of length C.

    Example:
        >>> images = np.zeros((10, 1, 28, 28), np.uint8)
        >>> loader = DataLoader(images, np.arange(10), 4, shuffle=True, seed=0, mean=[0.1], std=[0.3])
        >>> len(loader), [x.shape for x, _ in loader.epoch(0)][-1]
        (3, (2, 1, 28, 28))
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Augment | None = None,
        drop_last: bool = False,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(
                f"DataLoader: expected uint8 images of shape (N, C, H, W), "
                f"received {images.dtype} of shape {images.shape}"
            )
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"DataLoader: expected integer labels of shape ({len(images)},), "
                f"received {labels.dtype} of shape {labels.shape}"
            )
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataLoader: expected batch_size >= 1, received {batch_size!r}")
        if int(seed) != seed or seed < 0:
            raise ValueError(f"DataLoader: expected a non-negative integer seed, received {seed!r}")
        c = images.shape[1]
        if len(mean) != c or len(std) != c or min(std) <= 0:
            raise ValueError(
                f"DataLoader: expected {c} means and {c} positive stds for images of shape {images.shape}, "
                f"received mean {list(mean)} and std {list(std)}"
            )
        self.images = images
        self.labels = labels.astype(np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.augment = augment
        self.drop_last = drop_last

    @property
    def num_samples(self) -> int:
        """N, the number of samples."""
        return len(self.labels)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch(self, epoch_index: int, start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The batches of one epoch, from batch ``start_batch`` on.

        Args:
            epoch_index: e >= 0; selects the epoch's random generator.
            start_batch: skip the first b batches (0 <= b <= len(self)); the batches produced are
                identical to batches b, b+1, ... of the full epoch. Default: 0.

        Returns:
            An iterator of ``(x, y)``: float32 (B, C, H, W) normalised, int64 (B,).

        Raises:
            ValueError: negative epoch_index, or start_batch outside 0..len(self).
        """
        if int(epoch_index) != epoch_index or epoch_index < 0:
            raise ValueError(f"DataLoader.epoch: expected epoch_index >= 0, received {epoch_index!r}")
        if int(start_batch) != start_batch or not 0 <= start_batch <= len(self):
            raise ValueError(f"DataLoader.epoch: expected start_batch in 0..{len(self)}, received {start_batch!r}")
        return self._batches(int(epoch_index), int(start_batch))

    def _batches(self, epoch_index: int, start_batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = self.num_samples
        rng = np.random.default_rng([self.seed, epoch_index])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        offsets = flips = None
        if self.augment is not None:
            offsets, flips = draw_augment(self.augment, n, rng)
        for b in range(start_batch, len(self)):
            batch = slice(b * self.batch_size, (b + 1) * self.batch_size)
            index = order[batch]
            x = self.images[index]  # (B, C, H, W) uint8 copy
            if self.augment is not None:
                x = apply_augment(
                    x,
                    self.augment.crop_padding,
                    None if offsets is None else offsets[batch],
                    None if flips is None else flips[batch],
                )
            yield normalize(x, self.mean, self.std), self.labels[index]

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Same as ``epoch(0)``; convenient for evaluation loaders (no shuffle, no augment)."""
        return self.epoch(0)
