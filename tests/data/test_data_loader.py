"""DataLoader reproducibility (seeded epochs, ``start_batch``), normalisation, crop and flip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stridenet.data.loader import DataLoader
from stridenet.data.transforms import (
    Augment,
    Normalizer,
    channel_stats,
    crop_padded,
    draw_augment,
    flip_horizontal,
    normalize,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(53, 3, 6, 5), dtype=np.uint8)
LABELS = np.arange(53) % 7  # sample id modulo 7; ids recovered from the pixels below


def make_loader(**kwargs: object) -> DataLoader:
    options: dict = {"shuffle": True, "seed": 7, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    options.update(kwargs)
    return DataLoader(IMAGES, LABELS, 8, **options)


def collect(batches: object) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x.copy(), y.copy()) for x, y in batches]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert xa.tobytes() == xb.tobytes() and np.array_equal(ya, yb)  # bit-exact


def naive_crop(images: np.ndarray, padding: int, offsets: np.ndarray) -> np.ndarray:
    """Reference: pad and crop one sample at a time."""
    n, _, h, w = images.shape
    out = np.empty_like(images)
    for i in range(n):
        padded = np.pad(images[i], ((0, 0), (padding, padding), (padding, padding)))
        top, left = offsets[i]
        out[i] = padded[:, top : top + h, left : left + w]
    return out


def test_len_and_batch_shapes() -> None:
    loader = make_loader()
    batches = collect(loader.epoch(0))
    assert len(loader) == 7 == len(batches)
    assert [len(y) for _, y in batches] == [8] * 6 + [5]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (8, 3, 6, 5) and y.dtype == np.int64
    dropped = make_loader(drop_last=True)
    assert len(dropped) == 6 and [len(y) for _, y in dropped.epoch(0)] == [8] * 6


def test_shuffle_is_a_permutation_per_epoch() -> None:
    loader = make_loader(mean=[0, 0, 0], std=[1 / 255] * 3)  # x == raw pixel values
    orders = []
    for epoch in range(3):
        xs = np.concatenate([x for x, _ in loader.epoch(epoch)])
        ys = np.concatenate([y for _, y in loader.epoch(epoch)])
        ids = [int(np.flatnonzero((IMAGES == xi.astype(np.uint8)).all(axis=(1, 2, 3)))[0]) for xi in xs]
        assert sorted(ids) == list(range(53))
        np.testing.assert_array_equal(ys, LABELS[ids])
        orders.append(ids)
    assert orders[0] != orders[1] != orders[2]
    plain = make_loader(shuffle=False)
    assert np.concatenate([y for _, y in plain.epoch(5)]).tolist() == LABELS.tolist()


def test_same_seed_same_batches_fresh_instance() -> None:
    augment = Augment(crop_padding=2, flip=True)
    first = make_loader(augment=augment)
    for epoch in range(2):  # an "uninterrupted run" consumes epochs 0 and 1 first
        collect(first.epoch(epoch))
    uninterrupted = collect(first.epoch(2))
    resumed = collect(make_loader(augment=augment).epoch(2))  # a new process resuming at epoch 2
    assert_same_batches(uninterrupted, resumed)
    other_seed = collect(make_loader(augment=augment, seed=8).epoch(2))
    assert not np.array_equal(uninterrupted[0][0], other_seed[0][0])


@pytest.mark.parametrize("start", [0, 1, 4, 6, 7])
def test_start_batch_equivalence(start: int) -> None:
    loader = make_loader(augment=Augment(crop_padding=3, flip=True))
    full = collect(loader.epoch(3))
    assert_same_batches(full[start:], collect(loader.epoch(3, start_batch=start)))


def test_epoch_argument_checks() -> None:
    loader = make_loader()
    with pytest.raises(ValueError, match="start_batch"):
        loader.epoch(0, start_batch=8)
    with pytest.raises(ValueError, match="epoch_index"):
        loader.epoch(-1)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="uint8"):
        DataLoader(IMAGES.astype(np.float32), LABELS, 4, mean=[0] * 3, std=[1] * 3)
    with pytest.raises(ValueError, match="labels"):
        DataLoader(IMAGES, LABELS[:-1], 4, mean=[0] * 3, std=[1] * 3)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(IMAGES, LABELS, 0, mean=[0] * 3, std=[1] * 3)
    with pytest.raises(ValueError, match="seed"):
        DataLoader(IMAGES, LABELS, 4, seed=-1, mean=[0] * 3, std=[1] * 3)
    with pytest.raises(ValueError, match="3 means"):
        DataLoader(IMAGES, LABELS, 4, mean=[0.5], std=[0.2])
    with pytest.raises(ValueError, match="crop_padding"):
        Augment(crop_padding=-1)


def test_normalisation_statistics() -> None:
    images = np.concatenate([IMAGES, IMAGES // 2])
    norm = Normalizer.fit(images)
    as_float = images.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, as_float.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, as_float.std(axis=(0, 2, 3)), rtol=1e-12)
    x = norm(images)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-5)
    expected = (as_float - np.array(norm.mean)[:, None, None]) / np.array(norm.std)[:, None, None]
    np.testing.assert_allclose(x, expected, atol=1e-5)
    loader = DataLoader(images, np.zeros(len(images), np.int64), 1000, mean=norm.mean, std=norm.std)
    np.testing.assert_array_equal(next(iter(loader))[0], x)


def test_normalizer_json_round_trip() -> None:
    norm = Normalizer.fit(IMAGES)
    data = json.loads(json.dumps(norm.to_dict()))
    assert isinstance(data["mean"], list) and all(type(v) is float for v in data["mean"] + data["std"])
    assert Normalizer.from_dict(data) == norm


def test_constant_channel_gets_unit_std() -> None:
    mean, std = channel_stats(np.full((2, 1, 3, 3), 51, dtype=np.uint8))
    assert mean == [pytest.approx(0.2)] and std == [1.0]
    with pytest.raises(ValueError, match="positive stds"):
        normalize(IMAGES, [0, 0, 0], [1, 0, 1])


def test_crop_matches_reference() -> None:
    padding = 3
    offsets = RNG.integers(0, 2 * padding + 1, size=(len(IMAGES), 2))
    np.testing.assert_array_equal(crop_padded(IMAGES, padding, offsets), naive_crop(IMAGES, padding, offsets))


def test_crop_special_offsets() -> None:
    p, (_, _, h, w) = 2, IMAGES.shape
    centre = np.full((len(IMAGES), 2), p)
    np.testing.assert_array_equal(crop_padded(IMAGES, p, centre), IMAGES)  # (P, P): the original
    corner = crop_padded(IMAGES, p, np.zeros((len(IMAGES), 2), dtype=int))  # (0, 0): top-left
    assert not corner[:, :, :p].any() and not corner[:, :, :, :p].any()  # zero border
    np.testing.assert_array_equal(corner[:, :, p:, p:], IMAGES[:, :, : h - p, : w - p])
    with pytest.raises(ValueError, match="offsets"):
        crop_padded(IMAGES, p, np.full((len(IMAGES), 2), 2 * p + 1))


def test_flip() -> None:
    mask = np.zeros(len(IMAGES), dtype=bool)
    mask[[0, 5, 17, 52]] = True
    flipped = flip_horizontal(IMAGES, mask)
    np.testing.assert_array_equal(flipped[mask], IMAGES[mask][..., ::-1])
    np.testing.assert_array_equal(flipped[~mask], IMAGES[~mask])
    np.testing.assert_array_equal(flip_horizontal(flipped, mask), IMAGES)  # flip twice: identity


def test_augment_draws_and_batches() -> None:
    augment = Augment(crop_padding=2, flip=True)
    offsets, flips = draw_augment(augment, 20_000, np.random.default_rng(0))
    assert offsets.min() == 0 and offsets.max() == 4
    assert 0.48 < flips.mean() < 0.52
    assert draw_augment(Augment(crop_padding=0, flip=False), 5, np.random.default_rng(0)) == (None, None)
    # The loader's batch equals crop-then-flip of the samples with the epoch's draws, in epoch order.
    loader = make_loader(augment=augment, mean=[0, 0, 0], std=[1 / 255] * 3)
    rng = np.random.default_rng([7, 4])
    order = rng.permutation(len(IMAGES))
    offsets, flips = draw_augment(augment, len(IMAGES), rng)
    expected = flip_horizontal(naive_crop(IMAGES[order], 2, offsets), flips)
    got = np.concatenate([x for x, _ in loader.epoch(4)])
    np.testing.assert_array_equal(np.rint(got).astype(np.uint8), expected)


def test_images_not_modified() -> None:
    before = IMAGES.copy()
    collect(make_loader(augment=Augment()).epoch(0))
    np.testing.assert_array_equal(IMAGES, before)
