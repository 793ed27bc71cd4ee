"""``stridenet train / eval / predict`` end to end on a slice of the built-in MNIST sample."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stridenet.cli import main
from stridenet.data import load_dataset


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> tuple[Path, str]:
    """One epoch of LeNet-5 on 320 training digits (288 after validation), tested on 100."""
    run = tmp_path_factory.mktemp("cli") / "run"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["train", "--model", "lenet5", "--limit-train", "320", "--limit-test", "100", "--epochs", "1",
                       "--batch-size", "32", "--out", str(run)])
    assert status == 0
    return run, out.getvalue()


def test_train_writes_a_run_and_reports(cli_run) -> None:
    run, output = cli_run
    assert "epoch 1/1" in output and "img/s" in output
    assert f"run folder: {run}" in output and "test accuracy" in output
    assert {"config.json", "metrics.csv", "last.npz", "best.npz"} <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["dataset"], config["model"], config["limit_train"]) == ("mnist-sample", "lenet5", 320)


def test_threads_option_is_kept_with_the_run_and_may_change_on_resume(cli_run, capsys) -> None:
    run, output = cli_run
    used = json.loads((run / "config.json").read_text())["config"]["threads"]
    assert f"{used} threads" in output.splitlines()[0]
    assert main(["train", "--resume", str(run), "--threads", str(used + 1)]) == 0   # a finished run: tests only
    assert f"resuming with {used + 1} threads where the run used {used}" in capsys.readouterr().out


def test_eval_prints_and_writes_eval_json(cli_run, capsys) -> None:
    run, _ = cli_run
    assert main(["eval", str(run), "--limit", "50"]) == 0
    output = capsys.readouterr().out
    assert "accuracy" in output and "per-class accuracy" in output and "confusion matrix" in output
    report = json.loads((run / "eval.json").read_text())
    assert report["num_images"] == 50 and len(report["confusion_matrix"]) == 10
    assert sum(map(sum, report["confusion_matrix"])) == 50
    assert set(report["per_class_accuracy"]) == {str(d) for d in range(10)}


def test_predict_png_jpg_and_npy(cli_run, tmp_path, capsys) -> None:
    run, _ = cli_run
    _, test = load_dataset("mnist-sample")
    digit = test.images[0, 0]
    Image.fromarray(digit).save(tmp_path / "digit.png")
    Image.fromarray(np.repeat(digit[:, :, None], 3, axis=2)).resize((56, 56)).save(tmp_path / "big.jpg")
    np.save(tmp_path / "digit.npy", digit)
    np.save(tmp_path / "float.npy", digit.astype(np.float32) / 255)
    paths = [str(tmp_path / name) for name in ("digit.png", "big.jpg", "digit.npy", "float.npy")]
    assert main(["predict", str(run), *paths, "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert all(line.startswith(path + ": ") and line.count("%") == 2 for line, path in zip(lines, paths, strict=True))
    assert "resized from 56x56 to 28x28" in lines[1]
    assert lines[0].split(": ")[1] == lines[2].split(": ")[1] == lines[3].split(": ")[1]  # same pixels, same answer


def one_line_error(argv: list[str], capsys, status: int = 2) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "imagenet"], "stridenet train: error: unknown dataset 'imagenet'; valid names: "),
    (["train", "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    (["train", "--model", "resnet-huge", "--limit-train", "64"], "unknown model 'resnet-huge'"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["train", "--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["train", "--resume", "/nonexistent/run"], "stridenet train: error: /nonexistent/run: no such run folder"),
    (["eval", "/nonexistent/run"], "stridenet eval: error: /nonexistent/run: no such run folder"),
    (["predict", "/nonexistent/run", "x.png"], "stridenet predict: error: /nonexistent/run: no such run folder"),
])
def test_user_mistakes_give_one_line_and_status_2(argv, message, capsys) -> None:
    assert message in one_line_error(argv, capsys)


def test_run_mistakes_give_one_line(cli_run, tmp_path, capsys) -> None:
    run, _ = cli_run
    assert "no such image file" in one_line_error(["predict", str(run), str(tmp_path / "missing.png")], capsys)
    (tmp_path / "notes.txt").write_text("hello")
    assert "unsupported file type" in one_line_error(["predict", str(run), str(tmp_path / "notes.txt")], capsys)
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5)))
    assert "expected an array of shape (1, 28, 28)" in one_line_error(
        ["predict", str(run), str(tmp_path / "wrong.npy")], capsys)
    assert "drop --lr" in one_line_error(["train", "--resume", str(run), "--lr", "0.1"], capsys)
    assert "already holds a run" in one_line_error(["train", "--out", str(run), "--limit-train", "64"], capsys)
    assert "unknown checkpoint 'first'" in one_line_error(["eval", str(run), "--checkpoint", "first"], capsys)


def test_diverging_run_stops_with_status_1(tmp_path, capsys) -> None:
    line = one_line_error(["train", "--optimizer", "sgd", "--lr", "1e12", "--limit-train", "128", "--epochs", "1",
                           "--out", str(tmp_path / "run")], capsys, status=1)
    assert line.startswith("stridenet train: error: ") and "at epoch 1, step" in line and "lower --lr" in line


def test_ctrl_c_in_a_real_process_saves_and_explains_how_to_resume(tmp_path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "stridenet", "train", "--limit-train", "4000", "--epochs", "2",
                                "--out", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    first = process.stdout.readline()  # printed once data and model are ready, just before the first step
    assert first.startswith(f"run folder {run}")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert f"resume with: stridenet train --resume {run}" in out
    assert (run / "last.npz").exists()
