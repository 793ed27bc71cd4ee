"""Naive loop kernels, CS231n style: the slow, obviously-correct references the fast kernels are tested against.

Every function loops over output (or input) indices and does the maths of one position at a time;
backward functions take the forward's inputs instead of a cache. Nothing here imports stridenet, so a
shared bug cannot hide in both. Padding is always explicit: ``((top, bottom), (left, right))`` for
convolution, ``(ph, pw)`` on both sides for pooling; sizes are ``(h, w)`` pairs.
"""

from __future__ import annotations

import math

import numpy as np

Pair = tuple[int, int]


# -- sizes -------------------------------------------------------------------------------------
def conv_output_size(size: int, kernel: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    """floor((W + P_lo + P_hi - D(F - 1) - 1)/S) + 1, the lecture's (W - F + 2P)/S + 1 generalised."""
    return (size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """PyTorch's pooling size: ceil instead of floor in ceil_mode, but the last window must start
    inside the input or its left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same': output ceil(W/S); the total padding split with the odd pixel at the end."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


# -- convolution -------------------------------------------------------------------------------
def _conv_geometry(x_shape, w_shape, stride: Pair, padding, dilation: Pair):
    (pt, pb), (pl, pr) = padding
    H_out = conv_output_size(x_shape[2], w_shape[2], stride[0], dilation[0], pt, pb)
    W_out = conv_output_size(x_shape[3], w_shape[3], stride[1], dilation[1], pl, pr)
    return H_out, W_out


def _conv_window(i: int, j: int, w_shape, stride: Pair, dilation: Pair) -> tuple[slice, slice]:
    """Rows and columns of the padded input that output position (i, j) reads."""
    top, left = i * stride[0], j * stride[1]
    return (slice(top, top + dilation[0] * (w_shape[2] - 1) + 1, dilation[0]),
            slice(left, left + dilation[1] * (w_shape[3] - 1) + 1, dilation[1]))


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Pair = (1, 1),
                   padding=((0, 0), (0, 0)), dilation: Pair = (1, 1), groups: int = 1) -> np.ndarray:
    """out[n, k, i, j] = sum(window(n, group of k, i, j) * w[k]) + b[k]."""
    N, _, _, _ = x.shape
    K, C_group = w.shape[:2]
    H_out, W_out = _conv_geometry(x.shape, w.shape, stride, padding, dilation)
    x_padded = np.pad(x, ((0, 0), (0, 0), *padding))
    out = np.zeros((N, K, H_out, W_out), x.dtype)
    for n in range(N):
        for k in range(K):
            g = k // (K // groups)
            channels = slice(g * C_group, (g + 1) * C_group)
            for i in range(H_out):
                for j in range(W_out):
                    rows, cols = _conv_window(i, j, w.shape, stride, dilation)
                    out[n, k, i, j] = np.sum(x_padded[n, channels, rows, cols] * w[k]) + (0 if b is None else b[k])
    return out


def conv2d_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair = (1, 1),
                    padding=((0, 0), (0, 0)), dilation: Pair = (1, 1),
                    groups: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db): each output position sends dout * w to its window and dout * window to w."""
    N, _, H, W = x.shape
    K, C_group = w.shape[:2]
    (pt, _), (pl, _) = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), *padding))
    dx_padded = np.zeros_like(x_padded)
    dw = np.zeros_like(w)
    db = np.zeros(K, dout.dtype)
    for n in range(N):
        for k in range(K):
            g = k // (K // groups)
            channels = slice(g * C_group, (g + 1) * C_group)
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    rows, cols = _conv_window(i, j, w.shape, stride, dilation)
                    dw[k] += x_padded[n, channels, rows, cols] * dout[n, k, i, j]
                    dx_padded[n, channels, rows, cols] += w[k] * dout[n, k, i, j]
                    db[k] += dout[n, k, i, j]
    return dx_padded[:, :, pt:pt + H, pl:pl + W], dw, db


# -- pooling -----------------------------------------------------------------------------------
def _pool_taps(i: int, j: int, shape, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair):
    """Input positions (h, w) of output (i, j)'s window that lie inside the input, row-major."""
    H, W = shape[2:]
    taps = []
    for a in range(kernel[0]):
        for c in range(kernel[1]):
            h = i * stride[0] - padding[0] + a * dilation[0]
            w = j * stride[1] - padding[1] + c * dilation[1]
            if 0 <= h < H and 0 <= w < W:
                taps.append((h, w))
    return taps


