"""Checkpoint files: one ``.npz`` of plain numeric arrays plus a JSON header, never a pickle.

Layout of a checkpoint (``np.savez`` with ``allow_pickle=False``)::

    __header__            uint8 bytes of a UTF-8 JSON object: format, version, position, RNG states...
    model.<key>           the model's state_dict (PyTorch key names), e.g. model.0.weight
    optimizer.<key>       the optimizer's flat state_dict, e.g. optimizer.exp_avg.3
    schedule.<key>        the learning-rate schedule's flat state_dict

Writing is atomic: the file is written to a temporary name in the same folder, flushed and fsynced,
then renamed over the old one (``os.replace``) and the folder fsynced, so a crash mid-save leaves the
previous checkpoint intact. Reading always uses ``np.load(..., allow_pickle=False)``: a file holding a
pickled object (or a pickle renamed ``.npz``) is refused with ``CheckpointError``, never executed.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stridenet import nn
from stridenet.errors import CheckpointError

FORMAT = "stridenet-checkpoint"
VERSION = 1
HEADER_KEY = "__header__"
SECTIONS = ("model", "optimizer", "schedule")


@dataclass
class Checkpoint:
    """The contents of a checkpoint file.

    Attributes:
        header: JSON-compatible metadata (position in training, RNG states, metrics...).
        model: model state_dict.
        optimizer: optimizer state_dict (may be empty for a weights-only checkpoint).
        schedule: schedule state_dict (may be empty).
    """

    header: dict[str, Any]
    model: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)
    schedule: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder).

    Returns:
        The path written.

    Raises:
        CheckpointError: an array that is not numeric (object arrays cannot be stored without pickle).
    """
    path = Path(path)
    header = {"format": FORMAT, "version": VERSION, **checkpoint.header}
    arrays: dict[str, np.ndarray] = {HEADER_KEY: np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for section in SECTIONS:
        for key, value in getattr(checkpoint, section).items():
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise CheckpointError(f"{path}: cannot store {section}.{key} of dtype {array.dtype}; "
                                      "checkpoints hold numeric arrays only")
            arrays[f"{section}.{key}"] = array
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not an ``.npz`` archive, holds pickled or non-numeric
            data, lacks the header, or has another format or version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file there")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, Mapping):
            raise CheckpointError(f"{path}: not a stridenet checkpoint (a bare .npy array, not an .npz archive)")
        with archive:
            arrays = {key: archive[key] for key in archive.files}
    except CheckpointError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        reason = "it holds pickled Python objects, which are never loaded" if "pickle" in str(error) else error
        raise CheckpointError(f"{path}: not a valid stridenet checkpoint ({reason})") from None
    header = _read_header(path, arrays.pop(HEADER_KEY, None))
    checkpoint = Checkpoint(header, {}, {}, {})
    for name, array in arrays.items():
        section, _, key = name.partition(".")
        if section not in SECTIONS or not key:
            raise CheckpointError(f"{path}: unexpected entry {name!r} (expected model.*, optimizer.*, schedule.*)")
        if array.dtype.kind not in "biuf":
            raise CheckpointError(f"{path}: entry {name!r} has non-numeric dtype {array.dtype}")
        getattr(checkpoint, section)[key] = array
    return checkpoint


def _read_header(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None:
        raise CheckpointError(f"{path}: not a stridenet checkpoint (no {HEADER_KEY} entry)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path}: malformed header (expected uint8 bytes, found {raw.dtype} {raw.shape})")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: malformed header ({error})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a stridenet checkpoint (format {header.get('format')!r} "
                              f"where {FORMAT!r} was expected)" if isinstance(header, dict) else
                              f"{path}: malformed header (not a JSON object)")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {header.get('version')!r} is not supported "
                              f"(this stridenet reads version {VERSION})")
    return header


def check_model_state(model: nn.Layer, state: Mapping[str, np.ndarray], source: str) -> None:
    """Check that ``state`` has exactly the model's keys and shapes.

    Raises:
        CheckpointError: naming the first missing or unexpected key, or a key whose shape differs
            (with the model's expected shape and the checkpoint's).
    """
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {missing[:5]}"] if missing else []) + (
            [f"unexpected keys {unexpected[:5]}"] if unexpected else [])
        raise CheckpointError(f"{source}: does not match the model: {'; '.join(parts)}")
    for key, reference in expected.items():
        found = np.shape(state[key])
        if found != reference.shape:
            raise CheckpointError(f"{source}: key {key!r} expected shape {reference.shape} (the model's), "
                                  f"found shape {found}")


def load_model_state(model: nn.Layer, state: Mapping[str, np.ndarray], source: str) -> None:
    """Copy a checked state_dict into ``model`` (see :func:`check_model_state`)."""
    check_model_state(model, state, source)
    model.load_state_dict(dict(state))


def model_generators(model: nn.Layer) -> list[np.random.Generator]:
    """The distinct random generators held by the model's layers (``Dropout.rng``), in layer order."""
    found: list[np.random.Generator] = []
    for module in model.modules():
        rng = getattr(module, "rng", None)
        if isinstance(rng, np.random.Generator) and all(rng is not g for g in found):
            found.append(rng)
    return found


def generator_states(model: nn.Layer) -> list[dict[str, Any]]:
    """JSON-compatible bit-generator states of :func:`model_generators` (Python ints hold 128 bits)."""
    return [g.bit_generator.state for g in model_generators(model)]


def restore_generator_states(model: nn.Layer, states: list[dict[str, Any]], source: str) -> None:
    """Put saved states back into the model's generators, so dropout masks continue exactly.

    Raises:
        CheckpointError: the number of generators differs, or a state does not fit its generator.
    """
    generators = model_generators(model)
    if not isinstance(states, list) or len(states) != len(generators):
        count = len(states) if isinstance(states, list) else "no"
        raise CheckpointError(f"{source}: holds {count} random generator states, the model has "
                              f"{len(generators)} generators (dropout layers)")
    for i, (generator, state) in enumerate(zip(generators, states, strict=True)):
        try:
            generator.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{source}: random generator state {i} does not fit ({error})") from None
