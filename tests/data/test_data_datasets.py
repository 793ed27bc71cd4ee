"""``load_dataset`` for every name, the built-in sample, ``Dataset`` checks and ``train_val_split``."""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import stridenet.data.datasets as datasets_module
from stridenet.data import cifar, download
from stridenet.data.datasets import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    Dataset,
    load_dataset,
    train_val_split,
)
from stridenet.data.idx import write_idx
from stridenet.data.transforms import channel_stats
from stridenet.errors import DataError

if TYPE_CHECKING:
    from conftest import LocalServer

OFFICIAL = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist_like(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    """Write the four official IDX files, tiny, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STRIDENET_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_builtin_sample_loads_from_package() -> None:
    train, test = load_dataset("mnist-sample")
    assert (len(train), len(test)) == (8000, 2000)
    assert train.images.shape == (8000, 1, 28, 28) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and set(np.unique(test.labels)) == set(range(10))
    assert train.classes == [str(d) for d in range(10)] and train.name == "mnist-sample"
    assert (train.split, test.split) == ("train", "test")
    resource = resources.files("stridenet.data").joinpath("builtin", "train-images-idx3-ubyte.gz")
    assert "shared" not in Path(str(resource)).parts  # read from the package, not from ../shared
    with resources.as_file(resource) as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == datasets_module.BUILTIN_SHA256[path.name]


def test_builtin_sample_matches_shared_copy(shared_data: Path) -> None:
    train, _ = load_dataset("mnist-sample")
    train_shared, test_shared = load_dataset("mnist", data_dir=shared_data / "mnist-10k")
    np.testing.assert_array_equal(train.images, train_shared.images)
    assert len(test_shared) == 2000


def test_builtin_checksum_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(datasets_module.BUILTIN_SHA256, "t10k-labels-idx1-ubyte.gz", "0" * 64)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: expected sha256 0000"):
        load_dataset("mnist-sample")


def test_fashion_mnist_from_data_dir(shared_data: Path) -> None:
    train, test = load_dataset("fashion-mnist", data_dir=shared_data / "fashion-mnist")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.classes == list(FASHION_MNIST_CLASSES) and train.classes[0] == "T-shirt/top"
    assert np.bincount(train.labels).tolist() == [6000] * 10
    mean, std = channel_stats(train.images)
    assert mean[0] == pytest.approx(0.2861, abs=5e-5) and std[0] == pytest.approx(0.3528, abs=5e-5)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_data_dir(tmp_path: Path, gz: bool) -> None:
    write_mnist_like(tmp_path, gz=gz)
    train, test = load_dataset("mnist", data_dir=tmp_path)
    assert train.images.shape == (6, 1, 28, 28) and test.images.shape == (4, 1, 28, 28)
    assert test.labels.tolist() == [0, 1, 2, 3]


def test_dotted_raw_names_accepted(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, gz=False)
    for stem in OFFICIAL:
        (tmp_path / stem).rename(tmp_path / stem.replace("-idx", ".idx"))
    assert len(load_dataset("mnist", data_dir=tmp_path)[0]) == 6


def test_missing_file_in_data_dir(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range_in_data_dir(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 11], dtype=np.uint8))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: expected labels 0\.\.9, found 11"):
        load_dataset("mnist", data_dir=tmp_path)


def test_not_cached_without_download(empty_cache: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    assert "--data-dir" in message and "--download" in message and str(empty_cache) in message
    with pytest.raises(DataError, match="--download"):
        load_dataset("cifar10")


def test_cached_files_used_without_download(empty_cache: Path) -> None:
    write_mnist_like(empty_cache / "mnist")
    assert len(load_dataset("mnist")[1]) == 4


def test_download_into_cache(
    empty_cache: Path, tmp_path: Path, local_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist_like(local_server.root / "mirror")
    mirror = local_server.root / "mirror"
    md5 = {f"{stem}.gz": hashlib.md5((mirror / f"{stem}.gz").read_bytes()).hexdigest() for stem in OFFICIAL}
    monkeypatch.setitem(download.SOURCES, "mnist", download.Source(md5, (f"{local_server.url}mirror/",)))
    train, _ = load_dataset("mnist", download=True)
    assert len(train) == 6 and sorted(p.name for p in (empty_cache / "mnist").iterdir()) == sorted(md5)


def test_cifar10_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 2)
    folder = tmp_path / cifar.FOLDER
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE):
        records = rng.integers(0, 256, size=(2, cifar.RECORD_BYTES), dtype=np.uint8)
        records[:, 0] %= 10
        (folder / name).write_bytes(records.tobytes())
    train, test = load_dataset("cifar10", data_dir=tmp_path)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert train.classes[0] == "airplane" and train.classes[-1] == "truck"
    gray, _ = load_dataset("cifar10", data_dir=folder, channels=1)
    assert gray.images.shape == (10, 1, 32, 32)
    pil = pytest.importorskip("PIL.Image")
    expected = np.asarray(pil.fromarray(train.images[3].transpose(1, 2, 0)).convert("L"))
    np.testing.assert_array_equal(gray.images[3, 0], expected)


def test_channels_and_size_for_fixed_datasets() -> None:
    train, _ = load_dataset("mnist-sample", channels=3, image_size=(28, 28))
    assert train.images.shape == (8000, 3, 28, 28)
    np.testing.assert_array_equal(train.images[:, 0], train.images[:, 2])
    with pytest.raises(DataError, match="28x28"):
        load_dataset("mnist-sample", image_size=(32, 32))


def write_png_classes(root: Path, per_class: int, size: tuple[int, int] = (8, 6)) -> None:
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(1)
    for name in ("ant", "bee", "cow"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pil.fromarray(rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")


def test_folder_with_test_split(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "train", per_class=3)
    write_png_classes(tmp_path / "test", per_class=1)
    train, test = load_dataset("folder", data_dir=tmp_path, image_size=(5, 4), channels=1)
    assert train.images.shape == (9, 1, 5, 4) and test.images.shape == (3, 1, 5, 4)
    assert train.classes == test.classes == ["ant", "bee", "cow"]
    assert test.labels.tolist() == [0, 1, 2]


def test_folder_test_size_must_match(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "train", per_class=1)
    write_png_classes(tmp_path / "test", per_class=1, size=(7, 6))
    with pytest.raises(DataError, match="--image-size"):
        load_dataset("folder", data_dir=tmp_path)


def test_folder_without_test_splits_twenty_percent(tmp_path: Path) -> None:
    write_png_classes(tmp_path / "train", per_class=5)
    train, test = load_dataset("folder", data_dir=tmp_path)
    assert (len(train), len(test)) == (12, 3) and (train.split, test.split) == ("train", "test")
    again_train, _ = load_dataset("folder", data_dir=tmp_path)
    np.testing.assert_array_equal(train.images, again_train.images)  # fixed seed
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("folder")


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert all(name in str(info.value) for name in DATASETS)
    with pytest.raises(ValueError, match="channels"):
        load_dataset("mnist-sample", channels=2)


def make_dataset(n: int) -> Dataset:
    images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1)
    return Dataset(images, np.arange(n, dtype=np.int64) % 3, ["a", "b", "c"], "toy", "train")


def test_train_val_split() -> None:
    data = make_dataset(50)
    train, val = train_val_split(data, 0.2, seed=3)
    assert (len(train), len(val)) == (40, 10) and (train.split, val.split) == ("train", "val")
    ids = np.concatenate([train.images.ravel(), val.images.ravel()])
    assert sorted(ids.tolist()) == list(range(50))  # a partition
    np.testing.assert_array_equal(train.labels, train.images.ravel() % 3)  # labels follow images
    _, same_val = train_val_split(data, 0.2, seed=3)
    np.testing.assert_array_equal(val.images, same_val.images)
    assert not np.array_equal(val.images, train_val_split(data, 0.2, seed=4)[1].images)
    assert len(train_val_split(make_dataset(3), 0.01, seed=0)[1]) == 1
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="val_fraction"):
            train_val_split(data, bad, seed=0)


def test_dataset_validation() -> None:
    good = make_dataset(4)
    with pytest.raises(DataError, match="uint8"):
        Dataset(good.images.astype(np.float32), good.labels, good.classes, "toy")
    with pytest.raises(DataError, match="int64"):
        Dataset(good.images, good.labels[:3], good.classes, "toy")
    with pytest.raises(DataError, match=r"0\.\.1"):
        Dataset(good.images, good.labels, ["a", "b"], "toy")
    assert good.num_classes == 3 and good.image_shape == (1, 1, 1)


def test_gzip_magic_not_extension_in_loader(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, gz=False)
    raw = tmp_path / "train-images-idx3-ubyte"
    raw.write_bytes(gzip.compress(raw.read_bytes()))  # gzip data under the un-gzipped name
    assert load_dataset("mnist", data_dir=tmp_path)[0].images.shape == (6, 1, 28, 28)
