"""IDX reader and writer: round trips, gzip detection, malformed files, the real MNIST files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from stridenet.data.idx import (
    IMAGES_MAGIC,
    load_idx_pair,
    read_idx,
    read_idx_images,
    read_idx_labels,
    write_idx,
)
from stridenet.errors import DataError

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
LABELS = RNG.integers(0, 10, size=5, dtype=np.uint8)


@pytest.mark.parametrize("name", ["images.idx", "images.idx.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_idx(path, IMAGES)
    assert path.read_bytes().startswith(b"\x1f\x8b") == name.endswith(".gz")
    out = read_idx_images(path)
    assert out.dtype == np.uint8 and out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, IMAGES)
    out[0, 0, 0] = 1  # the result is a writable array of its own


def test_gzip_detected_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    gz_named_raw = tmp_path / "labels.gz"
    raw_named_plain = tmp_path / "labels.bin"
    write_idx(tmp_path / "src.gz", LABELS)
    raw_named_plain.write_bytes((tmp_path / "src.gz").read_bytes())  # gzip bytes, no .gz suffix
    write_idx(tmp_path / "src", LABELS)
    gz_named_raw.write_bytes((tmp_path / "src").read_bytes())  # raw bytes under a .gz name
    np.testing.assert_array_equal(read_idx_labels(raw_named_plain), LABELS)
    np.testing.assert_array_equal(read_idx_labels(gz_named_raw), LABELS)


def test_header_layout(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", IMAGES)
    data = (tmp_path / "x").read_bytes()
    assert struct.unpack(">IIII", data[:16]) == (IMAGES_MAGIC, 5, 4, 3)
    assert len(data) == 16 + IMAGES.size


def test_load_pair(tmp_path: Path) -> None:
    write_idx(tmp_path / "i.gz", IMAGES)
    write_idx(tmp_path / "l.gz", LABELS)
    images, labels = load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, LABELS)
    np.testing.assert_array_equal(images, IMAGES)


def _raw_idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


# (file bytes, reader, words the message must contain)
MALFORMED = {
    "truncated": (_raw_idx(0x803, (2, 3, 3), bytes(17)), read_idx_images, ["truncated", "34", "33"]),
    "oversized": (_raw_idx(0x803, (2, 3, 3), bytes(19)), read_idx_images, ["oversized", "34", "35"]),
    "wrong dimensions": (_raw_idx(0x803, (2, 3, 4), bytes(18)), read_idx_images, ["2 x 3 x 4", "40", "34"]),
    "labels as images": (_raw_idx(0x801, (5,), bytes(5)), read_idx_images, ["0x00000803", "0x00000801"]),
    "images as labels": (_raw_idx(0x803, (1, 2, 2), bytes(4)), read_idx_labels, ["0x00000801", "0x00000803"]),
    "bad magic": (_raw_idx(0x12345678, (1,), bytes(1)), read_idx, ["0x12345678"]),
    "float type": (_raw_idx(0x0D01, (1,), bytes(4)), read_idx, ["0x00000D01", "uint8"]),
    "short header": (struct.pack(">I", 0x803) + bytes(5), read_idx_images, ["16-byte header", "9 bytes"]),
    "empty": (b"", read_idx, ["at least 4 bytes", "0 bytes"]),
    "corrupt gzip": (gzip.compress(_raw_idx(0x801, (3,), bytes(3)))[:-6], read_idx, ["gzip"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_file_names_file_expected_and_found(tmp_path: Path, case: str, compress: bool) -> None:
    data, reader, words = MALFORMED[case]
    if compress and not data.startswith(b"\x1f\x8b"):
        data = gzip.compress(data)
    path = tmp_path / f"bad-{case.replace(' ', '-')}.idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as info:
        read_idx(tmp_path / "nope.gz")
    assert "nope.gz" in str(info.value)


def test_images_with_wrong_rank_rejected(tmp_path: Path) -> None:
    path = tmp_path / "flat.idx"
    path.write_bytes(_raw_idx(0x802, (2, 2), bytes(4)))
    with pytest.raises(DataError, match="0x00000803"):
        read_idx_images(path)


def test_pair_count_mismatch(tmp_path: Path) -> None:
    write_idx(tmp_path / "i.gz", IMAGES)
    write_idx(tmp_path / "l.gz", LABELS[:4])
    with pytest.raises(DataError) as info:
        load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    message = str(info.value)
    assert "l.gz" in message and "expected 5 labels" in message and "found 4" in message


def test_pair_label_out_of_range(tmp_path: Path) -> None:
    labels = LABELS.copy()
    labels[3] = 10
    write_idx(tmp_path / "i.gz", IMAGES)
    write_idx(tmp_path / "l.gz", labels)
    with pytest.raises(DataError) as info:
        load_idx_pair(tmp_path / "i.gz", tmp_path / "l.gz")
    message = str(info.value)
    assert "l.gz" in message and "0..9" in message and "10 at index 3" in message


def test_write_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_idx(tmp_path / "x", np.zeros((2, 2), dtype=np.float32))


@pytest.mark.parametrize(("folder", "n_train", "n_test"), [("mnist-10k", 8000, 2000), ("fashion-mnist", 60000, 10000)])
def test_real_files(shared_data: Path, folder: str, n_train: int, n_test: int) -> None:
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = load_idx_pair(
            shared_data / folder / f"{prefix}-images-idx3-ubyte.gz",
            shared_data / folder / f"{prefix}-labels-idx1-ubyte.gz",
        )
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and labels.dtype == np.int64
        assert labels.min() == 0 and labels.max() == 9
        assert len(np.unique(labels)) == 10
        assert images.max() == 255 and images.min() == 0
