"""Checkpoint files: atomic writes, strict loading, and no code execution from hostile files."""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stridenet.errors import CheckpointError
from stridenet.train import Checkpoint, Trainer, load_checkpoint, load_run, save_checkpoint
from stridenet.train import checkpoint as checkpoint_module


class Payload:
    """Unpickling this object opens (creates) ``marker`` for writing: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def small_checkpoint(value: float = 1.0) -> Checkpoint:
    return Checkpoint({"epoch": 1, "note": "test"}, {"0.weight": np.full((2, 3), value, np.float32)},
                      {"lr": np.array(0.1), "step_count": np.array(3)}, {"step_count": np.array(3)})


@pytest.fixture(scope="module")
def trained_run(tiny_config, tiny_splits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    Trainer(replace(tiny_config, out=str(out), epochs=1, warmup_epochs=0), splits=tiny_splits, progress=False,
            log=lambda line: None).fit()
    return out


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.npz", small_checkpoint())
    loaded = load_checkpoint(path)
    assert loaded.header["epoch"] == 1 and loaded.header["format"] == "stridenet-checkpoint"
    assert np.array_equal(loaded.model["0.weight"], np.ones((2, 3), np.float32))
    assert loaded.optimizer["step_count"] == 3 and loaded.schedule["step_count"] == 3


def test_crash_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "last.npz", small_checkpoint(1.0))
    real_savez = np.savez

    def half_then_crash(handle, **kwargs):
        real_savez(handle, **kwargs)
        handle.truncate(handle.tell() // 2)  # part of the new file is on disk...
        raise KeyboardInterrupt  # ...when the process is stopped

    monkeypatch.setattr(checkpoint_module.np, "savez", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, small_checkpoint(2.0))
    monkeypatch.undo()
    assert np.array_equal(load_checkpoint(path).model["0.weight"], np.ones((2, 3), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz"]  # no temporary file left


def test_npz_with_a_pickled_object_array_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Payload(probe)))  # the payload works when unpickled...
    assert probe.exists()
    path = tmp_path / "last.npz"
    header = np.frombuffer(json.dumps({"format": "stridenet-checkpoint", "version": 1}).encode(), np.uint8)
    np.savez(path, allow_pickle=True, __header__=header,
             **{"model.0.weight": np.array([Payload(marker)], dtype=object)})
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)
    assert not marker.exists()  # ...but loading the checkpoint never unpickled it


def test_pickle_file_renamed_npz_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "last.npz"
    path.write_bytes(pickle.dumps({"model": Payload(marker)}))
    with pytest.raises(CheckpointError, match="not a valid stridenet checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_hostile_last_checkpoint_in_a_run_folder_is_refused(trained_run: Path, tmp_path: Path, tiny_splits,
                                                            tiny_config) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "copy"
    run.mkdir()
    (run / "config.json").write_bytes((trained_run / "config.json").read_bytes())
    for name in ("last.npz", "best.npz"):
        (run / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError):
        load_run(run)
    with pytest.raises(CheckpointError):
        Trainer(replace(tiny_config, out=str(run), epochs=1, warmup_epochs=0), resume=True, splits=tiny_splits,
                progress=False)
    assert not marker.exists()


def _zip_with(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "not a valid"),
    (lambda p: p.write_bytes(b"garbage" * 100), "not a valid"),
    (lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p), "bare .npy"),
    (lambda p: np.savez(p, x=np.zeros(3)), "no __header__"),
    (lambda p: np.savez(p, __header__=np.frombuffer(b'{"format": "other"}', np.uint8)), "format 'other'"),
    (lambda p: np.savez(p, __header__=np.frombuffer(b'{"format": "stridenet-checkpoint", "version": 99}',
                                                    np.uint8)), "version 99"),
    (lambda p: np.savez(p, __header__=np.frombuffer(b"{not json", np.uint8)), "malformed header"),
    (lambda p: np.savez(p, __header__=np.frombuffer(b'{"format": "stridenet-checkpoint", "version": 1}',
                                                    np.uint8), junk=np.zeros(1)), "unexpected entry 'junk'"),
    (lambda p: np.savez(p, __header__=np.frombuffer(b'{"format": "stridenet-checkpoint", "version": 1}',
                                                    np.uint8), **{"model.w": np.array(["text"])}), "non-numeric"),
])
def test_malformed_files_raise_checkpoint_error(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "last.npz"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(trained_run: Path, tmp_path: Path) -> None:
    data = (trained_run / "last.npz").read_bytes()
    path = tmp_path / "last.npz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a valid"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "nope.npz")


def test_shape_mismatch_names_key_and_shapes(trained_run: Path, tmp_path: Path) -> None:
    saved = load_checkpoint(trained_run / "best.npz")
    saved.model["0.weight"] = np.zeros((8, 1, 5, 5), np.float32)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((trained_run / "config.json").read_bytes())
    save_checkpoint(run / "best.npz", saved)
    with pytest.raises(CheckpointError, match=r"'0\.weight' expected shape \(8, 1, 3, 3\).*found shape \(8, 1, 5, 5\)"):
        load_run(run)
    del saved.model["0.weight"]
    save_checkpoint(run / "best.npz", saved)
    with pytest.raises(CheckpointError, match=r"missing keys \['0\.weight'\]"):
        load_run(run)


def test_optimizer_state_mismatch_is_a_checkpoint_error(trained_run, tmp_path, tiny_config, tiny_splits) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((trained_run / "config.json").read_bytes())
    saved = load_checkpoint(trained_run / "last.npz")
    saved.optimizer.pop("exp_avg.0")
    save_checkpoint(run / "last.npz", saved)
    with pytest.raises(CheckpointError, match=r"exp_avg\.0"):
        Trainer(replace(tiny_config, out=str(run)), resume=True, splits=tiny_splits, progress=False)


def test_checkpoint_holds_dropout_generator_state(trained_run: Path) -> None:
    header = load_checkpoint(trained_run / "last.npz").header
    assert len(header["rng"]) == 1 and header["rng"][0]["bit_generator"] == "PCG64"
    assert (header["epoch"], header["batch"], header["step"]) == (1, 0, 6)
