"""End to end: ``stridenet experiment NAME`` on a tiny budget writes its CSV, Markdown and plot."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from stridenet.cli import main
from stridenet.experiments import EXPERIMENTS, ExperimentConfig
from stridenet.experiments.registry import Budget
from stridenet.experiments.report import Table, mean_std

TINY = ["--dataset", "mnist-sample", "--limit-train", "128", "--limit-test", "64", "--epochs", "1",
        "--seeds", "1", "--width", "2", "--quiet"]
TRAINING = {  # experiment -> (variants, extra CSV columns)
    "stack-vs-large": (2, ["block_receptive_field", "block_weights"]),
    "pool-vs-stride": (4, []),
    "fc-vs-conv": (2, [f"accuracy_shift_{s}" for s in range(5)]),
}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _check_outputs(folder: Path, stdout: str) -> str:
    markdown = (folder / "results.md").read_text(encoding="utf-8")
    assert (folder / "plot.png").stat().st_size > 1000
    assert markdown.startswith(f"# {folder.name}: ")
    assert "*Wall time.*" in markdown and "![" in markdown
    first_row = next(line for line in markdown.splitlines() if line.startswith("|---"))
    assert first_row in stdout  # the table is printed
    return markdown


@pytest.mark.parametrize("name", list(TRAINING))
def test_training_experiment_runs_on_a_tiny_budget(name: str, tmp_path: Path, capsys) -> None:
    assert main(["experiment", name, *TINY, "--out", str(tmp_path)]) == 0
    stdout = capsys.readouterr().out
    folder = tmp_path / name
    markdown = _check_outputs(folder, stdout)
    command = next(line for line in markdown.splitlines() if line.startswith("stridenet experiment"))
    assert command.startswith(f"stridenet experiment {name} --dataset mnist-sample --epochs 1 --seeds 1 ")
    assert "--limit-train 128 --limit-test 64 --width 2" in command and "--quiet" not in command
    variants, extra = TRAINING[name]
    records = _read_csv(folder / "results.csv")
    assert len(records) == variants
    for record in records:
        assert record["train_images"] == "128" and record["test_images"] == "64"
        assert 0.0 <= float(record["test_accuracy"]) <= 1.0 and float(record["seconds_per_epoch"]) > 0
        assert all(column in record for column in extra)
        assert (folder / "runs" / f"{record['model'].replace(' ', '-').replace('+', '-')}-seed0" /
                "metrics.csv").is_file()


@pytest.mark.parametrize("name", ["output-size", "one-by-one"])
def test_structural_experiment_runs(name: str, tmp_path: Path, capsys) -> None:
    assert main(["experiment", name, "--seeds", "1", "--quiet", "--out", str(tmp_path)]) == 0
    _check_outputs(tmp_path / name, capsys.readouterr().out)


def test_rerun_replaces_the_previous_run_folders(tmp_path: Path) -> None:
    args = ["experiment", "fc-vs-conv", *TINY, "--out", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 0  # the trainer refuses existing run folders; the experiment replaces its own


@pytest.mark.parametrize(("args", "message"), [
    (["experiment", "nope"], "invalid choice"),
    (["experiment", "fc-vs-conv", "--seeds", "0"], "positive integer"),
    (["experiment", "fc-vs-conv", "--lr", "-1"], "positive number"),
])
def test_argument_mistakes_are_usage_errors(args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_data_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["experiment", "fc-vs-conv", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no such folder" in err


def test_missing_dataset_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("STRIDENET_DATA", str(tmp_path))
    assert main(["experiment", "fc-vs-conv", "--quiet", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fashion-mnist" in err and "--data-dir" in err


def test_budget_overrides_and_full() -> None:
    default, full = Budget(epochs=2, seeds=3, limit_train=10, width=8), Budget(epochs=9, seeds=5, width=16)
    assert ExperimentConfig().budget(default, full) == default
    assert ExperimentConfig(full=True).budget(default, full) == full
    assert ExperimentConfig(full=True, seeds=1).budget(default, full) == Budget(9, 1, None, None, 16)
    assert ExperimentConfig(limit_train=5, width=2).budget(default, full) == Budget(2, 3, 5, None, 2)


def test_every_experiment_is_registered_with_a_title_and_question() -> None:
    from stridenet.experiments import experiment_module

    for name in EXPERIMENTS:
        module = experiment_module(name)
        assert module.TITLE and module.QUESTION.endswith("?")
    with pytest.raises(ValueError, match="valid experiments"):
        experiment_module("nope")


def test_table_markdown_and_mean_std() -> None:
    table = Table(["model", "acc"], [["a", "90.00 ± 1.00"], ["b", "85.5"]], title="t")
    assert table.markdown().splitlines()[2:4] == ["| model | acc |", "|---|---:|"]
    assert mean_std([0.9, 0.8], scale=100) == "85.00 ± 7.07"
    assert mean_std([0.5]) == "0.50"
    with pytest.raises(ValueError, match="cells a row"):
        Table(["a", "b"], [["only one"]])


def test_all_runs_every_experiment_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from stridenet.experiments import runner

    seen: list[tuple[str, str | None]] = []
    real_run = runner.run

    def fake_run(name: str, config: ExperimentConfig):
        seen.append((name, config.command))
        return real_run("one-by-one", ExperimentConfig(seeds=1, verbose=False, out=str(tmp_path)))

    monkeypatch.setattr(runner, "run", fake_run)
    assert main(["experiment", "all", "--seeds", "1", "--quiet"]) == 0
    assert [name for name, _ in seen] == list(EXPERIMENTS)
    assert [command for _, command in seen] == [f"stridenet experiment {name} --seeds 1" for name in EXPERIMENTS]
