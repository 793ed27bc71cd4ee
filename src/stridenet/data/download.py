"""Download MNIST, Fashion-MNIST and CIFAR-10 (binary) into a cache folder, checked by md5.

Each file is fetched from the mirrors of its dataset in order, written to a temporary file in the
destination folder, checked against its published md5, flushed to disk and only then renamed to its
final name, so a file under its final name is always complete and correct. A file already cached with
the right checksum is not fetched again. ``SOURCES`` is the registry of files, checksums and mirror
URL bases; tests point it (or the ``mirrors`` argument) at a local server. Only ``urllib`` is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from stridenet.data import cifar
from stridenet.errors import DataError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where a dataset's files come from.

    Attributes:
        files: file name -> expected md5 (hex).
        mirrors: URL bases tried in order; a file's URL is ``base + name``.
    """

    files: dict[str, str]
    mirrors: tuple[str, ...]


SOURCES: dict[str, Source] = {
    "mnist": Source(
        files={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ),
    "fashion-mnist": Source(
        files={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
        ),
    ),
    "cifar10": Source(
        files={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
    ),
}


def cache_dir() -> Path:
    """The folder datasets are cached in.

    ``$STRIDENET_DATA`` if set; else ``%LOCALAPPDATA%\\stridenet`` on Windows,
    ``~/Library/Caches/stridenet`` on macOS, ``$XDG_CACHE_HOME/stridenet`` or
    ``~/.cache/stridenet`` elsewhere. The folder is not created here.
    """
    override = os.environ.get("STRIDENET_DATA")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stridenet"


def file_md5(path: str | os.PathLike[str]) -> str:
    """The md5 of a file as lowercase hex, read in 1 MiB chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Progress:
    """Prints ``name: 12.3/26.4 MB`` on one stderr line, only when stderr is a terminal."""

    def __init__(self, name: str, total: int | None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.enabled = sys.stderr.isatty()

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            total = f"/{self.total / 1e6:.1f}" if self.total else ""
            sys.stderr.write(f"\rdownloading {self.name}: {self.done / 1e6:.1f}{total} MB")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _stream(url: str, out: IO[bytes], name: str, timeout: float) -> str:
    """Copy ``url`` into ``out`` and return the md5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    opener = urllib.request.build_opener()  # reads the *_proxy variables now, not at import
    with opener.open(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        progress = _Progress(name, int(length) if length and length.isdigit() else None)
        try:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.update(len(chunk))
        finally:
            progress.close()
    return digest.hexdigest()


def fetch(name: str, md5: str, mirrors: Sequence[str], dest_dir: str | os.PathLike[str], timeout: float = 60.0) -> Path:
    """Download one file into ``dest_dir``, trying each mirror until the checksum matches.

    Args:
        name: the file name; its URL on a mirror is ``base + name``.
        md5: expected md5, lowercase hex.
        mirrors: URL bases, tried in order.
        dest_dir: destination folder (created if missing).
        timeout: seconds to wait on a connection or read. Default: 60.

    Returns:
        The path ``dest_dir/name``. If it already exists with the right md5, nothing is fetched.

    Raises:
        DataError: no mirror gave a file with the right checksum; the message names the file,
            the expected checksum, and each URL tried with what went wrong (including the md5 found).
    """
    dest = Path(dest_dir)
    final = dest / name
    if final.is_file() and file_md5(final) == md5:
        return final
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the download folder ({exc})") from exc
    failures = []
    for base in mirrors:
        url = base + name
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
        except OSError as exc:
            raise DataError(f"{dest}: cannot create a temporary file to download into ({exc})") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                found = _stream(url, out, name, timeout)
                if found == md5:
                    out.flush()
                    os.fsync(out.fileno())
            if found == md5:
                os.replace(tmp, final)
                return final
            failures.append(f"{url}: checksum mismatch, found md5 {found}")
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
            failures.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    tried = "\n  ".join(failures) if failures else "(no mirrors given)"
    raise DataError(f"{final}: download failed, expected md5 {md5}; URLs tried:\n  {tried}")


def _safe_target(member: tarfile.TarInfo, archive: Path, dest: Path) -> Path:
    parts = PurePosixPath(member.name).parts
    if (
        member.name.startswith(("/", "\\"))
        or "\\" in member.name
        or ".." in parts
        or (parts and ":" in parts[0])
        or not (member.isfile() or member.isdir())
    ):
        raise DataError(
            f"{archive}: unsafe archive member {member.name!r}; expected plain files and folders "
            "with relative paths inside the archive"
        )
    target = dest.joinpath(*parts).resolve()
    if not target.is_relative_to(dest):
        raise DataError(f"{archive}: archive member {member.name!r} would be written outside {dest}")
    return target


def extract_tar_safely(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Extract a tar(.gz) archive into ``dest``, refusing anything that could escape it.

    Every member is checked before anything is written: absolute paths, ``..`` components, drive
    letters, backslashes, links and device files are rejected.

    Raises:
        DataError: the archive is unreadable or holds an unsafe member.
    """
    archive, dest = Path(archive), Path(dest).resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            targets = [_safe_target(member, archive, dest) for member in members]
            for member, target in zip(members, targets, strict=True):
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise DataError(f"{archive}: cannot read archive member {member.name!r}")
                with source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive}: cannot extract archive ({exc})") from exc


def _cifar_complete(folder: Path) -> bool:
    size = cifar.RECORDS_PER_BATCH * cifar.RECORD_BYTES
    batches = (*cifar.TRAIN_FILES, cifar.TEST_FILE)
    return all((folder / b).is_file() and (folder / b).stat().st_size == size for b in batches)


def _download_cifar(source: Source, mirrors: Sequence[str], root: Path, timeout: float) -> None:
    if _cifar_complete(root / cifar.FOLDER):
        return
    archive_name, md5 = next(iter(source.files.items()))
    archive = fetch(archive_name, md5, mirrors, root, timeout)
    scratch = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        extract_tar_safely(archive, scratch)
        extracted = scratch / cifar.FOLDER
        if not extracted.is_dir():
            raise DataError(f"{archive}: expected the folder {cifar.FOLDER}/ in the archive, not found")
        shutil.rmtree(root / cifar.FOLDER, ignore_errors=True)
        os.replace(extracted, root / cifar.FOLDER)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    archive.unlink()


def download_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    mirrors: Sequence[str] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download a dataset's files (if not cached already) and return their folder.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` or ``"cifar10"``.
        root: destination folder. Default: ``cache_dir() / name``.
        mirrors: URL bases to use instead of ``SOURCES[name].mirrors``.
        timeout: seconds to wait on a connection or read. Default: 60.

    Returns:
        The folder holding the four IDX files (MNIST, Fashion-MNIST) or ``cifar-10-batches-bin/``
        (CIFAR-10; the archive is deleted once extracted).

    Raises:
        DataError: unknown name, or a file could not be downloaded with the right checksum.
    """
    if name not in SOURCES:
        raise DataError(f"no download for dataset {name!r}; expected one of {sorted(SOURCES)}")
    source = SOURCES[name]
    folder = Path(root) if root is not None else cache_dir() / name
    urls = tuple(mirrors) if mirrors is not None else source.mirrors
    if name == "cifar10":
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{folder}: cannot create the download folder ({exc})") from exc
        _download_cifar(source, urls, folder, timeout)
    else:
        for file_name, md5 in source.files.items():
            fetch(file_name, md5, urls, folder, timeout)
    return folder
