"""Downloads against a local HTTP server: checksums, mirror fallback, atomic writes, cache, tar safety."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from stridenet.data import cifar, download
from stridenet.data.download import Source, cache_dir, download_dataset, extract_tar_safely, fetch
from stridenet.errors import DataError

if TYPE_CHECKING:
    from conftest import LocalServer

GOOD = b"the real file " * 1000
BAD = b"a corrupt copy " * 1000
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


def put(server: LocalServer, mirror: str, name: str, data: bytes) -> str:
    """Serve ``data`` as ``<mirror>/<name>``; returns the mirror's URL base."""
    (server.root / mirror).mkdir(exist_ok=True)
    (server.root / mirror / name).write_bytes(data)
    return f"{server.url}{mirror}/"


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_success(local_server: LocalServer, tmp_path: Path) -> None:
    base = put(local_server, "a", "f.gz", GOOD)
    path = fetch("f.gz", GOOD_MD5, [base], tmp_path / "cache")
    assert path == tmp_path / "cache" / "f.gz" and path.read_bytes() == GOOD
    assert leftovers(tmp_path / "cache") == ["f.gz"]  # no temp file left behind
    assert local_server.requests == ["/a/f.gz"]


def test_corrupt_first_mirror_falls_back(local_server: LocalServer, tmp_path: Path) -> None:
    bad = put(local_server, "a", "f.gz", BAD)
    good = put(local_server, "b", "f.gz", GOOD)
    path = fetch("f.gz", GOOD_MD5, [bad, good], tmp_path / "cache")
    assert path.read_bytes() == GOOD
    assert local_server.requests == ["/a/f.gz", "/b/f.gz"]
    assert leftovers(tmp_path / "cache") == ["f.gz"]


def test_missing_first_mirror_falls_back(local_server: LocalServer, tmp_path: Path) -> None:
    missing = f"{local_server.url}nothing-here/"
    good = put(local_server, "b", "f.gz", GOOD)
    assert fetch("f.gz", GOOD_MD5, [missing, good], tmp_path).read_bytes() == GOOD


def test_all_mirrors_bad(local_server: LocalServer, tmp_path: Path) -> None:
    bad = put(local_server, "a", "f.gz", BAD)
    bad2 = put(local_server, "b", "f.gz", BAD + b"!")
    missing = f"{local_server.url}gone/"
    dest = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        fetch("f.gz", GOOD_MD5, [bad, bad2, missing], dest)
    message = str(info.value)
    assert "f.gz" in message and GOOD_MD5 in message
    assert hashlib.md5(BAD).hexdigest() in message and hashlib.md5(BAD + b"!").hexdigest() in message
    for url in (bad, bad2, missing):
        assert url + "f.gz" in message
    assert "404" in message
    assert leftovers(dest) == []  # nothing under the final name, no temp files


