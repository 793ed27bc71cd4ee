"""``CrossEntropyLoss``: the classification loss on logits and integer labels."""

from __future__ import annotations

import numpy as np

from stridenet.functional.loss import cross_entropy_backward, cross_entropy_forward
from stridenet.nn.layer import Layer


class CrossEntropyLoss(Layer):
    """Softmax cross-entropy averaged over the batch, stable for any finite logits.

    ``loss = loss_fn(logits, labels)`` returns a float; ``dlogits = loss_fn.backward()`` its gradient.

    Args:
        label_smoothing: mass in [0, 1] spread evenly over all classes (default 0.0, as PyTorch).

    Shape:
        logits (N, C), labels (N,) integers in [0, C) -> a float.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], received {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, logits: np.ndarray, labels: np.ndarray) -> float:  # type: ignore[override]
        return super().__call__((logits, labels))  # type: ignore[return-value]

    def forward(self, inputs: tuple[np.ndarray, np.ndarray]) -> float:  # type: ignore[override]
        loss, cache = cross_entropy_forward(*inputs, self.label_smoothing)
        self._keep(cache)
        return loss

    def backward(self, dout: float = 1.0) -> np.ndarray:  # type: ignore[override]
        dlogits = cross_entropy_backward(self._take_cache())
        return dlogits if dout == 1.0 else dlogits * dlogits.dtype.type(dout)

    def extra_repr(self) -> str:
        return f"label_smoothing={self.label_smoothing:g}" if self.label_smoothing else ""
