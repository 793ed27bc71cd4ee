"""Datasets (IDX, CIFAR-10 binary, image folders, a built-in MNIST sample), downloads and loaders.

Typical use::

    from stridenet.data import DataLoader, Normalizer, load_dataset, train_val_split

    train, test = load_dataset("mnist-sample")
    train, val = train_val_split(train, 0.1, seed=0)
    norm = Normalizer.fit(train.images)
    loader = DataLoader(train.images, train.labels, 64, shuffle=True, seed=0, mean=norm.mean, std=norm.std)
    for x, y in loader.epoch(0):
        ...
"""

from stridenet.data.datasets import DATASETS, Dataset, load_dataset, train_val_split
from stridenet.data.download import cache_dir, download_dataset
from stridenet.data.loader import DataLoader
from stridenet.data.transforms import Augment, Normalizer, channel_stats, normalize

__all__ = [
    "DATASETS",
    "Augment",
    "DataLoader",
    "Dataset",
    "Normalizer",
    "cache_dir",
    "channel_stats",
    "download_dataset",
    "load_dataset",
    "normalize",
    "train_val_split",
]
