"""``stridenet summary`` and ``stridenet models list|show`` through ``stridenet.cli.main``."""

from __future__ import annotations

import io
import json
import tomllib

import pytest

from stridenet.cli import main
from stridenet.models import PRESETS, build_model, from_spec, summary
from stridenet.models.summary_format import print_summary


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_summary_of_a_preset(capsys) -> None:
    status, out, err = run(capsys, "summary", "lenet5", "--input", "1,28,28")
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "lenet5, input (1, 28, 28)"
    assert lines[4].split()[:4] == ["0", "Conv2d(1->6,", "5x5,", "p2)"]
    assert "Parameters: 61,706 trainable, 0 non-trainable" in lines
    assert "Multiply-adds (MACs) per image: 416,520" in lines


def test_summary_json_is_the_library_object(capsys) -> None:
    status, out, _ = run(capsys, "summary", "cs231n-3layer", "--input", "3,32,32", "--classes", "7",
                         "--batch-size", "16", "--format", "json")
    expected = summary("cs231n-3layer", (3, 32, 32), num_classes=7, batch_size=16)
    assert status == 0 and json.loads(out) == json.loads(expected.to_json())
    assert json.loads(out)["rows"][-1]["output_shape"] == [7]


def test_summary_markdown_of_a_spec_file_uses_its_defaults(capsys, tmp_path) -> None:
    path = tmp_path / "net.toml"
    path.write_text('name = "tiny"\ninput_shape = [3, 12, 12]\nnum_classes = 4\n\n'
                    '[[layers]]\ntype = "conv2d"\nout_channels = 8\nkernel_size = 3\n\n'
                    '[[layers]]\ntype = "linear"\nout_features = "classes"\n')
    status, out, _ = run(capsys, "summary", str(path), "--format", "markdown")
    assert status == 0
    assert out.startswith("**tiny, input (3, 12, 12)**\n")
    assert "| 2  Linear(800->4) | 4 | 3,204 |" in out


def test_summary_of_a_one_line_spec(capsys) -> None:
    status, out, _ = run(capsys, "summary", "conv3x32-relu-conv3x32-relu-pool2-fc128-relu-fc10")
    assert status == 0 and "Linear(4608->128)" in out and "input (1, 28, 28)" in out


def test_summary_that_stops_exits_1_with_the_formula(capsys) -> None:
    status, out, _ = run(capsys, "summary", "lenet5", "--input", "1,8,8")
    assert status == 1
    assert "Stopped at 3 Conv2d(6->16, 5x5): output height (W - F + 2P)/S + 1 = (4 - 5 + 0)/1 + 1 = 0 is below 1" in out


@pytest.mark.parametrize("argv, fragment", [
    (["summary", "lenet"], "unknown model 'lenet': not a preset (lenet5, cs231n-3layer"),
    (["summary", "lenet5", "--input", "28,28"], "--input must be C,H,W"),
    (["summary", "conv3x8-bogus"], "one-line spec item 2 'bogus': unknown layer"),
    (["summary", "missing.toml"], "model spec file not found: missing.toml"),
    (["summary", "lenet5", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["models"], "choose an action"),
    (["models", "show", "fc", "--classes", "0"], "--classes must be a positive integer"),
    (["models", "show", "conv3x4-bn", "--format", "line", "--explicit"], None),
])
def test_mistakes_are_one_line_and_exit_2(capsys, argv, fragment) -> None:
    status, out, err = run(capsys, *argv)
    if fragment is None:
        assert status == 0
        return
    assert status == 2 and out == ""
    assert err.startswith(f"stridenet {argv[0]}: error: ") and err.count("\n") == 1 and fragment in err


def test_models_list(capsys) -> None:
    status, out, _ = run(capsys, "models", "list")
    lines = out.splitlines()
    assert status == 0 and [line.split()[0] for line in lines] == list(PRESETS)
    assert "LeCun et al. (1998)" in lines[0]


@pytest.mark.parametrize("name", list(PRESETS))
def test_models_show_writes_a_spec_that_builds_the_preset(capsys, tmp_path, name) -> None:
    status, out, _ = run(capsys, "models", "show", name)
    assert status == 0
    spec = tomllib.loads(out)
    assert spec["name"] == name and spec["input_shape"] == [1, 28, 28] and spec["num_classes"] == 10
    for shape, classes in (((1, 28, 28), 10), ((3, 32, 32), 100)):
        assert repr(from_spec(spec, shape, classes)) == repr(build_model(name, shape, classes))
    path = tmp_path / f"{name}.toml"
    path.write_text(out)
    status, again, _ = run(capsys, "models", "show", str(path))
    assert status == 0 and again == out


@pytest.mark.parametrize("fmt", ["json", "yaml", "line"])
def test_models_show_formats(capsys, fmt) -> None:
    status, out, _ = run(capsys, "models", "show", "lenet5", "--format", fmt, "--input", "3,32,32")
    assert status == 0
    if fmt == "json":
        assert json.loads(out)["layers"][0] == {"type": "conv2d", "out_channels": 6, "kernel_size": 5, "padding": 2}
    elif fmt == "yaml":
        assert out.splitlines()[:3] == ['name: "lenet5"', "input_shape: [3, 32, 32]", "num_classes: 10"]
    else:
        assert out == "conv5x6p2-relu-pool2-conv5x16-relu-pool2-flatten-fc120-relu-fc84-relu-fc\n"


def test_models_show_explicit_writes_every_size(capsys) -> None:
    status, out, _ = run(capsys, "models", "show", "cs231n-3layer", "--explicit", "--format", "json")
    layers = json.loads(out)["layers"]
    assert status == 0 and layers[0]["in_channels"] == 1 and layers[-1]["out_features"] == 10
    assert layers[4]["in_features"] == 32 * 14 * 14


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_output_uses_rich_when_installed() -> None:
    stream = Terminal()
    print_summary(summary("conv3x4-gap-fc", (1, 8, 8), name="tiny"), stream)
    text = stream.getvalue()
    assert "tiny, input (1, 8, 8)" in text and "Conv2d(1->4, 3x3)" in text
    try:
        import rich  # noqa: F401
    except ModuleNotFoundError:
        assert text == str(summary("conv3x4-gap-fc", (1, 8, 8), name="tiny"))
