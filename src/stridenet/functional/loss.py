"""Softmax cross-entropy on logits and integer labels, computed in log space so it never overflows.

``log softmax(z)_c = z_c - max(z) - log(sum_k exp(z_k - max(z)))``: every exponent is at most 0,
so logits of +-1000 give a finite, exact loss.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from stridenet.errors import ShapeError


class CrossEntropyCache(NamedTuple):
    probs: np.ndarray         # (N, C) softmax of the logits
    target: np.ndarray        # (N, C) target distribution (one-hot, smoothed)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (N, C) logits, stable for any finite values."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def cross_entropy_forward(logits: np.ndarray, labels: np.ndarray,
                          label_smoothing: float = 0.0) -> tuple[float, CrossEntropyCache]:
    """Mean over the batch of ``-sum_c target_c log softmax(logits)_c``.

    The target puts ``1 - label_smoothing`` on the true class plus ``label_smoothing / C`` on every
    class, as PyTorch's ``CrossEntropyLoss(label_smoothing=...)``.

    Shape:
        logits (N, C) float, labels (N,) integers in [0, C).
    """
    if logits.ndim != 2:
        raise ShapeError(f"expected logits of shape (N, C), received shape {logits.shape}")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(f"expected integer labels of shape ({logits.shape[0]},), received "
                         f"{labels.dtype} labels of shape {labels.shape}")
    N, C = logits.shape
    if N and (labels.min() < 0 or labels.max() >= C):
        bad = labels[(labels < 0) | (labels >= C)][0]
        raise ShapeError(f"expected labels in [0, {C}), received {int(bad)}")
    log_probs = log_softmax(logits)
    target = np.full_like(logits, label_smoothing / C)
    target[np.arange(N), labels] += 1.0 - label_smoothing
    loss = -float((target * log_probs).sum()) / N
    return loss, CrossEntropyCache(np.exp(log_probs), target)


def cross_entropy_backward(cache: CrossEntropyCache) -> np.ndarray:
    """``(softmax(logits) - target) / N``: (N, C), in the logits' dtype."""
    probs, target = cache
    return (probs - target) / probs.dtype.type(probs.shape[0])
