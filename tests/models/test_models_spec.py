"""Specs: every preset round-trips through dict, files and the one-line form; implicit sizes adapt to
the data; errors say where and what."""

from __future__ import annotations

import json
import sys
import tomllib

import numpy as np
import pytest

from stridenet import nn
from stridenet.models import PRESETS, SpecError, build_model, dump_spec, from_spec, to_line, to_spec

SHAPE, CLASSES = (1, 28, 28), 10


def same_model(a: nn.Layer, b: nn.Layer) -> None:
    """Same architecture (repr) and identical parameters (and buffers), key by key."""
    assert repr(a) == repr(b)
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert list(pa) == list(pb)
    for key in pa:
        np.testing.assert_array_equal(pa[key].data, pb[key].data, err_msg=key)
    for (ka, va), (kb, vb) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        assert ka == kb
        np.testing.assert_array_equal(va, vb, err_msg=ka)


@pytest.fixture(params=list(PRESETS))
def preset(request: pytest.FixtureRequest) -> tuple[str, nn.Sequential, dict]:
    name = request.param
    model = build_model(name, SHAPE, CLASSES, rng=7)
    return name, model, to_spec(model, input_shape=SHAPE, num_classes=CLASSES, name=name)


def test_preset_round_trips_through_a_dict(preset) -> None:
    _, model, spec = preset
    same_model(from_spec(spec, rng=7), model)


def test_vgg_small_buffers_are_untouched_by_building() -> None:
    same_model(build_model("vgg-small", SHAPE, CLASSES, rng=0), from_spec(
        to_spec(build_model("vgg-small", SHAPE, CLASSES, rng=0), input_shape=SHAPE, num_classes=CLASSES), rng=0))


@pytest.mark.parametrize("fmt", ["toml", "json", "yaml"])
def test_preset_round_trips_through_a_file(preset, fmt, tmp_path) -> None:
    if fmt == "yaml":
        pytest.importorskip("yaml")
    name, model, spec = preset
    path = tmp_path / f"{name}.{fmt}"
    path.write_text(dump_spec(spec, fmt))
    same_model(from_spec(path, rng=7), model)
    same_model(from_spec(str(path), rng=7), build_model(str(path), SHAPE, CLASSES, rng=7))


def test_written_files_parse_back_to_the_same_dict(preset) -> None:
    _, _, spec = preset
    assert tomllib.loads(dump_spec(spec, "toml")) == spec
    assert json.loads(dump_spec(spec, "json")) == spec


def test_preset_round_trips_through_the_line_form(preset) -> None:
    _, model, spec = preset
    line = to_line(spec)
    assert line == to_line(model, num_classes=CLASSES)
    same_model(from_spec(line, SHAPE, CLASSES, rng=7), model)


@pytest.mark.parametrize("shape, classes", [((3, 32, 32), 100), ((2, 40, 36), 3)])
def test_implicit_sizes_follow_the_data(preset, shape, classes) -> None:
    name, _, spec = preset
    assert repr(from_spec(spec, shape, classes)) == repr(build_model(name, shape, classes))


def test_explicit_spec_needs_no_input_shape(preset) -> None:
    _, model, _ = preset
    spec = to_spec(model)
    assert "input_shape" not in spec and spec["layers"][0]["in_channels"] == 1
    assert repr(from_spec(spec)) == repr(model)


def test_classes_can_be_explicit_or_implicit() -> None:
    implicit = from_spec({"layers": [{"type": "linear", "out_features": "classes"}]}, (4,), 3)
    explicit = from_spec({"layers": [{"type": "linear", "out_features": 3}]}, (4,), 99)
    assert repr(implicit) == repr(explicit) == repr(nn.Sequential(nn.Linear(4, 3)))
    assert repr(from_spec("fc", (4,), 5)) == repr(nn.Sequential(nn.Linear(4, 5)))