def _pool_out_shape(shape, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair, ceil_mode: bool):
    return (*shape[:2], *(pool_output_size(shape[2 + d], kernel[d], stride[d], padding[d], dilation[d], ceil_mode)
                          for d in range(2)))


def _first_max(x: np.ndarray, n: int, c: int, taps) -> tuple[int, int]:
    """The first (row-major) tap holding the window's maximum: a later equal value does not win."""
    best = taps[0]
    for tap in taps[1:]:
        if x[n, c, tap[0], tap[1]] > x[n, c, best[0], best[1]]:
            best = tap
    return best


def max_pool2d_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0),
                       dilation: Pair = (1, 1), ceil_mode: bool = False) -> np.ndarray:
    """Largest value of each window; -inf for a window that sees only padding."""
    out = np.zeros(_pool_out_shape(x.shape, kernel, stride, padding, dilation, ceil_mode), x.dtype)
    for n, c, i, j in np.ndindex(out.shape):
        taps = _pool_taps(i, j, x.shape, kernel, stride, padding, dilation)
        out[n, c, i, j] = x[(n, c, *_first_max(x, n, c, taps))] if taps else -np.inf
    return out


def max_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0),
                        dilation: Pair = (1, 1), ceil_mode: bool = False) -> np.ndarray:
    """Each output's gradient goes to its window's first maximum; overlapping windows add up; a
    window that sees only padding passes no gradient on."""
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(dout.shape):
        taps = _pool_taps(i, j, x.shape, kernel, stride, padding, dilation)
        if taps:
            dx[(n, c, *_first_max(x, n, c, taps))] += dout[n, c, i, j]
    return dx


def _avg_window(i: int, j: int, shape, kernel: Pair, stride: Pair, padding: Pair, count_include_pad: bool):
    """(taps inside the input, divisor) with PyTorch's rule: the window clipped to the padded input
    counts when ``count_include_pad``, otherwise only the taps inside the input."""
    size = 1
    for d, index in enumerate((i, j)):
        start = index * stride[d] - padding[d]
        end = min(start + kernel[d], shape[2 + d] + padding[d])
        size *= end - start
    taps = _pool_taps(i, j, shape, kernel, stride, padding, (1, 1))
    return taps, (size if count_include_pad else len(taps))


def avg_pool2d_forward(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0), ceil_mode: bool = False,
                       count_include_pad: bool = True) -> np.ndarray:
    out = np.zeros(_pool_out_shape(x.shape, kernel, stride, padding, (1, 1), ceil_mode), x.dtype)
    for n, c, i, j in np.ndindex(out.shape):
        taps, divisor = _avg_window(i, j, x.shape, kernel, stride, padding, count_include_pad)
        out[n, c, i, j] = sum(x[n, c, h, w] for h, w in taps) / divisor
    return out


def avg_pool2d_backward(dout: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair = (0, 0),
                        ceil_mode: bool = False, count_include_pad: bool = True) -> np.ndarray:
    dx = np.zeros_like(x)
    for n, c, i, j in np.ndindex(dout.shape):
        taps, divisor = _avg_window(i, j, x.shape, kernel, stride, padding, count_include_pad)
        for h, w in taps:
            dx[n, c, h, w] += dout[n, c, i, j] / divisor
    return dx


def global_avg_pool2d_forward(x: np.ndarray) -> np.ndarray:
    N, C, H, W = x.shape
    out = np.zeros((N, C), x.dtype)
    for n, c in np.ndindex(N, C):
        out[n, c] = sum(x[n, c, h, w] for h, w in np.ndindex(H, W)) / (H * W)
    return out


def global_avg_pool2d_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    dx = np.zeros_like(x)
    for n, c, h, w in np.ndindex(x.shape):
        dx[n, c, h, w] = dout[n, c] / (x.shape[2] * x.shape[3])
    return dx


# -- fully connected and elementwise -------------------------------------------------------------
def linear_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], w.shape[0]), x.dtype)
    for r, o in np.ndindex(out.shape):
        out[r, o] = sum(rows[r, i] * w[o, i] for i in range(w.shape[1])) + (0 if b is None else b[o])
    return out.reshape(*x.shape[:-1], w.shape[0])


