"""Batch normalisation layers with PyTorch's running statistics and train/eval behaviour."""

from __future__ import annotations

import numpy as np

from stridenet.errors import ShapeError
from stridenet.functional.norm import batch_norm_backward, batch_norm_forward
from stridenet.nn._args import positive_int
from stridenet.nn.layer import Layer, Parameter


class _BatchNorm(Layer):
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *, dtype=np.float32) -> None:
        super().__init__()
        self.num_features = positive_int(num_features, "num_features", f"{type(self).__name__}({num_features})")
        self.eps = float(eps)
        self.momentum = momentum
        self.track_running_stats = track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        if track_running_stats:
            self.running_mean: np.ndarray | None = np.zeros(num_features, dtype)
            self.running_var: np.ndarray | None = np.ones(num_features, dtype)
            self.num_batches_tracked: np.ndarray | None = np.array(0, dtype=np.int64)
        else:  # as PyTorch: no buffers, batch statistics in both modes
            self._buffer_names = ()
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim not in self._ranks:
            ranks = " or ".join(f"{r}-d" for r in self._ranks)
            raise ShapeError(f"expected a {ranks} input, received shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ShapeError(f"expected input with {self.num_features} channels, received shape {x.shape}")
        if self.weight is not None and x.dtype != self.weight.dtype:
            raise ShapeError(f"expected input of dtype {self.weight.dtype} (the weights' dtype), "
                             f"received {x.dtype} with shape {x.shape}")
        use_batch = self.training or not self.track_running_stats
        out, cache, mean, var = batch_norm_forward(
            x, None if self.weight is None else self.weight.data, None if self.bias is None else self.bias.data,
            self.running_mean, self.running_var, use_batch, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, x.size // x.shape[1])
        self._keep(cache)
        return out

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        """PyTorch's rule: exponential average with ``momentum`` (cumulative when None) of the mean
        and of the *unbiased* variance."""
        self.num_batches_tracked = self.num_batches_tracked + 1
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dtype = self.running_mean.dtype
        unbiased = var * (count / (count - 1))
        self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(dtype)
        self.running_var = ((1 - m) * self.running_var + m * unbiased).astype(dtype)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        dx, dgamma, dbeta = batch_norm_backward(dout, self._take_cache())
        if self.weight is not None:
            self.weight.grad += dgamma
            self.bias.grad += dbeta
        return dx

    def extra_repr(self) -> str:
        text = f"{self.num_features}"
        if self.eps != 1e-5:
            text += f", eps={self.eps:g}"
        if self.momentum != 0.1:
            text += f", momentum={self.momentum}"
        return text + ("" if self.weight is not None else ", affine=False")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of each channel of an (N, C, H, W) input over N, H and W.

    Training mode uses the batch's mean and biased variance and updates
    ``running_mean``/``running_var`` (``momentum`` 0.1, unbiased variance); evaluation mode uses them.

    Args:
        num_features: C. eps: added to the variance (1e-5). momentum: 0.1, or None for a cumulative
        average. affine: learn ``weight`` (gamma) and ``bias`` (beta). dtype: float32 default.
    """

    _ranks = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, per feature C; otherwise as BatchNorm2d."""

    _ranks = (2, 3)
