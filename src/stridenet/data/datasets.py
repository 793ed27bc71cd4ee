"""The ``Dataset`` record and ``load_dataset``, which turns a dataset name into ``(train, test)``.

Names: ``mnist-sample`` (10,000 MNIST digits shipped inside the package), ``mnist``,
``fashion-mnist`` (official IDX files from ``--data-dir`` or the download cache), ``cifar10``
(binary version) and ``folder`` (``train/`` and ``test/`` image folders, one sub-folder per class).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from stridenet.data import cifar
from stridenet.data.download import cache_dir, download_dataset
from stridenet.data.folder import load_image_folder
from stridenet.data.idx import IMAGES_MAGIC, LABELS_MAGIC, check_images, check_pair, load_idx_pair, parse_idx
from stridenet.errors import DataError

DATASETS = ("mnist-sample", "mnist", "fashion-mnist", "cifar10", "folder")
MNIST_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
BUILTIN_SHA256 = {
    "train-images-idx3-ubyte.gz": "73f753cb32acc71e0a66b4ec27c486cc0d99ade2ef0c0098b3fda19b7e0935de",
    "train-labels-idx1-ubyte.gz": "4aa8ddf1f5b45678e3ef5c1152decce1d902819c8ff84d9fc8c072e668c7cb93",
    "t10k-images-idx3-ubyte.gz": "14be64620ab5a0f00074ef549c919ab96d41d454ec1a14e7cb8331b0410ddfa8",
    "t10k-labels-idx1-ubyte.gz": "cfe093cd869ae65b67cc71e713066213dc2dae06dd726fd4e952df2596c4a436",
}
FOLDER_TEST_FRACTION = 0.2
FOLDER_SPLIT_SEED = 0


@dataclass
class Dataset:
    """Images and labels of one split, kept as uint8 until a loader normalises a batch.

    Attributes:
        images: uint8 array (N, C, H, W).
        labels: int64 array (N,), values in ``0 .. len(classes) - 1``.
        classes: class names; label ``i`` is ``classes[i]``.
        name: dataset name, e.g. ``"mnist"``.
        split: ``"train"``, ``"val"``, ``"test"`` or ``""``.

    Raises:
        DataError: (on construction) wrong dtype or rank, counts differ, or a label is out of range.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str
    split: str = ""

    def __post_init__(self) -> None:
        where = f"Dataset {self.name!r} ({self.split or 'no split'})"
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{where}: expected uint8 images of shape (N, C, H, W), "
                f"received {self.images.dtype} of shape {self.images.shape}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise DataError(
                f"{where}: expected int64 labels of shape ({len(self.images)},), "
                f"received {self.labels.dtype} of shape {self.labels.shape}"
            )
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(
                f"{where}: expected labels 0..{len(self.classes) - 1}, "
                f"received range {self.labels.min()}..{self.labels.max()}"
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return c, h, w

    def subset(self, indices: np.ndarray, split: str | None = None) -> Dataset:
        """A new dataset holding the samples at ``indices`` (copied), optionally renamed split."""
        split = self.split if split is None else split
        return Dataset(self.images[indices], self.labels[indices], list(self.classes), self.name, split)


def train_val_split(dataset: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split off a random ``val_fraction`` of ``dataset`` (a seeded permutation, not stratified).

    Args:
        dataset: the dataset to split.
        val_fraction: share of samples for validation, ``0 < val_fraction < 1``; the count is
            rounded and kept between 1 and N - 1.
        seed: seed of ``np.random.default_rng``. Default: 0.

    Returns:
        ``(train, val)``; each keeps the original sample order. Splits are named "train" and "val".

    Raises:
        ValueError: ``val_fraction`` outside (0, 1), or fewer than 2 samples.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_val_split: expected 0 < val_fraction < 1, received {val_fraction}")
    n = len(dataset)
    if n < 2:
        raise ValueError(f"train_val_split: expected at least 2 samples to split, received {n}")
    n_val = min(max(round(n * val_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return dataset.subset(np.sort(order[n_val:]), "train"), dataset.subset(np.sort(order[:n_val]), "val")


def _find_idx(folder: Path, stem: str) -> Path:
    dotted = stem.replace("-idx", ".idx")  # some unpacked copies are named train-images.idx3-ubyte
    for name in (f"{stem}.gz", stem, f"{dotted}.gz", dotted):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: expected {stem}.gz (or un-gzipped {stem}), not found")


def _load_idx_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = IDX_STEMS[split]
    images, labels = load_idx_pair(_find_idx(folder, images_stem), _find_idx(folder, labels_stem))
    return images[:, None], labels  # (N, H, W) -> (N, 1, H, W)


def _load_builtin_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for stem, magic in zip(IDX_STEMS[split], (IMAGES_MAGIC, LABELS_MAGIC), strict=True):
        name = f"{stem}.gz"
        source = f"stridenet/data/builtin/{name}"
        data = resources.files("stridenet.data").joinpath("builtin", name).read_bytes()
        found = hashlib.sha256(data).hexdigest()
        if found != BUILTIN_SHA256[name]:
            raise DataError(f"{source}: expected sha256 {BUILTIN_SHA256[name]}, found {found}")
        arrays.append(parse_idx(data, source, magic))
    images_source, labels_source = (f"stridenet/data/builtin/{stem}.gz" for stem in IDX_STEMS[split])
    images = check_images(arrays[0], images_source)
    return images[:, None], check_pair(images, arrays[1], images_source, labels_source, 10)


def _idx_folder(name: str, data_dir: str | os.PathLike[str] | None, download_missing: bool) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if download_missing:
        return download_dataset(name)
    folder = cache_dir() / name
    if not all((folder / f"{stem}.gz").is_file() for stems in IDX_STEMS.values() for stem in stems):
        raise DataError(
            f"{name}: not found in the cache folder {folder}; pass --data-dir DIR (a folder with the "
            "official files) or --download to fetch it"
        )
    return folder


def _cifar_folder(data_dir: str | os.PathLike[str] | None, download_missing: bool) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if download_missing:
        return download_dataset("cifar10")
    folder = cache_dir() / "cifar10"
    if not (folder / cifar.FOLDER).is_dir():
        raise DataError(
            f"cifar10: not found in the cache folder {folder}; pass --data-dir DIR (holding "
            f"{cifar.FOLDER}/) or --download to fetch it"
        )
    return folder


def _adapt(images: np.ndarray, name: str, image_size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """Convert a fixed-format dataset to ``channels``; ``image_size`` must match its size."""
    _, c, h, w = images.shape
    if image_size is not None and tuple(image_size) != (h, w):
        raise DataError(
            f"{name}: images are {h}x{w}, cannot use image size {tuple(image_size)}; "
            "resizing applies to the folder dataset only"
        )
    if channels is None or channels == c:
        return images
    if channels == 3:  # gray -> RGB: copy the plane
        return np.repeat(images, 3, axis=1)
    # RGB -> gray: ITU-R 601 luma in 16-bit fixed point, exactly as Pillow's convert("L")
    weights = np.array([19595, 38470, 7471], dtype=np.uint32).reshape(1, 3, 1, 1)
    return (((images * weights).sum(axis=1, keepdims=True) + 0x8000) >> 16).astype(np.uint8)


def _load_folder(
    data_dir: str | os.PathLike[str] | None, image_size: tuple[int, int] | None, channels: int | None
) -> tuple[Dataset, Dataset]:
    if data_dir is None:
        raise DataError("folder: pass --data-dir DIR holding train/ (and optionally test/) class folders")
    root = Path(data_dir)
    images, labels, classes = load_image_folder(root / "train", channels=channels, size=image_size)
    train = Dataset(images, labels, classes, "folder", "train")
    if not (root / "test").is_dir():
        train, test = train_val_split(train, FOLDER_TEST_FRACTION, FOLDER_SPLIT_SEED)
        return train, Dataset(test.images, test.labels, classes, "folder", "test")
    c, h, w = train.image_shape
    images, labels, _ = load_image_folder(root / "test", channels=c, size=image_size, classes=classes)
    if images.shape[2:] != (h, w):
        raise DataError(
            f"{root / 'test'}: expected {h}x{w} images like {root / 'train'}, found "
            f"{images.shape[2]}x{images.shape[3]}; pass --image-size H W to resize both"
        )
    return train, Dataset(images, labels, classes, "folder", "test")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
) -> tuple[Dataset, Dataset]:
    """Load a dataset by name as ``(train, test)``.

    Args:
        name: one of ``DATASETS``.
        data_dir: folder holding the files: the four IDX files (gz or not) for MNIST and
            Fashion-MNIST, ``cifar-10-batches-bin/`` or that folder itself for CIFAR-10, ``train/``
            and ``test/`` class folders for ``folder`` (without ``test/``, 20% of ``train/`` is split
            off with a fixed seed). Default: None, the download cache
            (``stridenet.data.download.cache_dir()``); ignored by ``mnist-sample``.
        download: fetch missing files into the cache when ``data_dir`` is None. Default: False.
        image_size: ``(H, W)``; ``folder`` images are resized to it, other datasets must already
            have it. Default: None (keep the size; folder images must then share one size).
        channels: 1 or 3; images are converted (gray <-> RGB). Default: None (keep).

    Returns:
        ``(train, test)`` datasets with uint8 NCHW images and int64 labels.

    Raises:
        DataError: unknown name, missing or malformed files, or a size that does not fit.
        ValueError: ``channels`` not in (None, 1, 3).
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if channels not in (None, 1, 3):
        raise ValueError(f"load_dataset: expected channels 1, 3 or None, received {channels!r}")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if name == "folder":
        return _load_folder(data_dir, image_size, channels)
    if name == "cifar10":
        train_split, test_split, classes = cifar.load_cifar10(_cifar_folder(data_dir, download))
    else:
        if name == "mnist-sample":
            train_split, test_split = _load_builtin_split("train"), _load_builtin_split("test")
        else:
            folder = _idx_folder(name, data_dir, download)
            train_split, test_split = _load_idx_split(folder, "train"), _load_idx_split(folder, "test")
        classes = list(FASHION_MNIST_CLASSES if name == "fashion-mnist" else MNIST_CLASSES)
    train_images, train_labels = train_split
    test_images, test_labels = test_split
    return (
        Dataset(_adapt(train_images, name, image_size, channels), train_labels, list(classes), name, "train"),
        Dataset(_adapt(test_images, name, image_size, channels), test_labels, list(classes), name, "test"),
    )
