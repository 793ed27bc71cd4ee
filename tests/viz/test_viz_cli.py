"""``stridenet viz`` and ``stridenet report`` on a real (tiny) run folder written by the trainer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from viz_helpers import assert_png_has_content

from stridenet.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stridenet.train import TrainConfig, fit

    out = tmp_path_factory.mktemp("runs") / "mnist-lenet5"
    fit(TrainConfig(dataset="mnist-sample", model="lenet5", epochs=2, batch_size=16, limit_train=64,
                    limit_test=30, val_fraction=0.25, out=str(out)))
    return out


def test_viz_writes_every_figure(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["viz", str(run_dir), "--index", "5", "--out", str(tmp_path / "figs"), "--dpi", "60",
                 "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert names == ["activations_00_0.png", "activations_01_2.png", "activations_02_3.png", "activations_03_5.png",
                     "confusion.png", "curves.png", "filters.png", "mistakes.png", "per_class_accuracy.png",
                     "saliency.png", "top_3.png"]
    for name in ("filters.png", "curves.png", "confusion.png", "activations_00_0.png", "saliency.png"):
        assert_png_has_content(tmp_path / "figs" / name)
    assert "11 figures in" in capsys.readouterr().out


def test_viz_with_an_image_file(run_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    picture = np.full((40, 40), 255, np.uint8)
    picture[8:32, 18:22] = 0  # a dark "1" on white, as a phone photo would be
    Image.fromarray(picture).save(tmp_path / "one.png")
    out = tmp_path / "figs"
    assert main(["viz", str(run_dir), "--image", str(tmp_path / "one.png"), "--invert", "--limit-test", "10",
                 "--only", "activations,saliency", "--dpi", "60", "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["activations_00_0.png", "activations_01_2.png",
                                                     "activations_02_3.png", "activations_03_5.png", "saliency.png"]
    assert_png_has_content(out / "saliency.png")
    assert_png_has_content(out / "activations_00_0.png", min_size=(200, 100))


def test_report_command(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir), "--limit-test", "20", "--only", "curves,evaluation", "--dpi", "50"]) == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "mnist-sample" in text and "lenet5" in text and "<script" not in text and "Per-class accuracy" in text
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "rendered confusion" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["viz", "{missing}"], "no such run folder"),
    (["viz", "{run}", "--index", "1000"], "--index 1000 is outside the test set of 30 images"),
    (["viz", "{run}", "--invert"], "--invert applies to --image only"),
    (["report", "{run}", "--image", "{missing}"], "no such image file"),
    (["report", "{run}", "--limit-test", "0"], "--limit-test must be a positive integer"),
    (["viz", "{run}", "--only", "filters,nope"], "--only: unknown sections ['nope']"),
])
def test_user_mistakes_are_one_line_errors(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str], message: str) -> None:
    argv = [a.format(run=run_dir, missing=tmp_path / "missing") for a in argv]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and err[-1].startswith(f"stridenet {argv[0]}: error: ")


def test_registering_the_commands_imports_no_numpy() -> None:
    code = ("import argparse, sys; import stridenet.viz.cli as c; p = argparse.ArgumentParser(); "
            "c.register(p.add_subparsers()); print(sorted(m for m in ('numpy', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_cli_lists_the_gallery_sections() -> None:
    from stridenet.viz import cli, gallery

    assert cli.SECTIONS == tuple(gallery.SECTIONS)
