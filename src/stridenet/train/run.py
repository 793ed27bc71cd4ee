"""The run folder: everything a training run leaves behind, in files a person can read.

::

    runs/mnist-sample-lenet5-20250101-120000/
        config.json     TrainConfig and DataInfo (dataset, model, seed, mean/std, classes, input shape)
        metrics.csv     one row per epoch (appended on resume)
        last.npz        checkpoint after the last completed epoch (or step, after Ctrl-C)
        best.npz        checkpoint of the epoch with the best validation accuracy
        eval.json       written by ``stridenet eval``
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from stridenet.errors import CheckpointError
from stridenet.train.config import ConfigError, DataInfo, TrainConfig
from stridenet.train.metrics import MetricsLog

RUN_FORMAT = "stridenet-run"
RUN_VERSION = 1
CHECKPOINT_KINDS = ("last", "best")


class RunFolder:
    """Paths and records of one run folder.

    Args:
        path: the folder (created by :meth:`write_config`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics(self) -> MetricsLog:
        return MetricsLog(self.path / "metrics.csv")

    @property
    def eval_path(self) -> Path:
        return self.path / "eval.json"

    def checkpoint_path(self, kind: str = "last") -> Path:
        """``last.npz`` or ``best.npz``.

        Raises:
            CheckpointError: any other kind.
        """
        if kind not in CHECKPOINT_KINDS:
            raise CheckpointError(f"unknown checkpoint {kind!r}; expected one of {', '.join(CHECKPOINT_KINDS)}")
        return self.path / f"{kind}.npz"

    def has_checkpoint(self) -> bool:
        return any(self.checkpoint_path(kind).exists() for kind in CHECKPOINT_KINDS)

    def write_config(self, config: TrainConfig, info: DataInfo) -> None:
        """Create the folder and write ``config.json`` (atomically)."""
        from stridenet import __version__

        self.path.mkdir(parents=True, exist_ok=True)
        record = {"format": RUN_FORMAT, "version": RUN_VERSION, "stridenet": __version__,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "config": config.to_dict(), "data": info.to_dict()}
        write_json(self.config_path, record)

    def read_config(self) -> tuple[TrainConfig, DataInfo]:
        """Read ``config.json``.

        Raises:
            CheckpointError: the folder or file is missing, or the file is not a valid run record.
        """
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: no such run folder")
        if not self.config_path.is_file():
            raise CheckpointError(f"{self.path}: not a run folder (no config.json)")
        try:
            record = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{self.config_path}: unreadable ({error})") from None
        if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
            raise CheckpointError(f"{self.config_path}: not a stridenet run record")
        if record.get("version") != RUN_VERSION:
            raise CheckpointError(f"{self.config_path}: run format version {record.get('version')!r} "
                                  f"is not supported (expected {RUN_VERSION})")
        try:
            return TrainConfig.from_dict(record["config"]), DataInfo.from_dict(record["data"])
        except (KeyError, TypeError, ValueError, ConfigError) as error:
            raise CheckpointError(f"{self.config_path}: malformed run record ({error})") from None


def write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
