"""Pooling layers around ``functional.pool``: MaxPool2d, AvgPool2d, GlobalAvgPool2d."""

from __future__ import annotations

import numpy as np

from stridenet.functional.pool import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from stridenet.nn._args import non_negative_pair, positive_pair, show_pair
from stridenet.nn.layer import Layer


class _Pool2d(Layer):
    def __init__(self, kind: str, kernel_size, stride, padding, ceil_mode: bool, dilation=1) -> None:
        super().__init__()
        name = f"{kind}(kernel_size={kernel_size!r})"
        self.kernel_size = positive_pair(kernel_size, "kernel_size", name)
        self.stride = self.kernel_size if stride is None else positive_pair(stride, "stride", name)
        self.padding = non_negative_pair(padding, "padding", name)
        self.dilation = positive_pair(dilation, "dilation", name)
        self.ceil_mode = bool(ceil_mode)
        for k, p in zip(self.kernel_size, self.padding, strict=True):
            if p > k // 2:
                raise ValueError(f"{name}: padding must be at most half the kernel size (as PyTorch), "
                                 f"received padding={padding!r}")

    def extra_repr(self) -> str:
        k = self.kernel_size
        text = f"kernel_size={k[0] if k[0] == k[1] else k}"
        if self.stride != self.kernel_size:
            text += show_pair("stride", self.stride, None)
        text += show_pair("padding", self.padding, 0) + show_pair("dilation", self.dilation, 1)
        return text + (", ceil_mode=True" if self.ceil_mode else "")


class MaxPool2d(_Pool2d):
    """Max pooling: the largest value of each F x F window, moved by stride S (default S = F).

    Backward routes each gradient to the *first* maximum of its window (row-major order within the
    window, as PyTorch's CPU kernel), remembered from the forward pass; overlapping windows add up.

    Args:
        kernel_size: F, int or pair.
        stride: S, int or pair; default ``kernel_size``.
        padding: implicit -inf padding on each side, at most half the kernel (default 0).
        dilation: spacing between window taps (default 1).
        ceil_mode: round the output size up, as PyTorch (default False).

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - D(F - 1) - 1)/S) + 1``.

    Example:
        >>> MaxPool2d(2)(np.zeros((1, 3, 28, 28), np.float32)).shape
        (1, 3, 14, 14)
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                 ceil_mode: bool = False) -> None:
        super().__init__("MaxPool2d", kernel_size, stride, padding, ceil_mode, dilation)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, cache = max_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                        self.ceil_mode)
        self._keep(cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return max_pool2d_backward(dout, self._take_cache())


class AvgPool2d(_Pool2d):
    """Average pooling over F x F windows moved by stride S (default S = F).

    Args:
        kernel_size, stride, padding, ceil_mode: as MaxPool2d (zero padding).
        count_include_pad: padding zeros count towards each mean (default True, as PyTorch).

    Shape:
        (N, C, H, W) -> (N, C, H_out, W_out), ``H_out = floor((H + 2P - F)/S) + 1``.
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__("AvgPool2d", kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, cache = avg_pool2d_forward(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                        self.count_include_pad)
        self._keep(cache)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return avg_pool2d_backward(dout, self._take_cache())

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.count_include_pad else ", count_include_pad=False")


class GlobalAvgPool2d(Layer):
    """Mean of each whole activation map: (N, C, H, W) -> (N, C), as in All-CNN and ResNet heads."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        out, x_shape = global_avg_pool2d_forward(x)
        self._keep(x_shape)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return global_avg_pool2d_backward(dout, self._take_cache())