def test_spec_defaults_apply_when_the_caller_gives_none() -> None:
    spec = {"input_shape": [3, 8, 8], "num_classes": 4, "layers": [{"type": "conv2d", "out_channels": "classes",
                                                                    "kernel_size": 8}]}
    assert repr(from_spec(spec)[0]) == "Conv2d(3, 4, kernel_size=8)"
    assert repr(from_spec(spec, (1, 8, 8), 2)[0]) == "Conv2d(1, 2, kernel_size=8)"


def test_linear_on_an_image_gets_a_flatten_and_batchnorm_picks_its_rank() -> None:
    model = from_spec("conv3x4-bn-fc6-bn-fc", (1, 5, 5), 2)
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d", "BatchNorm2d", "Flatten", "Linear", "BatchNorm1d", "Linear"]
    assert repr(model[3]) == "Linear(36, 6)"


def test_nested_blocks_in_a_dict() -> None:
    spec = {"layers": [
        {"type": "sequential", "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}]},
        {"type": "residual", "block": {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}},
        {"type": "residual", "block": [{"type": "relu"}], "shortcut": {"type": "identity"}},
    ]}
    model = from_spec(spec, (2, 6, 6))
    expected = nn.Sequential(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1)), nn.Residual(nn.Conv2d(4, 4, 3, padding=1)),
                             nn.Residual(nn.Sequential(nn.ReLU()), nn.Identity()))
    assert repr(model) == repr(expected)
    assert to_spec(model)["layers"][1]["block"]["type"] == "conv2d"
    same_model(from_spec(to_spec(model), rng=1), from_spec(spec, (2, 6, 6), rng=1))
    assert repr(from_spec(to_line(model), (2, 6, 6))) == repr(model)


def test_every_argument_round_trips() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, (3, 5), stride=(2, 1), padding="same", dilation=(1, 2), groups=1, bias=False),
        nn.Conv2d(8, 8, 3, padding=(1, 0), groups=4), nn.BatchNorm2d(8, eps=1e-3, momentum=None, affine=False),
        nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True), nn.AvgPool2d(2, 1, 1, True, False),
        nn.LeakyReLU(0.2), nn.Dropout(0.25), nn.GlobalAvgPool2d(), nn.BatchNorm1d(8, track_running_stats=False),
        nn.Linear(8, 2, bias=False))
    spec = to_spec(model)
    assert spec["layers"][2]["momentum"] == "cumulative"
    assert repr(from_spec(spec)) == repr(model)
    assert tomllib.loads(dump_spec(spec, "toml")) == spec
    with pytest.raises(ValueError, match="one-line form cannot write"):
        to_line(model)


# -- errors ------------------------------------------------------------------------------------------

