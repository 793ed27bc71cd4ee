"""CIFAR-10 binary reader on files written here in the official record layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stridenet.data import cifar
from stridenet.data.cifar import (
    BATCH_BYTES,
    CIFAR10_CLASSES,
    RECORD_BYTES,
    find_cifar_dir,
    load_cifar10,
    read_cifar_batch,
    read_class_names,
)
from stridenet.errors import DataError


def make_records(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """n records built field by field: label byte, then the R, G and B planes, each row by row."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    data = b"".join(
        bytes([labels[i]]) + images[i, 0].tobytes() + images[i, 1].tobytes() + images[i, 2].tobytes() for i in range(n)
    )
    return data, images, labels


def write_cifar_folder(root: Path, records: int, meta: bool = True) -> Path:
    """Write ``root/cifar-10-batches-bin/`` with ``records`` records in each of the six batch files."""
    folder = root / cifar.FOLDER
    folder.mkdir(parents=True)
    for seed, name in enumerate((*cifar.TRAIN_FILES, cifar.TEST_FILE)):
        (folder / name).write_bytes(make_records(records, seed)[0])
    if meta:
        (folder / cifar.META_FILE).write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    return folder


def test_record_layout(tmp_path: Path) -> None:
    data, images, labels = make_records(7, seed=1)
    path = tmp_path / "small.bin"
    path.write_bytes(data)
    out_images, out_labels = read_cifar_batch(path, num_records=None)
    assert out_images.shape == (7, 3, 32, 32) and out_images.dtype == np.uint8
    assert out_labels.dtype == np.int64
    np.testing.assert_array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels, labels)
    assert out_images.flags.c_contiguous


def test_official_size_constant() -> None:
    assert RECORD_BYTES == 3073 and BATCH_BYTES == 30_730_000


def test_full_size_batch_file(tmp_path: Path) -> None:
    data, images, labels = make_records(3, seed=2)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(data * (10_000 // 3) + data[: RECORD_BYTES * (10_000 % 3)])
    assert path.stat().st_size == 30_730_000
    out_images, out_labels = read_cifar_batch(path)
    assert out_images.shape == (10_000, 3, 32, 32)
    np.testing.assert_array_equal(out_images[3:6], images)
    np.testing.assert_array_equal(out_labels[9_999], labels[0])


def test_official_size_required_by_default(tmp_path: Path) -> None:
    path = tmp_path / "test_batch.bin"
    path.write_bytes(make_records(2, seed=0)[0])
    with pytest.raises(DataError) as info:
        read_cifar_batch(path)
    message = str(info.value)
    assert "test_batch.bin" in message and "30,730,000" in message and "6,146" in message


@pytest.mark.parametrize("size", [0, 3072, 3074, 2 * 3073 + 1])
def test_partial_record(tmp_path: Path, size: int) -> None:
    path = tmp_path / "odd.bin"
    path.write_bytes(bytes(size))
    with pytest.raises(DataError) as info:
        read_cifar_batch(path, num_records=None)
    assert "odd.bin" in str(info.value) and f"{size:,} bytes" in str(info.value)


def test_label_out_of_range_names_record(tmp_path: Path) -> None:
    data = bytearray(make_records(5, seed=3)[0])
    data[3 * RECORD_BYTES] = 10
    path = tmp_path / "bad_labels.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        read_cifar_batch(path, num_records=None)
    message = str(info.value)
    assert "bad_labels.bin" in message and "record 3" in message and "found 10" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_cifar_batch(tmp_path / "data_batch_9.bin")


@pytest.mark.parametrize("use_parent", [True, False])
def test_load_folder_or_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_parent: bool) -> None:
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 4)
    folder = write_cifar_folder(tmp_path, records=4)
    (train_images, train_labels), (test_images, test_labels), classes = load_cifar10(tmp_path if use_parent else folder)
    assert train_images.shape == (20, 3, 32, 32) and train_labels.shape == (20,)
    assert test_images.shape == (4, 3, 32, 32) and test_labels.shape == (4,)
    assert classes == list(CIFAR10_CLASSES)
    np.testing.assert_array_equal(train_images[4:8], make_records(4, seed=1)[1])  # data_batch_2
    np.testing.assert_array_equal(test_labels, make_records(4, seed=5)[2])


def test_loader_checks_official_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cifar_folder(tmp_path, records=4)  # 4-record files, but the loader wants 10,000
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    assert "data_batch_1.bin" in str(info.value) and "30,730,000" in str(info.value)


def test_missing_batch_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 1)
    folder = write_cifar_folder(tmp_path, records=1)
    (folder / "data_batch_4.bin").unlink()
    with pytest.raises(DataError, match=r"data_batch_4\.bin"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="cifar-10-batches-bin"):
        find_cifar_dir(tmp_path / "elsewhere")


def test_class_names_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 1)
    folder = write_cifar_folder(tmp_path, records=1, meta=False)
    assert load_cifar10(folder)[2] == list(CIFAR10_CLASSES)  # no meta file: the standard names
    (folder / cifar.META_FILE).write_text("a\nb\n")
    with pytest.raises(DataError, match="expected 10 class names, found 2"):
        read_class_names(folder / cifar.META_FILE)
    names = [f"class{i}" for i in range(10)]
    (folder / cifar.META_FILE).write_text("\n".join(names) + "\n\n\n")
    assert load_cifar10(folder)[2] == names