def test_connection_dropped_mid_file(local_server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        fetch("f.gz", GOOD_MD5, [f"{local_server.url}truncated/"], tmp_path / "cache")
    assert "truncated/f.gz" in str(info.value)
    assert leftovers(tmp_path / "cache") == []


def test_unreachable_mirror(tmp_path: Path, local_server: LocalServer) -> None:
    good = put(local_server, "b", "f.gz", GOOD)
    dead = "http://127.0.0.1:9/"  # discard port: connection refused
    assert fetch("f.gz", GOOD_MD5, [dead, good], tmp_path, timeout=5).read_bytes() == GOOD


def test_cached_file_not_refetched(local_server: LocalServer, tmp_path: Path) -> None:
    base = put(local_server, "a", "f.gz", GOOD)
    fetch("f.gz", GOOD_MD5, [base], tmp_path)
    (local_server.root / "a" / "f.gz").unlink()  # a second request would now fail
    assert fetch("f.gz", GOOD_MD5, [base], tmp_path).read_bytes() == GOOD
    assert local_server.requests == ["/a/f.gz"]


def test_corrupt_cached_file_replaced(local_server: LocalServer, tmp_path: Path) -> None:
    (tmp_path / "f.gz").write_bytes(BAD)
    base = put(local_server, "a", "f.gz", GOOD)
    assert fetch("f.gz", GOOD_MD5, [base], tmp_path).read_bytes() == GOOD
    assert local_server.requests == ["/a/f.gz"]


def test_download_dataset_uses_registry(
    local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {f"part{i}.gz": bytes([i]) * 100 for i in range(3)}
    for name, data in files.items():
        put(local_server, "m", name, data)
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    source = Source(md5, (f"{local_server.url}missing/", f"{local_server.url}m/"))
    monkeypatch.setitem(download.SOURCES, "mnist", source)
    monkeypatch.setenv("STRIDENET_DATA", str(tmp_path / "cache"))
    folder = download_dataset("mnist")
    assert folder == tmp_path / "cache" / "mnist"
    assert leftovers(folder) == sorted(files)
    local_server.requests.clear()
    download_dataset("mnist")
    assert local_server.requests == []
    with pytest.raises(DataError, match="cifar10"):
        download_dataset("imagenet")


def test_mirrors_argument_overrides(local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"x" * 10
    monkeypatch.setitem(download.SOURCES, "mnist", Source({"x.gz": hashlib.md5(data).hexdigest()}, ("http://unused/",)))
    base = put(local_server, "z", "x.gz", data)
    assert (download_dataset("mnist", root=tmp_path, mirrors=[base]) / "x.gz").read_bytes() == data


def cifar_archive(records: int, extra: tarfile.TarInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        names = [f"{cifar.FOLDER}/{name}" for name in (*cifar.TRAIN_FILES, cifar.TEST_FILE)]
        for i, name in enumerate(names):
            data = np.full(records * cifar.RECORD_BYTES, i % 10, dtype=np.uint8).tobytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return buffer.getvalue()


def test_cifar_download_and_extract(local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cifar, "RECORDS_PER_BATCH", 2)
    archive = cifar_archive(records=2)
    base = put(local_server, "k", "cifar-10-binary.tar.gz", archive)
    source = Source({"cifar-10-binary.tar.gz": hashlib.md5(archive).hexdigest()}, (base,))
    monkeypatch.setitem(download.SOURCES, "cifar10", source)
    folder = download_dataset("cifar10", root=tmp_path / "c")
    assert leftovers(folder) == [cifar.FOLDER]  # archive removed, no scratch folder left
    (train, _), (test, _), _ = cifar.load_cifar10(folder)
    assert train.shape == (10, 3, 32, 32) and test.shape == (2, 3, 32, 32)
    local_server.requests.clear()
    download_dataset("cifar10", root=tmp_path / "c")
    assert local_server.requests == []


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "cifar-10-batches-bin/../../evil.txt"])
def test_unsafe_tar_member_rejected(tmp_path: Path, member: str) -> None:
    info = tarfile.TarInfo(member)
    info.size = 3
    path = tmp_path / "a.tar.gz"
    path.write_bytes(cifar_archive(records=1, extra=info))
    dest = tmp_path / "out" / "inner"
    dest.mkdir(parents=True)
    with pytest.raises(DataError, match="unsafe archive member"):
        extract_tar_safely(path, dest)
    assert leftovers(dest) == [] and not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out" / "evil.txt").exists()


def test_symlink_member_rejected(tmp_path: Path) -> None:
    link = tarfile.TarInfo("cifar-10-batches-bin/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    path = tmp_path / "a.tar.gz"
    path.write_bytes(cifar_archive(records=1, extra=link))
    with pytest.raises(DataError, match="unsafe archive member"):
        extract_tar_safely(path, tmp_path / "out")


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STRIDENET_DATA", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("STRIDENET_DATA")
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert cache_dir() == tmp_path / "xdg" / "stridenet"
        monkeypatch.delenv("XDG_CACHE_HOME")
        assert cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "stridenet"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert cache_dir() == Path.home() / "Library" / "Caches" / "stridenet"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert cache_dir() == tmp_path / "local" / "stridenet"


def test_registry_checksums_are_the_published_ones() -> None:
    assert download.SOURCES["mnist"].files["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert download.SOURCES["fashion-mnist"].files["t10k-labels-idx1-ubyte.gz"] == ("bb300cfdad3c16e7a12a480ee83cd310")
    assert download.SOURCES["cifar10"].files == {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}
    assert all(base.endswith("/") for source in download.SOURCES.values() for base in source.mirrors)