def linear_backward(dout: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, drows = x.reshape(-1, x.shape[-1]), dout.reshape(-1, w.shape[0])
    dx, dw, db = np.zeros_like(rows), np.zeros_like(w), np.zeros(w.shape[0], dout.dtype)
    for r, o in np.ndindex(drows.shape):
        db[o] += drows[r, o]
        for i in range(w.shape[1]):
            dx[r, i] += drows[r, o] * w[o, i]
            dw[o, i] += drows[r, o] * rows[r, i]
    return dx.reshape(x.shape), dw, db


def leaky_relu_forward(x: np.ndarray, negative_slope: float) -> np.ndarray:
    out = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        out[index] = x[index] if x[index] > 0 else negative_slope * x[index]
    return out


def leaky_relu_backward(dout: np.ndarray, x: np.ndarray, negative_slope: float) -> np.ndarray:
    dx = np.zeros_like(dout)
    for index in np.ndindex(x.shape):
        dx[index] = dout[index] if x[index] > 0 else negative_slope * dout[index]
    return dx


def relu_forward(x: np.ndarray) -> np.ndarray:
    return leaky_relu_forward(x, 0.0)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    return leaky_relu_backward(dout, x, 0.0)


# -- batch normalisation -------------------------------------------------------------------------
def _channel_values(x: np.ndarray, c: int) -> np.ndarray:
    """Every value of channel c (axis 1), as a flat copy."""
    return np.moveaxis(x, 1, 0)[c].ravel()


def batch_norm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                       running_var: np.ndarray, training: bool, eps: float = 1e-5) -> np.ndarray:
    """Per channel: (x - mean)/sqrt(var + eps) * gamma + beta, with the batch's mean and biased
    variance in training, the running ones otherwise."""
    out = np.zeros_like(x)
    out_channels = np.moveaxis(out, 1, 0)
    for c in range(x.shape[1]):
        values = _channel_values(x, c)
        if training:
            mean = sum(values) / values.size
            var = sum((v - mean) ** 2 for v in values) / values.size
        else:
            mean, var = running_mean[c], running_var[c]
        x_hat = (values - mean) / math.sqrt(var + eps)
        out_channels[c] = (gamma[c] * x_hat + beta[c]).reshape(out_channels[c].shape)
    return out


def batch_norm_backward(dout: np.ndarray, x: np.ndarray, gamma: np.ndarray, running_mean: np.ndarray,
                        running_var: np.ndarray, training: bool,
                        eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta), one channel at a time. Training mode goes back through the staged graph
    mean -> centred -> var -> inv_std -> x_hat -> gamma*x_hat + beta; evaluation mode's statistics
    are constants, so there dx = dout * gamma * inv_std."""
    dx = np.zeros_like(x)
    dx_channels = np.moveaxis(dx, 1, 0)
    dgamma, dbeta = np.zeros_like(gamma), np.zeros_like(gamma)
    for c in range(x.shape[1]):
        values, grads = _channel_values(x, c), _channel_values(dout, c)
        m = values.size
        mean = sum(values) / m if training else running_mean[c]
        centred = values - mean
        var = sum(centred**2) / m if training else running_var[c]
        inv_std = 1.0 / math.sqrt(var + eps)
        x_hat = centred * inv_std
        dbeta[c] = sum(grads)
        dgamma[c] = sum(grads * x_hat)
        dx_hat = grads * gamma[c]
        if training:
            d_var = sum(dx_hat * centred) * -0.5 * (var + eps) ** -1.5
            d_centred = dx_hat * inv_std + 2.0 * centred / m * d_var
            d_values = d_centred - sum(d_centred) / m
        else:
            d_values = dx_hat * inv_std
        dx_channels[c] = d_values.reshape(dx_channels[c].shape)
    return dx, dgamma, dbeta


# -- loss ----------------------------------------------------------------------------------------
def cross_entropy_forward(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> float:
    """Mean over rows of -sum_c target_c log softmax_c, target = (1 - s) one_hot + s/C."""
    N, C = logits.shape
    total = 0.0
    for n in range(N):
        top = max(logits[n])
        log_sum = top + math.log(sum(math.exp(z - top) for z in logits[n]))
        for c in range(C):
            target = label_smoothing / C + (1.0 - label_smoothing) * (c == labels[n])
            total -= target * (logits[n, c] - log_sum)
    return total / N


def cross_entropy_backward(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> np.ndarray:
    """(softmax - target)/N."""
    N, C = logits.shape
    dlogits = np.zeros_like(logits)
    for n in range(N):
        top = max(logits[n])
        exps = [math.exp(z - top) for z in logits[n]]
        for c in range(C):
            target = label_smoothing / C + (1.0 - label_smoothing) * (c == labels[n])
            dlogits[n, c] = (exps[c] / sum(exps) - target) / N
    return dlogits
