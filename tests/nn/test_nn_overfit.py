"""End to end: a small CNN trained with plain SGD written here memorises 32 random images."""

from __future__ import annotations

import numpy as np

from stridenet import nn


def test_small_cnn_overfits_32_random_images_with_plain_sgd() -> None:
    rng = np.random.default_rng(0)
    images = rng.standard_normal((32, 1, 12, 12)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, rng=1), nn.ReLU(), nn.MaxPool2d(2),      # (32, 8, 6, 6)
        nn.Conv2d(8, 16, 3, padding=1, rng=2), nn.ReLU(), nn.MaxPool2d(2),     # (32, 16, 3, 3)
        nn.Flatten(), nn.Linear(16 * 3 * 3, 10, rng=3),
    )
    loss_fn = nn.CrossEntropyLoss()
    lr = 0.1
    losses = []
    for _ in range(300):
        logits = model(images)
        losses.append(loss_fn(logits, labels))
        if (logits.argmax(axis=1) == labels).all():
            break
        model.zero_grad()
        model.backward(loss_fn.backward())
        for p in model.parameters():
            p.data -= lr * p.grad
    with nn.no_grad():
        accuracy = (model(images).argmax(axis=1) == labels).mean()
    assert accuracy == 1.0, f"training accuracy {accuracy} after {len(losses)} steps, loss {losses[-1]:.3f}"
    assert losses[-1] < 0.5 * losses[0]
    assert all(p.data.dtype == np.float32 for p in model.parameters())
