"""Stateful layers: each holds its ``Parameter``s and calls a kernel pair from ``stridenet.functional``."""

from stridenet.nn import init
from stridenet.nn.activation import Dropout, Identity, LeakyReLU, ReLU
from stridenet.nn.containers import Residual, Sequential, first_layer, input_grad_skipped
from stridenet.nn.conv import Conv2d
from stridenet.nn.layer import Layer, Parameter, grad_enabled, no_grad
from stridenet.nn.linear import Flatten, Linear
from stridenet.nn.loss import CrossEntropyLoss
from stridenet.nn.norm import BatchNorm1d, BatchNorm2d
from stridenet.nn.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d

__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss", "Dropout", "Flatten",
    "GlobalAvgPool2d", "Identity", "Layer", "LeakyReLU", "Linear", "MaxPool2d", "Parameter", "ReLU",
    "Residual", "Sequential", "first_layer", "grad_enabled", "init", "input_grad_skipped", "no_grad",
]
