"""Read the CIFAR-10 *binary* version (``cifar-10-binary.tar.gz``, not the pickled Python one).

Each batch file is a run of 3,073-byte records: 1 label byte (0-9), then 3,072 pixel bytes, the
32 x 32 red plane, then green, then blue, each row by row. So a record reshapes straight to
(3, 32, 32), i.e. NCHW. The official files ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and
``test_batch.bin`` hold 10,000 records each (30,730,000 bytes); ``batches.meta.txt`` lists the
class names, one a line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stridenet.errors import DataError

CHANNELS, HEIGHT, WIDTH = 3, 32, 32
RECORD_BYTES = 1 + CHANNELS * HEIGHT * WIDTH  # 3073
RECORDS_PER_BATCH = 10_000
BATCH_BYTES = RECORD_BYTES * RECORDS_PER_BATCH  # 30,730,000: the size of each official batch file
FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def read_cifar_batch(
    path: str | os.PathLike[str], num_records: int | None = RECORDS_PER_BATCH
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch file.

    Args:
        path: the batch file.
        num_records: the number of records the file must hold. Default: 10,000, the official
            size (30,730,000 bytes). None accepts any whole, non-zero number of records.

    Returns:
        ``(images, labels)``: uint8 (N, 3, 32, 32) and int64 (N,).

    Raises:
        DataError: the file is missing, its size is not the expected one (or not a whole number of
            3,073-byte records), or a label is outside 0-9 (the message names the record index).
    """
    source = str(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as exc:
        raise DataError(f"{source}: file not found") from exc
    if num_records is not None and size != num_records * RECORD_BYTES:
        raise DataError(
            f"{source}: expected {num_records * RECORD_BYTES:,} bytes ({num_records:,} records of "
            f"{RECORD_BYTES:,} bytes), found {size:,} bytes"
        )
    if size == 0 or size % RECORD_BYTES:
        raise DataError(f"{source}: expected a whole number of {RECORD_BYTES:,}-byte records, found {size:,} bytes")
    data = Path(path).read_bytes()
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= len(CIFAR10_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{source}: expected labels 0-9, found {int(labels[i])} in record {i} ({bad.size} bad records)")
    # (N, 3073) -> (N, 3072) -> (N, 3, 32, 32): planes R, G, B, each row-major
    images = records[:, 1:].reshape(-1, CHANNELS, HEIGHT, WIDTH).copy()
    return images, labels.astype(np.int64)


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Read ``batches.meta.txt``: one class name a line, blank lines ignored.

    Raises:
        DataError: the file is missing or does not hold exactly 10 names.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != len(CIFAR10_CLASSES):
        raise DataError(f"{path}: expected {len(CIFAR10_CLASSES)} class names, found {len(names)}: {names}")
    return names


def find_cifar_dir(root: str | os.PathLike[str]) -> Path:
    """Locate the batch folder: ``root`` itself or ``root/cifar-10-batches-bin``.

    Raises:
        DataError: neither holds CIFAR-10 batch files.
    """
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    raise DataError(
        f"{root}: expected the folder {FOLDER}/ (holding {TRAIN_FILES[0]} .. {TRAIN_FILES[-1]} and "
        f"{TEST_FILE}) or its parent, found neither"
    )


def load_cifar10(
    root: str | os.PathLike[str],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """Load the official CIFAR-10 binary batches, checking each file's official size.

    Args:
        root: the folder ``cifar-10-batches-bin`` or the folder that contains it.

    Returns:
        ``((train_images, train_labels), (test_images, test_labels), classes)`` with images uint8
        (N, 3, 32, 32), labels int64, 50,000 train and 10,000 test. ``classes`` comes from
        ``batches.meta.txt`` when present, else the standard CIFAR-10 names.

    Raises:
        DataError: the folder or a batch file is missing, or a file is malformed.
    """
    folder = find_cifar_dir(root)
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: expected CIFAR-10 batch files {', '.join(missing)}, not found")
    train = [read_cifar_batch(folder / name, RECORDS_PER_BATCH) for name in TRAIN_FILES]
    test = read_cifar_batch(folder / TEST_FILE, RECORDS_PER_BATCH)
    meta = folder / META_FILE
    classes = read_class_names(meta) if meta.is_file() else list(CIFAR10_CLASSES)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return (train_images, train_labels), test, classes
