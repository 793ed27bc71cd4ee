"""Image-folder dataset on PNG/JPEG files written with Pillow."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest

from stridenet.data.folder import load_image_folder
from stridenet.errors import DataError

Image = pytest.importorskip("PIL.Image")


def save(path: Path, array: np.ndarray) -> None:
    """Save an (H, W) or (H, W, 3) uint8 array as an image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_grayscale_folder(tmp_path: Path) -> None:
    b0, b1, a0 = pixels((6, 5), 0), pixels((6, 5), 1), pixels((6, 5), 2)
    save(tmp_path / "b" / "0.png", b0)
    save(tmp_path / "b" / "1.PNG", b1)
    save(tmp_path / "a" / "x.png", a0)
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    images, labels, classes = load_image_folder(tmp_path)
    assert classes == ["a", "b"]
    assert images.shape == (3, 1, 6, 5) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(images[:, 0], np.stack([a0, b0, b1]))


def test_rgb_folder_is_nchw(tmp_path: Path) -> None:
    rgb = pixels((4, 7, 3), 3)
    save(tmp_path / "cat" / "1.png", rgb)
    save(tmp_path / "dog" / "1.png", pixels((4, 7), 4))  # grayscale mixed in: converted to RGB
    images, labels, classes = load_image_folder(tmp_path)
    assert images.shape == (2, 3, 4, 7)
    np.testing.assert_array_equal(images[0], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(images[1, 0], images[1, 2])  # gray -> equal R, G, B
    assert classes == ["cat", "dog"] and labels.tolist() == [0, 1]


def test_explicit_channels(tmp_path: Path) -> None:
    rgb = pixels((4, 4, 3), 5)
    save(tmp_path / "c" / "1.png", rgb)
    gray = load_image_folder(tmp_path, channels=1)[0]
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(gray[0, 0], expected)
    gray_img = pixels((4, 4), 6)
    save(tmp_path / "c" / "1.png", gray_img)
    rgb_out = load_image_folder(tmp_path, channels=3)[0]
    assert rgb_out.shape == (1, 3, 4, 4)
    np.testing.assert_array_equal(rgb_out[0], np.stack([gray_img] * 3))


def test_resize_and_jpeg(tmp_path: Path) -> None:
    save(tmp_path / "a" / "big.png", pixels((20, 10, 3), 7))
    save(tmp_path / "b" / "small.jpg", pixels((5, 8, 3), 8))
    images, labels, _ = load_image_folder(tmp_path, size=(12, 9))
    assert images.shape == (2, 3, 12, 9) and labels.tolist() == [0, 1]


def test_mismatched_sizes_error(tmp_path: Path) -> None:
    save(tmp_path / "a" / "1.png", pixels((6, 5), 0))
    save(tmp_path / "b" / "2.png", pixels((6, 5), 1))
    save(tmp_path / "b" / "3.png", pixels((7, 5), 2))
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    message = str(info.value)
    assert "3.png" in message and "6x5" in message and "7x5" in message and "--image-size" in message


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="found none"):
        load_image_folder(tmp_path)  # no class folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_image_folder(tmp_path)
    save(tmp_path / "empty" / "1.png", pixels((2, 2), 0))
    with pytest.raises(DataError, match="not among the classes"):
        load_image_folder(tmp_path, classes=["other"])


def test_corrupt_image(tmp_path: Path) -> None:
    save(tmp_path / "a" / "good.png", pixels((3, 3), 0))
    (tmp_path / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as info:
        load_image_folder(tmp_path)
    assert "bad.png" in str(info.value)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channels"):
        load_image_folder(tmp_path, channels=2)
    with pytest.raises(ValueError, match="size"):
        load_image_folder(tmp_path, size=(0, 4))


def test_missing_pillow_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_pil(name: str, *args: object, **kwargs: object) -> object:
        if name == "PIL" or name.startswith("PIL."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pil)
    with pytest.raises(ImportError, match=r"stridenet\[images\]"):
        load_image_folder(tmp_path)