def error_of(spec, *args) -> str:
    with pytest.raises(SpecError) as info:
        from_spec(spec, *args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unknown_layer_type_lists_the_valid_ones() -> None:
    message = error_of({"layers": [{"type": "relu"}, {"type": "conv"}]}, (1, 8, 8))
    assert "layers[1]" in message and "'conv'" in message
    for valid in ("conv2d", "linear", "maxpool2d", "batchnorm", "residual", "sequential"):
        assert valid in message


def test_bad_value_names_the_file_line_layer_and_value(tmp_path) -> None:
    path = tmp_path / "net.toml"
    path.write_text('input_shape = [1, 28, 28]\n\n[[layers]]\ntype = "conv2d"\nout_channels = 8\nkernel_size = 3\n\n'
                    '[[layers]]\ntype = "residual"\n\n[[layers.block]]\ntype = "relu"\n\n'
                    '[[layers.block]]\ntype = "maxpool2d"\nkernel_size = 0\n')
    message = error_of(path)
    assert f"{path} line 14, layers[1].block[1] (maxpool2d)" in message
    assert "kernel_size must be positive, received 0" in message


def test_bad_value_in_yaml_names_the_line(tmp_path) -> None:
    pytest.importorskip("yaml")
    path = tmp_path / "net.yaml"
    path.write_text("layers:\n  - {type: relu}\n  - type: dropout\n    p: 2\n")
    assert f"{path} line 3, layers[1] (dropout)" in error_of(path, (1, 4, 4))


def test_errors_name_the_argument_and_the_valid_ones() -> None:
    message = error_of({"layers": [{"type": "conv2d", "out_channels": 4, "kernal_size": 3}]}, (1, 8, 8))
    assert "spec layers[0] (conv2d): unknown argument 'kernal_size'" in message and "kernel_size" in message
    assert "missing kernel_size" in error_of({"layers": [{"type": "conv2d", "out_channels": 4}]}, (1, 8, 8))
    assert "bias must be true or false, received 'no'" in error_of(
        {"layers": [{"type": "linear", "out_features": 2, "bias": "no"}]}, (3,))
    assert "unknown top-level key 'layer'" in error_of({"layer": []})
    assert "expected a table with a 'type' key" in error_of({"layers": [5]})


def test_explicit_in_channels_that_disagree_with_the_data() -> None:
    spec = {"layers": [{"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3}]}
    message = error_of(spec, (1, 28, 28))
    assert "layers[0] (conv2d): in_channels = 3 does not match the input to this layer, shape (1, 28, 28)" in message
    assert "leave in_channels out" in message


def test_implicit_sizes_without_an_input_shape() -> None:
    assert "in_channels is left out and the input shape is not known" in error_of("conv3x8")
    assert "number of classes is not known" in error_of("fc", (4,))


def test_output_size_below_one_gives_the_formula() -> None:
    message = error_of("conv3x8-pool2-pool2-pool2", (1, 8, 8))
    assert "one-line spec item 4 'pool2' (maxpool2d)" in message
    assert "(W - F + 2P)/S + 1 = (1 - 2 + 0)/2 + 1 = 0.5 is below 1" in message


def test_residual_branches_that_disagree() -> None:
    message = error_of("res(conv3x4s2p1)", (4, 8, 8))
    assert "one-line spec 'res(' at character 1 (residual)" in message
    assert "block output shape (4, 4, 4) does not match shortcut output shape (4, 8, 8)" in message


def test_file_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="model spec file not found"):
        from_spec(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("layers = [\n")
    assert str(bad) in error_of(bad)
    (tmp_path / "net.txt").write_text("")
    assert "unknown spec file type '.txt'" in error_of(tmp_path / "net.txt")
    monkeypatch.setitem(sys.modules, "yaml", None)
    (tmp_path / "net.yaml").write_text("layers: []\n")
    assert "reading YAML specs needs PyYAML" in error_of(tmp_path / "net.yaml")


def test_unknown_model_name_lists_presets_and_layers() -> None:
    with pytest.raises(ValueError) as info:
        build_model("lenet", SHAPE, CLASSES)
    message = str(info.value)
    assert "unknown model 'lenet'" in message and "\n" not in message
    assert all(name in message for name in PRESETS) and "conv{F}x{K}" in message


def test_yaml_writer_output_is_valid_yaml(preset) -> None:
    yaml = pytest.importorskip("yaml")
    _, _, spec = preset
    assert yaml.safe_load(dump_spec(spec, "yaml")) == spec


def test_yaml_writer_layout() -> None:
    spec = to_spec(from_spec("conv3x4p1-res(conv3x4p1|conv1x4)-drop0.5", (1, 4, 4)), input_shape=(1, 4, 4))
    assert dump_spec(spec, "yaml") == (
        'input_shape: [1, 4, 4]\n'
        'layers:\n'
        '  - {type: "conv2d", out_channels: 4, kernel_size: 3, padding: 1}\n'
        '  - type: "residual"\n'
        '    block: {type: "conv2d", out_channels: 4, kernel_size: 3, padding: 1}\n'
        '    shortcut: {type: "conv2d", out_channels: 4, kernel_size: 1}\n'
        '  - {type: "dropout"}\n')
