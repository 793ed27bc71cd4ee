"""``conv2d_relu_pool_forward``: convolution, ReLU and a tiling max pool in one pass, for inference.

On the shifted path each block is rectified and pooled while it is in cache (compiled or NumPy
engine); elsewhere the three kernels run in turn. Either way the numbers must be those of
``max_pool2d_forward(relu_forward(conv2d_forward(...)))``, bit for bit, under both engines.
"""

from __future__ import annotations

import numpy as np
import pytest

import stridenet.functional._shifted as shifted
from stridenet.functional import conv2d_forward, conv2d_relu_pool_forward, max_pool2d_forward, relu_forward
from stridenet.functional._layout import is_channels_last

# (N, C, H, W, K, kernel, stride, padding, pool): shifted geometries with even and odd outputs, then
# ones the shifted path refuses (few channels, stride 2), which run the three kernels in turn
CASES = {
    "3x3-pool2": ((3, 9, 8, 8, 5), 3, 1, 1, (2, 2)),
    "odd-output-pool2": ((2, 12, 7, 9, 4), 3, 1, 1, (2, 2)),              # 7x9 -> 3x4, last row/col dropped
    "valid-pool3": ((2, 10, 11, 11, 6), 3, 1, 0, (3, 3)),
    "5x5-pool2x3": ((2, 9, 10, 12, 3), 5, 1, 2, (2, 3)),
    "few-channels": ((2, 3, 8, 8, 5), 3, 1, 1, (2, 2)),
    "stride-2": ((2, 9, 12, 12, 4), 3, 2, 1, (2, 2)),
    # whole vectors of filters: the compiled engine's tiles, which leave the padding pixels unwritten
    "tiles-pool2": ((3, 9, 8, 8, 16), 3, 1, 1, (2, 2)),
    "tiles-odd-output": ((2, 12, 9, 11, 32), 3, 1, 1, (2, 2)),
    "tiles-few-channels": ((2, 3, 10, 10, 16), 3, 1, 1, (2, 2)),   # shifted with the tiles, else channel-major
}


def _arrays(case, dtype, seed=0):
    (N, C, H, W, K), kernel = case[0], case[1]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = (rng.standard_normal((K, C, kernel, kernel)) / kernel).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    return x, w, b


def _three_steps(x, w, b, case) -> np.ndarray:
    _, _, stride, padding, pool = case
    return max_pool2d_forward(relu_forward(conv2d_forward(x, w, b, stride, padding)[0], keep_mask=False)[0], pool)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_the_fused_pass_gives_the_three_steps_numbers(name: str, dtype: type, engine: str, monkeypatch) -> None:
    case = CASES[name]
    x, w, b = _arrays(case, dtype)
    pools = []
    forward = shifted.forward

    def recorded(x, filters, b, axes, out, rectify=False, positive=None, pool=(1, 1)):
        pools.append(pool)
        return forward(x, filters, b, axes, out, rectify, positive, pool)

    monkeypatch.setattr(shifted, "forward", recorded)
    got = conv2d_relu_pool_forward(x, w, b, case[4], case[2], case[3])
    pooled_in_blocks = bool(pools) and set(pools) == {case[4]}
    shifted_path = name not in ("few-channels", "stride-2") and (name != "tiles-few-channels" or engine == "compiled")
    assert pooled_in_blocks == shifted_path, "only the shifted geometries pool in blocks"
    expected = _three_steps(x, w, b, case)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == dtype and is_channels_last(got)


def test_nan_propagates_through_the_pool_as_in_the_three_steps(engine: str) -> None:
    case = CASES["3x3-pool2"]
    x, w, b = _arrays(case, np.float32, seed=1)
    x[0, 0, 3, 3] = np.nan
    x[1, 2, 0, 0] = np.inf
    got = conv2d_relu_pool_forward(x, w, b, case[4], case[2], case[3])
    expected = _three_steps(x, w, b, case)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got).any()


def test_an_output_smaller_than_the_pool_is_refused_as_the_pool_refuses_it(engine: str) -> None:
    x, w, b = _arrays(((1, 9, 2, 2, 3), 3, 1, 1, (3, 3)), np.float32)
    with pytest.raises(Exception) as fused:
        conv2d_relu_pool_forward(x, w, b, (3, 3), 1, 1)
    with pytest.raises(Exception) as steps:
        _three_steps(x, w, b, ((1, 9, 2, 2, 3), 3, 1, 1, (3, 3)))
    assert type(fused.value) is type(steps.value) and str(fused.value) == str(steps.value)
