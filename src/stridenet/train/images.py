"""Read image files for prediction and fit them to a run's input shape (channels and size)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stridenet.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_image(path: str | os.PathLike[str], input_shape: tuple[int, int, int],
               invert: bool = False) -> tuple[np.ndarray, str]:
    """Read a PNG/JPG (with Pillow) or a ``.npy`` array as a uint8 (C, H, W) image for the model.

    Pictures are converted to the run's channels (gray "L" or "RGB") and resized to its size with
    bilinear filtering when their size differs (the returned note says so). ``.npy`` arrays must
    already have the run's size: (H, W), (C, H, W) or (H, W, C), uint8 values 0..255 or floats in
    [0, 1] (scaled by 255).

    Args:
        path: the file.
        input_shape: ``(C, H, W)`` the model expects.
        invert: replace each value v by 255 - v (dark strokes on a light background -> MNIST style).

    Returns:
        ``(image, note)``: uint8 (C, H, W) and a remark on conversions ("" when none).

    Raises:
        DataError: missing file, unknown suffix, unreadable contents, or an array of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        image, note = _load_array(path, input_shape), ""
    elif suffix in IMAGE_SUFFIXES:
        image, note = _load_picture(path, input_shape)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected .png, .jpg, .jpeg or .npy")
    return (255 - image if invert else image), note


def _load_array(path: Path, input_shape: tuple[int, int, int]) -> np.ndarray:
    c, h, w = input_shape
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "buif":
        raise DataError(f"{path}: expected a numeric .npy array")
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 3 and array.shape[-1] == c and array.shape[0] != c:
        array = array.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)
    if array.shape != (c, h, w):
        raise DataError(f"{path}: expected an array of shape ({c}, {h}, {w}) or ({h}, {w}), received shape "
                        f"{array.shape}; arrays are not resized (save a PNG to have it resized)")
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _load_picture(path: Path, input_shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError("reading PNG/JPG images needs Pillow: pip install 'stridenet[images]'") from None
    c, h, w = input_shape
    try:
        with Image.open(path) as picture:
            picture.load()
            size = picture.size
            converted = picture.convert("L" if c == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None
    note = ""
    if size != (w, h):
        converted = converted.resize((w, h), Image.Resampling.BILINEAR)
        note = f"resized from {size[0]}x{size[1]} to {w}x{h}"
    array = np.asarray(converted, dtype=np.uint8)
    return (array[None] if c == 1 else array.transpose(2, 0, 1)).copy(), note
