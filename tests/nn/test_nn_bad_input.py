"""Bad input, one table: each case builds a layer (or calls one) wrongly and names the error it must raise.

Every message names the layer (its repr, or its constructor call for a build error) once, says what
was expected, and shows what was received: the full shape, or the offending value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest

from stridenet import nn
from stridenet.errors import ShapeError


class BadInput(NamedTuple):
    action: Callable[[], object]
    error: type[Exception]
    where: str                  # the message starts with this and a colon, and names it only once
    expected: str
    received: str


def call(layer: nn.Layer, *shape: int, dtype=np.float32) -> Callable[[], object]:
    return lambda: layer(np.zeros(shape, dtype))


def backward_after(layer: nn.Layer, x_shape: tuple[int, ...], dout_shape: tuple[int, ...]) -> Callable[[], object]:
    def run() -> object:
        layer(np.ones(x_shape, np.float32))
        return layer.backward(np.ones(dout_shape, np.float32))
    return run


def loss(logits: np.ndarray, labels) -> Callable[[], object]:
    return lambda: nn.CrossEntropyLoss()(logits, np.asarray(labels))


LOGITS = np.zeros((2, 3), np.float32)
CNN = "Conv2d(3, 16, kernel_size=5, stride=2)"

CASES = {
    # -- wrong rank ------------------------------------------------------------------------------
    "conv-rank": BadInput(call(nn.Conv2d(3, 16, 5, stride=2), 8, 3, 28), ShapeError, CNN,
                          "expected a 4-d input (N, C, H, W)", "received shape (8, 3, 28)"),
    "maxpool-rank": BadInput(call(nn.MaxPool2d(2), 4, 28, 28), ShapeError, "MaxPool2d(kernel_size=2)",
                             "expected a 4-d input (N, C, H, W)", "received shape (4, 28, 28)"),
    "avgpool-rank": BadInput(call(nn.AvgPool2d(2, stride=1), 1, 4, 8, 8, 2), ShapeError,
                             "AvgPool2d(kernel_size=2, stride=1)", "expected a 4-d input (N, C, H, W)",
                             "received shape (1, 4, 8, 8, 2)"),
    "global-avgpool-rank": BadInput(call(nn.GlobalAvgPool2d(), 4, 3), ShapeError, "GlobalAvgPool2d()",
                                    "expected a 4-d input (N, C, H, W)", "received shape (4, 3)"),
    "flatten-rank": BadInput(call(nn.Flatten(), 5), ShapeError, "Flatten()",
                             "expected an input with a batch axis and at least one more", "received shape (5,)"),
    "batchnorm2d-rank": BadInput(call(nn.BatchNorm2d(3), 4, 3), ShapeError, "BatchNorm2d(3)",
                                 "expected a 4-d input", "received shape (4, 3)"),
    "batchnorm1d-rank": BadInput(call(nn.BatchNorm1d(3), 2, 3, 4, 5), ShapeError, "BatchNorm1d(3)",
                                 "expected a 2-d or 3-d input", "received shape (2, 3, 4, 5)"),
    "loss-logits-rank": BadInput(loss(np.zeros((2, 3, 1), np.float32), [0, 1]), ShapeError, "CrossEntropyLoss()",
                                 "expected logits of shape (N, C)", "received shape (2, 3, 1)"),
    # -- channels / features / dtype not matching the layer -------------------------------------------
    "conv-channels": BadInput(call(nn.Conv2d(3, 16, 5, stride=2), 8, 1, 28, 28), ShapeError, CNN,
                              "expected input with 3 channels", "received shape (8, 1, 28, 28)"),
    "grouped-conv-channels": BadInput(call(nn.Conv2d(4, 8, 3, groups=2), 1, 2, 5, 5), ShapeError,
                                      "Conv2d(4, 8, kernel_size=3, groups=2)", "expected input with 4 channels",
                                      "received shape (1, 2, 5, 5)"),
    "linear-features": BadInput(call(nn.Linear(10, 5), 4, 12), ShapeError, "Linear(10, 5)",
                                "expected input with 10 features in its last dimension", "received shape (4, 12)"),
    "batchnorm-channels": BadInput(call(nn.BatchNorm2d(3), 2, 4, 5, 5), ShapeError, "BatchNorm2d(3)",
                                   "expected input with 3 channels", "received shape (2, 4, 5, 5)"),
    "batchnorm-one-value-per-channel": BadInput(call(nn.BatchNorm1d(3), 1, 3), ShapeError, "BatchNorm1d(3)",
                                                "expected more than 1 value per channel when training",
                                                "received shape (1, 3)"),
    "conv-dtype": BadInput(call(nn.Conv2d(3, 16, 5, stride=2), 8, 3, 28, 28, dtype=np.float64), ShapeError, CNN,
                           "expected input of dtype float32 (the weights' dtype)",
                           "received float64 with shape (8, 3, 28, 28)"),
    # -- output size below 1, with the lecture's formula and the numbers --------------------------------
    "maxpool-output-below-1": BadInput(call(nn.MaxPool2d(3, stride=2), 8, 64, 2, 2), ShapeError,
                                       "MaxPool2d(kernel_size=3, stride=2)",
                                       "output height (W - F + 2P)/S + 1 = (2 - 3 + 0)/2 + 1 = 0.5 is below 1",
                                       "for input shape (8, 64, 2, 2)"),
    "conv-output-below-1": BadInput(call(nn.Conv2d(1, 1, 5), 1, 1, 3, 3), ShapeError, "Conv2d(1, 1, kernel_size=5)",
                                    "output height (W - F + 2P)/S + 1 = (3 - 5 + 0)/1 + 1 = -1 is below 1",
                                    "for input shape (1, 1, 3, 3)"),
    "conv-padded-width-below-1": BadInput(call(nn.Conv2d(1, 1, (1, 7), padding=1), 1, 1, 9, 3), ShapeError,
                                          "Conv2d(1, 1, kernel_size=(1, 7), padding=1)",
                                          "output width (W - F + 2P)/S + 1 = (3 - 7 + 2)/1 + 1 = -1 is below 1",
                                          "for input shape (1, 1, 9, 3)"),
    "dilated-maxpool-width-below-1": BadInput(call(nn.MaxPool2d(3, dilation=2), 2, 1, 9, 4), ShapeError,
                                              "MaxPool2d(kernel_size=3, dilation=2)",
                                              "= (4 - 5 + 0)/3 + 1 = 0.666667 is below 1",
                                              "for input shape (2, 1, 9, 4)"),
    # -- containers: the innermost layer names itself, once --------------------------------------------
    "deep-in-sequential": BadInput(
        call(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(100, 10))),
             2, 1, 8, 8),
        ShapeError, "Linear(100, 10)", "expected input with 100 features in its last dimension",
        "received shape (2, 144)"),
    "residual-branches-disagree": BadInput(
        call(nn.Residual(nn.Conv2d(3, 6, 1)), 2, 3, 4, 4), ShapeError,
        "Residual(\n  (block): Conv2d(3, 6, kernel_size=1)\n)",
        "block output shape (2, 6, 4, 4) does not match shortcut output shape (2, 3, 4, 4)",
        "for input shape (2, 3, 4, 4)"),
    # -- labels ------------------------------------------------------------------------------------------
    "label-too-large": BadInput(loss(LOGITS, [0, 3]), ShapeError, "CrossEntropyLoss()",
                                "expected labels in [0, 3)", "received 3"),
    "label-negative": BadInput(loss(LOGITS, [-1, 0]), ShapeError, "CrossEntropyLoss()",
                               "expected labels in [0, 3)", "received -1"),
    "labels-wrong-shape": BadInput(loss(LOGITS, [[0], [1]]), ShapeError, "CrossEntropyLoss()",
                                   "expected integer labels of shape (2,)", "labels of shape (2, 1)"),
    "labels-too-few": BadInput(loss(LOGITS, [0]), ShapeError, "CrossEntropyLoss()",
                               "expected integer labels of shape (2,)", "labels of shape (1,)"),
    "float-labels": BadInput(loss(LOGITS, [0.0, 1.0]), ShapeError, "CrossEntropyLoss()",
                             "expected integer labels of shape (2,)", "received float64 labels of shape (2,)"),
    # -- backward given a gradient of the wrong shape --------------------------------------------------------
    "conv-backward-shape": BadInput(backward_after(nn.Conv2d(1, 2, 3), (1, 1, 5, 5), (1, 2, 2, 2)), ShapeError,
                                    "Conv2d(1, 2, kernel_size=3)", "expected an output gradient of shape (1, 2, 3, 3)",
                                    "received (1, 2, 2, 2)"),
    # -- hyperparameters, checked when the layer is built ---------------------------------------------------
    "groups-not-dividing-out": BadInput(lambda: nn.Conv2d(4, 6, 3, groups=4), ValueError,
                                        "Conv2d(4, 6, kernel_size=3)", "groups=4 must divide",
                                        "in_channels=4 and out_channels=6"),
    "groups-not-dividing-in": BadInput(lambda: nn.Conv2d(6, 4, 3, groups=4), ValueError,
                                       "Conv2d(6, 4, kernel_size=3)", "groups=4 must divide",
                                       "in_channels=6 and out_channels=4"),
    "zero-in-channels": BadInput(lambda: nn.Conv2d(0, 4, 3), ValueError, "Conv2d(0, 4, kernel_size=3)",
                                 "in_channels must be a positive int", "received 0"),
    "negative-out-channels": BadInput(lambda: nn.Conv2d(3, -2, 3), ValueError, "Conv2d(3, -2, kernel_size=3)",
                                      "out_channels must be a positive int", "received -2"),
    "zero-kernel": BadInput(lambda: nn.Conv2d(3, 4, 0), ValueError, "Conv2d(3, 4, kernel_size=0)",
                            "kernel_size must be positive", "received 0"),
    "negative-kernel-side": BadInput(lambda: nn.Conv2d(3, 4, (3, -1)), ValueError,
                                     "Conv2d(3, 4, kernel_size=(3, -1))", "kernel_size must be positive",
                                     "received (3, -1)"),
    "zero-stride": BadInput(lambda: nn.Conv2d(3, 4, 3, stride=0), ValueError, "Conv2d(3, 4, kernel_size=3)",
                            "stride must be positive", "received 0"),
    "zero-groups": BadInput(lambda: nn.Conv2d(3, 4, 3, groups=0), ValueError, "Conv2d(3, 4, kernel_size=3)",
                            "groups must be a positive int", "received 0"),
    "negative-padding": BadInput(lambda: nn.Conv2d(3, 4, 3, padding=-1), ValueError, "Conv2d(3, 4, kernel_size=3)",
                                 "padding must be non-negative", "received -1"),
    "unknown-padding": BadInput(lambda: nn.Conv2d(3, 4, 3, padding="full"), ValueError,
                                "Conv2d(3, 4, kernel_size=3)", "padding must be an int, a pair, 'valid' or 'same'",
                                "received 'full'"),
    "pool-zero-kernel": BadInput(lambda: nn.MaxPool2d(0), ValueError, "MaxPool2d(kernel_size=0)",
                                 "kernel_size must be positive", "received 0"),
    "pool-zero-stride": BadInput(lambda: nn.MaxPool2d(2, stride=0), ValueError, "MaxPool2d(kernel_size=2)",
                                 "stride must be positive", "received 0"),
    "pool-negative-stride": BadInput(lambda: nn.AvgPool2d(3, stride=(1, -1)), ValueError,
                                     "AvgPool2d(kernel_size=3)", "stride must be positive", "received (1, -1)"),
    "pool-padding-over-half": BadInput(lambda: nn.AvgPool2d(3, padding=2), ValueError, "AvgPool2d(kernel_size=3)",
                                       "padding must be at most half the kernel size",
                                       "received padding=2"),
    "linear-zero-features": BadInput(lambda: nn.Linear(0, 5), ValueError, "Linear(0, 5)",
                                     "in_features must be a positive int", "received 0"),
    "linear-negative-out": BadInput(lambda: nn.Linear(5, -1), ValueError, "Linear(5, -1)",
                                    "out_features must be a positive int", "received -1"),
    "batchnorm-zero-features": BadInput(lambda: nn.BatchNorm2d(0), ValueError, "BatchNorm2d(0)",
                                        "num_features must be a positive int", "received 0"),
    "dropout-p": BadInput(lambda: nn.Dropout(1.5), ValueError, "Dropout", "p must be in [0, 1]", "received 1.5"),
    "label-smoothing": BadInput(lambda: nn.CrossEntropyLoss(label_smoothing=-0.1), ValueError, "CrossEntropyLoss",
                                "label_smoothing must be in [0, 1]", "received -0.1"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_raises_a_message_naming_layer_expectation_and_input(case: BadInput) -> None:
    with pytest.raises(case.error) as error:
        case.action()
    message = str(error.value)
    assert message.startswith(f"{case.where}: "), message
    assert message.count(case.where) == 1, message
    assert case.expected in message, message
    assert case.received in message, message


def test_the_style_guide_messages_verbatim() -> None:
    with pytest.raises(ShapeError) as error:
        nn.MaxPool2d(3, stride=2)(np.zeros((8, 64, 2, 2), np.float32))
    assert str(error.value) == ("MaxPool2d(kernel_size=3, stride=2): output height (W - F + 2P)/S + 1 = "
                                "(2 - 3 + 0)/2 + 1 = 0.5 is below 1 for input shape (8, 64, 2, 2)")
    with pytest.raises(ShapeError) as error:
        nn.Conv2d(3, 16, 5, stride=2)(np.zeros((8, 1, 28, 28), np.float32))
    assert str(error.value) == "Conv2d(3, 16, kernel_size=5, stride=2): expected input with 3 channels, " \
                               "received shape (8, 1, 28, 28)"


def test_dilated_output_size_formula_is_bracketed() -> None:
    with pytest.raises(ShapeError) as error:
        nn.Conv2d(1, 1, 3, dilation=3)(np.zeros((1, 1, 4, 9), np.float32))
    assert "= (4 - 7 + 0)/1 + 1 = -2 is below 1" in str(error.value)
    assert "W - D(F-1)+1 +" not in str(error.value)
