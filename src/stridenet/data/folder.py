"""Load an image-folder dataset: ``root/<class_name>/*.png|jpg|jpeg``, one folder per class.

Classes are the sub-folder names sorted alphabetically, so label ``i`` is the ``i``-th name. Pillow
is needed (``pip install stridenet[images]``) and imported only when a folder is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stridenet.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _import_pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "reading an image folder needs Pillow, which is not installed; "
            "install it with: pip install 'stridenet[images]' (or pip install pillow)"
        ) from exc
    return Image


def list_image_files(
    root: str | os.PathLike[str], classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """List ``(file, label)`` pairs under ``root`` and the class names.

    Args:
        root: folder with one sub-folder per class.
        classes: class names to use (e.g. those of the train split when reading the test split);
            a sub-folder not in the list is an error. Default: the sorted sub-folder names.

    Raises:
        DataError: ``root`` is not a folder, has no class folders, a class folder holds no image,
            or a sub-folder is not among ``classes``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of class folders, not found")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"{root}: expected one sub-folder per class, found none")
    names = list(classes) if classes is not None else found
    unknown = [name for name in found if name not in names]
    if unknown:
        raise DataError(f"{root}: found class folders {unknown} that are not among the classes {names}")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(names):
        folder = root / name
        if not folder.is_dir():
            continue
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise DataError(f"{folder}: expected image files ({', '.join(IMAGE_EXTENSIONS)}), found none")
        files.extend((path, label) for path in images)
    return files, names


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read every image under ``root/<class_name>/`` into one uint8 NCHW array.

    Args:
        root: folder with one sub-folder per class.
        channels: 1 (grayscale) or 3 (RGB); images are converted. Default: None, which gives 1 if
            every image is grayscale and 3 otherwise.
        size: ``(H, W)`` to resize every image to (bilinear). Default: None, which requires all
            images to share one size.
        classes: class names to use, e.g. the train split's when reading the test split.
            Default: the sorted sub-folder names.

    Returns:
        ``(images, labels, classes)``: uint8 (N, C, H, W), int64 (N,), list of class names.

    Raises:
        ImportError: Pillow is not installed.
        ValueError: ``channels`` is not 1, 3 or None, or ``size`` is not two positive integers.
        DataError: the folder layout is wrong, an image cannot be decoded, or (without ``size``)
            images differ in size; the message names the first mismatching file and suggests
            ``--image-size``.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"load_image_folder: expected channels 1, 3 or None, received {channels!r}")
    if size is not None and (len(size) != 2 or any(int(s) != s or s < 1 for s in size)):
        raise ValueError(f"load_image_folder: expected size (H, W) of positive integers, received {size!r}")
    image_module = _import_pillow()
    files, names = list_image_files(root, classes)
    headers = []  # (mode, (W, H)) per file; opening reads the header only, not the pixels
    for path, _ in files:
        try:
            with image_module.open(path) as image:
                headers.append((image.mode, image.size))
        except (OSError, ValueError, image_module.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot read image ({exc})") from exc
    if channels is None:
        channels = 1 if all(mode in _GRAY_MODES for mode, _ in headers) else 3
    if size is None:
        first_path, (width, height) = files[0][0], headers[0][1]
        for (path, _), (_, (w, h)) in zip(files, headers, strict=True):
            if (w, h) != (width, height):
                raise DataError(
                    f"{path}: expected every image to be {height}x{width} (H x W) like {first_path}, "
                    f"found {h}x{w}; pass --image-size H W (size=(H, W)) to resize them all"
                )
    mode = "L" if channels == 1 else "RGB"
    arrays = []
    for path, _ in files:
        try:
            with image_module.open(path) as image:
                image = image.convert(mode)
                if size is not None:
                    image = image.resize((int(size[1]), int(size[0])), image_module.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.uint8))
        except (OSError, ValueError, image_module.DecompressionBombError) as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from exc
    images = np.stack(arrays)  # (N, H, W) for L, (N, H, W, 3) for RGB
    images = images[:, None] if channels == 1 else images.transpose(0, 3, 1, 2)
    labels = np.array([label for _, label in files], dtype=np.int64)
    return np.ascontiguousarray(images), labels, names
