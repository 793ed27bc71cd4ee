"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``0x0000TTDD`` (``TT`` the element type, ``08`` for uint8;
``DD`` the number of dimensions), then one big-endian uint32 per dimension, then the elements in
C order. Images are ``0x00000803`` (uint8, N x rows x cols) and labels ``0x00000801`` (uint8, N).
Files may be gzip-compressed; that is detected from the gzip magic bytes, not from the file name.
Every reader checks the magic number, the dimensions and the exact byte count, and raises
:class:`~stridenet.errors.DataError` naming the file, what was expected and what was found.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from stridenet.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UINT8_TYPE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"


def _describe(magic: int) -> str:
    return f"0x{magic:08X}"


def _decompress(data: bytes, source: str) -> bytes:
    """Gunzip ``data`` when it starts with the gzip magic bytes; return it unchanged otherwise."""
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{source}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, source: str, expected_magic: int | None = None) -> np.ndarray:
    """Parse the bytes of an IDX file (gzip-compressed or raw) into a uint8 array.

    Args:
        data: the file's bytes.
        source: the file name, used in error messages.
        expected_magic: ``IMAGES_MAGIC`` or ``LABELS_MAGIC`` to insist on one kind; None accepts
            any uint8 IDX file.

    Returns:
        A writable uint8 ``np.ndarray`` with the shape stored in the header.

    Raises:
        DataError: the gzip stream is corrupt, the magic number is not the expected one or not a
            uint8 IDX magic, or the byte count differs from the header's dimensions.
    """
    raw = _decompress(data, source)
    if len(raw) < 4:
        raise DataError(f"{source}: expected an IDX header of at least 4 bytes, found {len(raw)} bytes")
    (magic,) = struct.unpack(">I", raw[:4])
    if expected_magic is not None and magic != expected_magic:
        raise DataError(f"{source}: expected IDX magic number {_describe(expected_magic)}, found {_describe(magic)}")
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != _UINT8_TYPE or magic & 0xFF == 0:
        raise DataError(
            f"{source}: expected a uint8 IDX magic number 0x000008DD (DD = number of dimensions), "
            f"found {_describe(magic)}"
        )
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(
            f"{source}: expected a {header_size}-byte header for {ndim} dimensions, file has {len(raw)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected_size = header_size + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected_size:
        dims = " x ".join(str(d) for d in shape)
        kind = "truncated" if len(raw) < expected_size else "oversized"
        raise DataError(
            f"{source}: {kind} IDX file; header says {dims} uint8 so expected {expected_size} bytes "
            f"(uncompressed), found {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc})") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any uint8 IDX file, gzip-compressed or raw.

    Args:
        path: the file.

    Raises:
        DataError: the file is missing, unreadable or malformed (see :func:`parse_idx`).
    """
    return parse_idx(_read_bytes(path), str(path))


def check_images(images: np.ndarray, source: str) -> np.ndarray:
    """Check that a parsed IDX array holds images (N x rows x cols, each side at least 1)."""
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise DataError(f"{source}: expected images of shape N x rows x cols, found shape {images.shape}")
    return images


def read_idx_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX image file (magic ``0x00000803``).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        uint8 array of shape (N, rows, cols).

    Raises:
        DataError: the file is missing or malformed, or is not an image file.
    """
    return check_images(parse_idx(_read_bytes(path), str(path), IMAGES_MAGIC), str(path))


def read_idx_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX label file (magic ``0x00000801``).

    Args:
        path: the file, e.g. ``train-labels-idx1-ubyte.gz``.

    Returns:
        uint8 array of shape (N,).

    Raises:
        DataError: the file is missing or malformed, or is not a label file.
    """
    return parse_idx(_read_bytes(path), str(path), LABELS_MAGIC)


def check_pair(
    images: np.ndarray, labels: np.ndarray, images_source: str, labels_source: str, num_classes: int
) -> np.ndarray:
    """Check an image/label pair and return the labels as int64.

    Args:
        images: (N, ...) images.
        labels: (N,) labels.
        images_source: name of the image file, for messages.
        labels_source: name of the label file, for messages.
        num_classes: labels must lie in ``0 .. num_classes - 1``.

    Raises:
        DataError: the counts differ, or a label is out of range (the message names the label file,
            the index and the value of the first bad label).
    """
    if len(images) != len(labels):
        raise DataError(
            f"{labels_source}: expected {len(images)} labels to match the images in {images_source}, "
            f"found {len(labels)}"
        )
    bad = np.flatnonzero(labels >= num_classes)
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{labels_source}: expected labels 0..{num_classes - 1}, found {int(labels[i])} at index {i} "
            f"({bad.size} out of range)"
        )
    return labels.astype(np.int64)


def load_idx_pair(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str], num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Read an image file and its label file and check that they belong together.

    Args:
        images_path: IDX image file.
        labels_path: IDX label file.
        num_classes: labels must lie in ``0 .. num_classes - 1``. Default: 10.

    Returns:
        ``(images, labels)``: uint8 (N, rows, cols) and int64 (N,).

    Raises:
        DataError: either file is malformed, the counts differ or a label is out of range.
    """
    images = read_idx_images(images_path)
    labels = read_idx_labels(labels_path)
    return images, check_pair(images, labels, str(images_path), str(labels_path), num_classes)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: destination file.
        array: uint8 array with 1 to 255 dimensions.

    Raises:
        ValueError: the array is not uint8 or has no dimensions.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or not 1 <= array.ndim <= 255:
        raise ValueError(
            f"write_idx: expected a uint8 array with 1 to 255 dimensions, "
            f"received dtype {array.dtype} and shape {array.shape}"
        )
    header = struct.pack(f">I{array.ndim}I", (_UINT8_TYPE << 8) | array.ndim, *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    Path(path).write_bytes(payload)
