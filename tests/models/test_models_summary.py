"""The summary: shapes, parameters and MACs against PyTorch, receptive fields against a brute-force
measurement, the lecture's numbers, notes on unread pixels, and the output formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from models_helpers import torch_facts

from stridenet import nn
from stridenet.models import PRESETS, build_model, from_spec, measure_receptive_field, summary

SPECS = [
    ("conv3x32-relu-conv3x32-relu-pool2-fc128-relu-fc10", (1, 28, 28)),
    ("conv5x6psame-conv4x8s2psame-maxpool3s2p1d2ceil-avgpool3s2p1ceilexcl-bn-lrelu-drop-gap-fc", (3, 29, 31)),
    ("conv3x5x8s2x1p1x2d2x1g1nb-conv3x8g4-pool2x3s1x2-flatten-bn-fc7", (2, 17, 13)),
    ("conv3x8p1-res(conv3x8p1-bn-relu-conv3x8p1-bn)-res(conv3x16s2p1|conv1x16s2)-[relu-pool2]-gap-fc", (3, 20, 20)),
]
MODELS = [(name, (1, 28, 28)) for name in PRESETS] + [(name, (3, 32, 32)) for name in PRESETS] + SPECS


@pytest.mark.parametrize("model, shape", MODELS, ids=[f"{m}@{s}" for m, s in MODELS])
def test_shapes_parameters_and_macs_agree_with_torch(model: str, shape: tuple[int, int, int]) -> None:
    built = build_model(model, shape, 10, rng=0)
    result = summary(built, shape)
    facts = torch_facts(built, shape)
    assert result.error is None
    assert sorted(row.path for row in result.rows) == sorted(name for name in facts if name)
    for row in result.rows:
        fact = facts[row.path]
        assert row.output_shape == fact["output_shape"], row.path
        assert (row.params, row.non_trainable) == (fact["params"], fact["non_trainable"]), row.path
        if not row.container:
            assert row.macs == fact["macs"], row.path
    assert result.total_params == facts[""]["params"] == built.num_parameters()
    assert result.total_macs == facts[""]["macs"]
    assert result.memory["input"] == 4 * facts[""]["size"]


def test_summary_builds_any_model_form() -> None:
    by_name = summary("lenet5", (1, 28, 28), num_classes=5)
    by_spec = summary({"layers": [{"type": "linear", "out_features": "classes"}]}, (1, 4, 4), num_classes=5)
    assert by_name.name == "lenet5" and by_name.rows[-1].output_shape == (5,)
    assert [row.name for row in by_spec.rows] == ["Flatten", "Linear"] and by_spec.total_params == 85


# -- the lecture's arithmetic --------------------------------------------------------------------------

@pytest.mark.parametrize("K", [1, 8, 16])
def test_three_3x3_layers_against_one_7x7(K: int) -> None:
    stacked = summary(f"(conv3x{K}nb)*3", (K, 32, 32))
    single = summary(f"conv7x{K}nb", (K, 32, 32))
    assert [row.receptive_field for row in stacked.rows] == [3, 5, 7]
    assert single.rows[0].receptive_field == 7
    assert stacked.total_params == 27 * K * K
    assert single.total_params == 49 * K * K
    with_bias = summary(f"(conv3x{K})*3", (K, 32, 32))
    assert with_bias.total_params == 27 * K * K + 3 * K


@pytest.mark.parametrize("line, shape, output", [
    ("conv5x6", (3, 32, 32), (6, 28, 28)),       # 5x5x3 filters on 32x32x3, stride 1, no padding
    ("conv3x1p1", (1, 5, 5), (1, 5, 5)),         # W=5, F=3, S=1, P=1 -> 5
    ("conv3x1s2p1", (1, 5, 5), (1, 3, 3)),       # S=2, P=1 -> 3
])
def test_lecture_output_sizes(line: str, shape, output) -> None:
    assert summary(line, shape).rows[0].output_shape == output


def test_lecture_conv_layer_parameters() -> None:
    assert summary("conv5x6", (3, 32, 32)).total_params == 6 * (5 * 5 * 3 + 1)


# -- receptive fields against brute force ---------------------------------------------------------------

FIELD_MODELS = [
    ("conv3x2-conv3x2-conv3x2", (1, 21, 21)),
    ("conv3x2s2-conv3x2-pool2-conv3x2d2", (1, 41, 41)),
    ("conv3x2d2-conv3x2d3p1-conv3x2p2d2s2", (1, 41, 41)),
    ("pool3s2p1-conv5x2s2p2-avgpool3s2p1ceil", (2, 40, 40)),
    ("conv3x5x2-conv1x3x2s2x1-pool2x1", (1, 33, 35)),
    ("conv4x2s2psame-conv3x2s2psame-conv3x2", (1, 38, 38)),
    ("conv3x2p1-res(conv3x2p1-relu-conv3x2p1|conv1x2)-pool2-res(conv3x2s2p1|conv1x2s2)", (1, 40, 40)),
    ("maxpool3d2-conv3x2-maxpool2d2s1", (1, 40, 40)),
    ("conv3x4nb-bn-relu-conv3x4s2-relu-gap-fc3", (3, 24, 24)),
    ("conv3x4-pool2-fc3", (1, 24, 24)),
]


def expected_extent(row, out_size: int, axis: int, in_size: int) -> tuple[int, int]:
    """First input pixel and extent the arithmetic predicts for the centre unit, clipped to the input."""
    def pick(value):
        return value[axis] if isinstance(value, tuple) else value

    if row.whole_input:  # all units of the map before: from pixel 0 over the region they cover
        return 0, pick(row.receptive_field)
    unit = out_size // 2
    size, centre = pick(row.receptive_field), pick(row.start) + unit * pick(row.jump)
    first, last = centre - (size - 1) / 2, centre + (size - 1) / 2
    first, last = max(first, 0), min(last, in_size - 1)
    return int(first), int(last - first + 1)


@pytest.mark.parametrize("line, shape", FIELD_MODELS, ids=[m for m, _ in FIELD_MODELS])
def test_receptive_fields_match_brute_force(line: str, shape: tuple[int, int, int]) -> None:
    model = from_spec(line, shape, 10, rng=0)
    rows = summary(model, shape).rows
    top = [row for row in rows if row.depth == 0]
    for index, row in enumerate(top):
        prefix = nn.Sequential(*list(model)[:index + 1])
        measured = measure_receptive_field(prefix, shape)
        out = row.output_shape
        for axis in (0, 1):
            first, size = expected_extent(row, out[axis + 1] if len(out) == 3 else 1, axis, shape[axis + 1])
            assert (measured.first[axis], measured.size[axis]) == (first, size), (row.path, row.description, axis)


def test_unclipped_receptive_field_is_the_lecture_seven() -> None:
    model = from_spec("(conv3x1)*3", (1, 15, 15), rng=0)
    measured = measure_receptive_field(model, (1, 15, 15))
    assert measured.size == (7, 7) and measured.first == (4, 4) and measured.unit == (0, 4, 4)


def test_measurement_leaves_the_model_alone() -> None:
    model = from_spec("conv3x2-bn-pool2", (1, 8, 8), rng=0)
    before = {key: value.copy() for key, value in model.state_dict().items()}
    measure_receptive_field(model, (1, 8, 8))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    assert isinstance(model[2], nn.MaxPool2d) and model[0].weight.dtype == np.float32


def test_residual_field_is_the_larger_branch() -> None:
    rows = summary("res(conv3x1p1-conv3x1p1|conv1x1)", (1, 9, 9)).rows
    assert rows[0].receptive_field == 5 and rows[-1].receptive_field == 1


def test_global_layers_see_the_whole_input() -> None:
    rows = summary("conv3x2-gap-fc", (1, 9, 12)).rows
    assert rows[1].whole_input and rows[1].receptive_field == (9, 12) and rows[1].jump is None
    assert "global (9x12)" in str(summary("conv3x2-gap-fc", (1, 9, 12)))
    unread = summary("conv3x2s2-gap", (1, 10, 10)).rows[1]
    assert unread.whole_input and unread.receptive_field == 9  # the last row and column are never read


# -- notes and stops -------------------------------------------------------------------------------------

def test_stride_that_does_not_fit_is_marked_with_unread_pixels() -> None:
    result = summary("conv3x2-pool3s2-conv2x2s2p1", (1, 28, 29))
    pool = result.rows[1]
    assert pool.unread == (1, 0) and pool.output_shape == (2, 12, 13)
    assert pool.note == "height (W - F + 2P)/S + 1 = (26 - 3 + 0)/2 + 1 = 12.5: the last 1 input row is never read"
    assert result.rows[2].note == "width (W - F + 2P)/S + 1 = (13 - 2 + 2)/2 + 1 = 7.5: only padding is left unread"
    text = str(result)
    assert "2x12x13 *" in text and "* 1 MaxPool2d(3x3, s2): height" in text
    assert result.rows[0].note == ""


def test_padding_only_and_ceil_mode_notes() -> None:
    rows = summary("conv3x2s2p1-pool2s2ceil", (1, 8, 8)).rows
    assert rows[0].note.endswith("only padding is left unread") and rows[0].unread == (0, 0)
    assert "height and width" in rows[0].note
    rows = summary("pool2ceil", (1, 7, 7)).rows
    assert rows[0].note.endswith("ceil_mode adds a last, partial window") and rows[0].output_shape == (1, 4, 4)


def test_output_below_one_stops_with_the_formula() -> None:
    for model in ("conv3x4-pool2-pool2-pool2-fc", "lenet5"):
        result = summary(model, (1, 8, 8))
        assert result.error is not None and "is below 1" in result.error
        assert "(W - F + 2P)/S + 1 = " in result.error
        assert f"Stopped at {result.error}" in str(result)
    result = summary("conv3x4-pool2-pool2-pool2-fc", (1, 8, 8))
    assert [row.path for row in result.rows] == ["0", "1", "2"]
    assert result.error.startswith("3 MaxPool2d(2x2): output height (W - F + 2P)/S + 1 = (1 - 2 + 0)/2 + 1 = 0.5")
    nested = summary("conv3x4-res(pool2-pool2-pool2)", (1, 8, 8))
    assert nested.error.startswith("1.block.2 MaxPool2d(2x2)") and nested.rows[1].output_shape is None


# -- formats ---------------------------------------------------------------------------------------------

def test_library_object_and_json_carry_the_same_fields() -> None:
    result = summary("lenet5", (1, 28, 28), batch_size=32)
    row = result.rows[0]
    assert (row.name, row.output_shape, row.params, row.receptive_field, row.jump, row.macs) == (
        "Conv2d", (6, 28, 28), 156, 5, 1, 28 * 28 * 6 * 25)
    data = json.loads(result.to_json())
    assert data["total_params"] == result.total_params == 61706 and data["total_macs"] == result.total_macs
    assert data["rows"][0]["output_shape"] == [6, 28, 28]
    for key in ("name", "output_shape", "params", "receptive_field", "jump", "macs"):
        assert [r[key] for r in data["rows"]] == [
            list(v) if isinstance(v := getattr(r, key), tuple) else v for r in result.rows]
    assert data["memory"]["input"] == 32 * 28 * 28 * 4


def test_text_and_markdown_tables() -> None:
    result = summary("conv3x4p1-res(conv3x4p1|conv1x4)-gap-fc", (1, 8, 8), name="tiny")
    text = str(result).splitlines()
    assert text[0] == "tiny, input (1, 8, 8)"
    assert text[2].split() == ["layer", "output", "params", "non-train", "RF", "jump", "start", "MACs", "memory"]
    assert text[5].startswith("1  Residual                        4x8x8    (168)")
    assert text[6].startswith("  block     Conv2d(4->4, 3x3, p1)  4x8x8      148")
    assert text[7].startswith("  shortcut  Conv2d(4->4, 1x1)      4x8x8       20")
    assert text[8].startswith("2  GlobalAvgPool2d") and "global (8)" in text[8]
    assert "Parameters: 258 trainable, 0 non-trainable" in text
    markdown = result.to_markdown().splitlines()
    assert markdown[2] == "| layer | output | params | non-train | RF | jump | start | MACs | memory |"
    assert markdown[6] == "| · block     Conv2d(4->4, 3x3, p1) | 4x8x8 | 148 | 0 | 5 | 1 | 0 | 9,216 | 1.0 KiB |"


def test_memory_total_adds_up() -> None:
    result = summary("conv3x4-relu", (1, 6, 6), batch_size=2)
    activations = 2 * 4 * (4 * 4 * 4 * 2)
    assert result.memory == {"input": 2 * 36 * 4, "activations": activations, "forward_backward": 2 * activations,
                             "params": 2 * 40 * 4, "im2col": 2 * 16 * 9 * 4,
                             "total": 2 * 36 * 4 + 2 * activations + 2 * 40 * 4 + 2 * 16 * 9 * 4}


def test_im2col_memory_is_the_largest_layers_block_capped_at_the_budget() -> None:
    """Columns are built a block at a time into a reused buffer per thread: the largest layer counts, not
    the sum, and never more than the block budget per thread, whatever the batch size."""
    from stridenet.functional._im2col import COLS_BUDGET
    from stridenet.functional._parallel import get_num_threads

    small = summary("conv3x4-relu-conv3x8-relu", (1, 8, 8), batch_size=2)
    # per image: 6x6 outputs x (1*3*3) values, then 4x4 outputs x (4*3*3): the second is larger
    assert small.memory["im2col"] == 2 * max(6 * 6 * 9, 4 * 4 * 36) * 4
    large = summary("conv3x32p1-relu-conv3x32p1", (1, 28, 28), batch_size=256)
    assert 256 * 28 * 28 * 32 * 9 * 4 > COLS_BUDGET * get_num_threads()
    assert large.memory["im2col"] == COLS_BUDGET * get_num_threads()
