"""output-size and one-by-one: the formula against our layers, and the conv/Linear equivalences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stridenet.experiments import ExperimentConfig, one_by_one, output_size


@pytest.mark.parametrize(("W", "F", "S", "P", "value", "status", "conv", "unseen"), [
    (7, 3, 1, 0, 5, "fits", 5, 0),
    (7, 3, 2, 0, 3, "fits", 3, 0),
    (7, 3, 3, 0, 7 / 3, "fraction", 2, 1),        # the lecture's "doesn't fit"
    (32, 5, 1, 2, 32, "fits", 32, 0),
    (227, 11, 4, 0, 55, "fits", 55, 0),           # AlexNet
    (224, 11, 4, 0, 54.25, "fraction", 54, 1),
    (2, 3, 2, 0, 0.5, "below 1", "error", 2),
])
def test_measure_matches_the_formula_and_the_layers(W, F, S, P, value, status, conv, unseen) -> None:
    record = output_size.measure(W, F, S, P)
    assert record["value"] == pytest.approx(value, abs=1e-4)
    assert record["status"] == status
    assert record["fits"] == (status == "fits")
    assert record["conv_out"] == conv
    assert record["conv_agrees"] is True
    assert record["unseen_pixels"] == unseen


def test_pool_is_skipped_where_its_padding_is_not_allowed() -> None:
    record = output_size.measure(10, 3, 1, 2)  # padding 2 > 3 // 2
    assert record["pool_out"] == "n/a" and record["pool_agrees"] == "n/a"
    assert output_size.measure(10, 5, 1, 2)["pool_agrees"] is True


def test_output_size_grid_has_no_disagreements(tmp_path: Path) -> None:
    report = output_size.run(ExperimentConfig(verbose=False), tmp_path)
    grid = len(output_size.WIDTHS) * len(output_size.FILTERS) * len(output_size.STRIDES) * len(output_size.PADDINGS)
    assert len(report.records) == grid
    assert all(r["conv_agrees"] is True for r in report.records)
    assert all(r["pool_agrees"] in (True, "n/a") for r in report.records)
    counts = report.tables[0].rows[0]
    assert int(counts[1]) + int(counts[2]) + int(counts[3]) == grid
    assert counts[4] == f"{grid}/{grid}"


@pytest.mark.parametrize("check", list(one_by_one.CASES.values()), ids=list(one_by_one.CASES))
def test_equivalences_hold_to_rounding(check) -> None:
    for dtype, tolerance in ((np.float64, 1e-13), (np.float32, 1e-5)):
        diffs = check(np.random.default_rng(3), dtype)
        assert set(diffs) == set(one_by_one.QUANTITIES)
        for quantity, (absolute, relative) in diffs.items():
            assert relative < tolerance, f"{check.__name__} {quantity} {dtype.__name__}: {absolute} ({relative})"


def test_equivalence_check_notices_a_wrong_weight_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: transposing the kernel (a wrong reshape) is caught."""
    original = one_by_one._linear_and_conv

    def scrambled(rng, dtype):
        linear, conv = original(rng, dtype)
        conv.weight.data[...] = conv.weight.data.transpose(0, 1, 3, 2)
        return linear, conv

    monkeypatch.setattr(one_by_one, "_linear_and_conv", scrambled)
    out_relative = one_by_one.full_size(np.random.default_rng(0), np.float64)["out"][1]
    assert out_relative > 1e-3


def test_one_by_one_report_lists_every_case_and_dtype(tmp_path: Path) -> None:
    report = one_by_one.run(ExperimentConfig(seeds=2, verbose=False), tmp_path)
    assert len(report.records) == len(one_by_one.CASES) * len(one_by_one.DTYPES) * 2
    assert len(report.tables[0].rows) == len(one_by_one.CASES) * len(one_by_one.DTYPES)
