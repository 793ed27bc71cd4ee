"""The one-line spec grammar: each form against the model it should build, and back."""

from __future__ import annotations

import pytest

from stridenet import nn
from stridenet.models import LineSyntaxError, from_spec, parse_line, to_line

SHAPE = (3, 16, 16)

# (line, the same model written with stridenet.nn for input (3, 16, 16) and 10 classes)
CASES = [
    ("conv3x8", nn.Sequential(nn.Conv2d(3, 8, 3))),
    ("conv3x5x8s2x1p1x2d1x2g1nb", nn.Sequential(nn.Conv2d(3, 8, (3, 5), (2, 1), (1, 2), (1, 2), bias=False))),
    ("conv3x6psame-conv4x6s2psame-conv3x6pvalidg3", nn.Sequential(
        nn.Conv2d(3, 6, 3, padding="same"), nn.Conv2d(6, 6, 4, 2, "same"), nn.Conv2d(6, 6, 3, padding="valid",
                                                                                   groups=3))),
    ("conv1", nn.Sequential(nn.Conv2d(3, 10, 1))),
    ("pool2-maxpool3s1p1-avgpool2s1ceilexcl-maxpool3d2ceil", nn.Sequential(
        nn.MaxPool2d(2), nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(2, 1, ceil_mode=True, count_include_pad=False),
        nn.MaxPool2d(3, dilation=2, ceil_mode=True))),
    ("gap-fc", nn.Sequential(nn.GlobalAvgPool2d(), nn.Linear(3, 10))),
    ("fc32nb-relu-fc10", nn.Sequential(nn.Flatten(), nn.Linear(768, 32, bias=False), nn.ReLU(), nn.Linear(32, 10))),
    ("flatten-fc4", nn.Sequential(nn.Flatten(), nn.Linear(768, 4))),
    ("lrelu-lrelu0.2-drop-drop0.25-id-bn-gap-bn", nn.Sequential(
        nn.LeakyReLU(), nn.LeakyReLU(0.2), nn.Dropout(), nn.Dropout(0.25), nn.Identity(), nn.BatchNorm2d(3),
        nn.GlobalAvgPool2d(), nn.BatchNorm1d(3))),
    ("(conv3x4p1-relu)*2-[pool2-id]", nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.Sequential(nn.MaxPool2d(2), nn.Identity()))),
    ("res(conv3x3p1)-res(conv3x3p1-relu)-res([relu])-res(conv3x6s2p1|conv1x6s2)", nn.Sequential(
        nn.Residual(nn.Conv2d(3, 3, 3, padding=1)),
        nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())),
        nn.Residual(nn.Sequential(nn.ReLU())),
        nn.Residual(nn.Conv2d(3, 6, 3, 2, 1), nn.Conv2d(3, 6, 1, 2)))),
    ("res(res(relu))-res((relu)*2)-res(relu*1)-[]", nn.Sequential(
        nn.Residual(nn.Residual(nn.ReLU())), nn.Residual(nn.Sequential(nn.ReLU(), nn.ReLU())),
        nn.Residual(nn.Sequential(nn.ReLU())), nn.Sequential())),
    (" conv3x8 - relu ", nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())),
]


@pytest.mark.parametrize("line, expected", CASES, ids=[case[0] for case in CASES])
def test_line_builds_the_model_and_round_trips(line: str, expected: nn.Sequential) -> None:
    model = from_spec(line, SHAPE, 10)
    assert repr(model) == repr(expected)
    written = to_line(model)
    assert repr(from_spec(written, SHAPE, 10)) == repr(expected), written


def test_the_issue_example() -> None:
    model = from_spec("conv3x32-relu-conv3x32-relu-pool2-fc128-relu-fc10", (1, 28, 28), 10)
    assert [repr(layer) for layer in model][-4:] == ["Flatten()", "Linear(4608, 128)", "ReLU()", "Linear(128, 10)"]


def test_classes_are_written_as_bare_words_when_asked() -> None:
    model = from_spec("conv3x8-conv1-gap", SHAPE, 10)
    assert to_line(model) == "conv3x8-conv1x10-gap"
    assert to_line(model, num_classes=10) == "conv3x8-conv1-gap"


def test_the_parse_is_an_ordinary_spec() -> None:
    assert parse_line("conv3x16s2-res(relu|id)-fc").data == {"layers": [
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "stride": 2},
        {"type": "residual", "block": {"type": "relu"}, "shortcut": {"type": "identity"}},
        {"type": "linear", "out_features": "classes"}]}


@pytest.mark.parametrize("line, fragment, item", [
    ("conv3x8-relux", "item 2 'relux': unknown layer; valid layers: conv{F}x{K}, fc{N}", 2),
    ("lenet", "item 1 'lenet': unknown layer", 1),
    ("conv3x8p1s", "item 1 'conv3x8p1s': unexpected 's'; modifiers for this layer: s, p, psame, pvalid", 1),
    ("relu-pool2psame", "item 2 'pool2psame': unexpected 'psame'; modifiers for this layer: s, p, d, ceil", 2),
    ("conv3x8-(relu", "expected ')' at the end of", None),
    ("conv3x8--relu", "expected a layer at character 9", None),
    ("conv3x8)", "unexpected ')' at character 8", None),
    ("conv3x8-relu+", "unexpected '+' at character 13", None),
])
def test_syntax_errors_name_the_item(line: str, fragment: str, item: int | None) -> None:
    with pytest.raises(LineSyntaxError) as info:
        parse_line(line)
    assert fragment in str(info.value)
    assert info.value.item == item


def test_build_errors_name_the_item() -> None:
    with pytest.raises(ValueError, match=r"one-line spec item 3 'conv0x3' \(conv2d\): .*kernel_size must be positive"):
        from_spec("conv3x8-relu-conv0x3", SHAPE)


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.BatchNorm2d(3, eps=1e-3)),
    nn.Sequential(nn.Dropout(1e-7)),
    nn.Sequential(nn.Conv2d(3, 10, (3, 1))),
])
def test_what_the_line_cannot_say_is_an_error(model: nn.Sequential) -> None:
    with pytest.raises(ValueError, match="one-line form cannot write"):
        to_line(model, num_classes=10)
