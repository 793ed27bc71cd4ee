"""Preset architectures, each an instance of the lecture's pattern
INPUT -> [[CONV -> RELU]*N -> POOL?]*M -> [FC -> RELU]*K -> FC.

Every preset takes the input shape (C, H, W) from the dataset and the number of classes, and builds
a ``Sequential`` whose flatten size is computed by running a zero image through the feature layers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stridenet import nn
from stridenet.nn.init import RngLike, as_generator

InputShape = tuple[int, int, int]


def _flat_size(features: nn.Sequential, input_shape: InputShape) -> int:
    """Number of values the feature layers produce for one image (their output shape, multiplied).

    Runs in evaluation mode, so BatchNorm's running statistics are left untouched."""
    with nn.no_grad():
        out = features.eval()(np.zeros((1, *input_shape), dtype=np.float32))
    features.train()
    return int(np.prod(out.shape[1:]))


def _chain(*parts: nn.Layer | list[nn.Layer]) -> nn.Sequential:
    """A flat Sequential of layers and lists of layers."""
    layers: list[nn.Layer] = []
    for part in parts:
        layers.extend(part if isinstance(part, list) else [part])
    return nn.Sequential(*layers)


def lenet5(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """LeCun et al. (1998) with ReLU and max pooling: conv5x6-pool-conv5x16-pool-fc120-fc84-fc.

    The first convolution pads by 2 so a 28x28 digit is treated like LeNet's 32x32 input.
    """
    g = as_generator(rng)
    features = nn.Sequential(
        nn.Conv2d(input_shape[0], 6, 5, padding=2, rng=g), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, rng=g), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
    )
    flat = _flat_size(features, input_shape)
    return _chain(list(features), nn.Linear(flat, 120, rng=g), nn.ReLU(), nn.Linear(120, 84, rng=g), nn.ReLU(),
                  nn.Linear(84, num_classes, rng=g))


def cs231n_3layer(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """CS231n's three-layer network: conv7x32 (same size) - relu - pool2 - fc100 - relu - fc."""
    g = as_generator(rng)
    features = nn.Sequential(nn.Conv2d(input_shape[0], 32, 7, padding=3, rng=g), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten())
    flat = _flat_size(features, input_shape)
    return _chain(list(features), nn.Linear(flat, 100, rng=g), nn.ReLU(), nn.Linear(100, num_classes, rng=g))


def _conv_bn_relu(c_in: int, c_out: int, g: np.random.Generator, stride: int = 1) -> list[nn.Layer]:
    return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, rng=g), nn.BatchNorm2d(c_out),
            nn.ReLU()]


def _vgg(input_shape: InputShape, num_classes: int, g: np.random.Generator, stages: tuple[tuple[int, int], ...],
         dropout: float) -> nn.Sequential:
    """VGG stages of ``(filters, convolutions)``: that many 3x3 conv-BN-ReLU, then a 2x2 max pool;
    then fc256 - relu - dropout - fc."""
    layers: list[nn.Layer] = []
    c_in = input_shape[0]
    for width, convolutions in stages:
        for _ in range(convolutions):
            layers += _conv_bn_relu(c_in, width, g)
            c_in = width
        layers.append(nn.MaxPool2d(2))
    features = nn.Sequential(*layers, nn.Flatten())
    flat = _flat_size(features, input_shape)
    return _chain(list(features), nn.Linear(flat, 256, rng=g), nn.ReLU(), nn.Dropout(dropout, rng=g),
                  nn.Linear(256, num_classes, rng=g))


def vgg_small(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """VGG-style (Simonyan & Zisserman): three stages of two 3x3 conv-BN-ReLU and a 2x2 max pool
    (32, 64, 128 filters), then fc256 - relu - dropout - fc."""
    return _vgg(input_shape, num_classes, as_generator(rng), ((32, 2), (64, 2), (128, 2)), dropout=0.3)


def vgg_mini(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """A lighter VGG-style net: one 3x3 conv-BN-ReLU at full size (32 filters), then two stages of two
    (64, 128 filters), each stage ending in a 2x2 max pool; fc256 - relu - dropout 0.5 - fc.
    vgg-small's costly second 32-filter convolution at full size is what it leaves out."""
    return _vgg(input_shape, num_classes, as_generator(rng), ((32, 1), (64, 2), (128, 2)), dropout=0.5)


def allcnn(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """All-CNN-C after Springenberg et al. (2015), scaled down: no pooling layers; each stage ends in a
    stride-2 3x3 convolution; 1x1 convolutions produce one map per class; global average pooling."""
    g = as_generator(rng)
    c = input_shape[0]
    return _chain(
        _conv_bn_relu(c, 48, g), _conv_bn_relu(48, 48, g), _conv_bn_relu(48, 48, g, stride=2),
        _conv_bn_relu(48, 96, g), _conv_bn_relu(96, 96, g), _conv_bn_relu(96, 96, g, stride=2),
        _conv_bn_relu(96, 96, g), nn.Conv2d(96, 96, 1, rng=g), nn.ReLU(),
        nn.Conv2d(96, num_classes, 1, rng=g), nn.GlobalAvgPool2d(),
    )


def _basic_block(c_in: int, c_out: int, stride: int, g: np.random.Generator) -> list[nn.Layer]:
    """He et al. (2016) basic block: two 3x3 conv-BN with a shortcut, then ReLU."""
    block = nn.Sequential(*_conv_bn_relu(c_in, c_out, g, stride),
                          nn.Conv2d(c_out, c_out, 3, padding=1, bias=False, rng=g), nn.BatchNorm2d(c_out))
    shortcut = None
    if stride != 1 or c_in != c_out:
        shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False, rng=g), nn.BatchNorm2d(c_out))
    return [nn.Residual(block, shortcut), nn.ReLU()]


def resnet_small(input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """A small ResNet: stem conv3x16, three stages of two basic blocks (16, 32, 64 filters; the last
    two stages halve the size), global average pooling, fc."""
    g = as_generator(rng)
    layers = _conv_bn_relu(input_shape[0], 16, g)
    c_in = 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        layers += _basic_block(c_in, width, stride, g) + _basic_block(width, width, 1, g)
        c_in = width
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(c_in, num_classes, rng=g))


PRESETS: dict[str, Callable[[InputShape, int, RngLike], nn.Sequential]] = {
    "lenet5": lenet5,
    "cs231n-3layer": cs231n_3layer,
    "vgg-small": vgg_small,
    "vgg-mini": vgg_mini,
    "allcnn": allcnn,
    "resnet-small": resnet_small,
}


def build_preset(name: str, input_shape: InputShape, num_classes: int, rng: RngLike = None) -> nn.Sequential:
    """Build preset ``name`` for images of ``input_shape`` (C, H, W) and ``num_classes`` classes.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name](tuple(input_shape), num_classes, rng)  # type: ignore[arg-type]
