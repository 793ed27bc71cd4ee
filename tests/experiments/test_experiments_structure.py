"""Structural numbers of the training experiments: receptive fields, weights, parameters, MACs."""

from __future__ import annotations

import numpy as np
import pytest

from stridenet import nn
from stridenet.experiments import fc_vs_conv, pool_vs_stride, stack_vs_large
from stridenet.models import build_model, summary

FASHION = (1, 28, 28)


@pytest.mark.parametrize("K", [4, 32])
def test_stack_and_large_block_see_7x7_with_27_vs_49_K_squared_weights(K: int) -> None:
    stack = stack_vs_large.block_stats("3x3 stack", K, FASHION)
    large = stack_vs_large.block_stats("7x7", K, FASHION)
    assert stack["block_receptive_field"] == large["block_receptive_field"] == 7
    assert stack["block_weights"] == 27 * K * K and large["block_weights"] == 49 * K * K
    assert stack["block_params"] == 27 * K * K + 3 * K and large["block_params"] == 49 * K * K + K
    pixels = 14 * 14  # 'same' padding on the 14x14 map after the stem
    assert stack["block_macs"] == 27 * K * K * pixels and large["block_macs"] == 49 * K * K * pixels


def test_stack_and_large_models_differ_only_in_the_block() -> None:
    K = 8
    stack = summary(stack_vs_large.model_spec("3x3 stack", K), FASHION)
    large = summary(stack_vs_large.model_spec("7x7", K), FASHION)
    assert large.total_params - stack.total_params == (49 - 27) * K * K - 2 * K
    assert stack.rows[-1].whole_input and large.rows[-1].whole_input


def test_pool_vs_stride_variants() -> None:
    K = 16
    models = {name: build_model(pool_vs_stride.model_spec(name, K), FASHION, 10, rng=0)
              for name in pool_vs_stride.MODELS}
    params = {name: m.num_parameters() for name, m in models.items()}
    # All-CNN and ConvPool add the same 3x3 conv-BN per stage; Strided only changes a stride
    extra = 9 * K * K + 2 * K + 9 * (2 * K) ** 2 + 2 * (2 * K)
    assert params["strided"] == params["max pool"]
    assert params["all-cnn"] == params["conv+pool"] == params["max pool"] + extra
    for name, model in models.items():
        shapes = [r.output_shape for r in summary(model, FASHION).rows]
        assert shapes[-3] == (2 * K, 7, 7), name  # the map before flatten and the classifier
        has_pool = any(isinstance(layer, nn.MaxPool2d) for layer in model)
        assert has_pool == (name in ("max pool", "conv+pool")), name
    with pytest.raises(ValueError, match="unknown variant"):
        pool_vs_stride.model_spec("avg pool", K)


def test_fc_vs_conv_parameter_counts() -> None:
    fc = build_model(fc_vs_conv.model_spec("fully connected", 16), FASHION, 10, rng=0)
    cnn = build_model(fc_vs_conv.model_spec("CNN", 16), FASHION, 10, rng=0)
    assert fc.num_parameters() == 784 * 100 + 100 + 100 * 10 + 10 == 79_510
    assert cnn.num_parameters() == (25 * 16 + 16) + (25 * 16 * 32 + 32) + (32 * 7 * 7 * 10 + 10) == 28_938


def test_shift_images_moves_each_image_one_way_and_fills_zeros() -> None:
    images = np.arange(2 * 5 * 5, dtype=np.uint8).reshape(2, 1, 5, 5) + 1
    rng = np.random.default_rng(0)
    shifted = fc_vs_conv.shift_images(images, 2, rng)
    for original, moved in zip(images[:, 0], shifted[:, 0], strict=True):
        candidates = [np.pad(original, ((0, 0), (2, 0)))[:, :5], np.pad(original, ((0, 0), (0, 2)))[:, 2:],
                      np.pad(original, ((2, 0), (0, 0)))[:5], np.pad(original, ((0, 2), (0, 0)))[2:]]
        assert any(np.array_equal(moved, c) for c in candidates)
        assert (moved == 0).sum() == 10
    assert fc_vs_conv.shift_images(images, 0, rng) is images
