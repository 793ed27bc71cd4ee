"""Fixtures for the data tests: the shared real datasets, a local HTTP server, tiny fixture files."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository clone; skips the test when it is absent."""
    if not (SHARED_DATA / "mnist-10k").is_dir() or not (SHARED_DATA / "fashion-mnist").is_dir():
        pytest.skip(f"real datasets not available: {SHARED_DATA} (shared/ beside the clone) is missing")
    return SHARED_DATA


@dataclass
class LocalServer:
    """A static file server on 127.0.0.1: files written under ``root`` are served at ``url``.

    Any path under ``/truncated/`` answers with a body cut short: the connection drops mid-file.
    """

    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: object, requests: list[str], **kwargs: object) -> None:
        self._requests = requests
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        self._requests.append(self.path)
        if self.path.startswith("/truncated/"):  # promise 100,000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """Serve ``tmp_path/www`` on an ephemeral port in a thread; shut down after the test."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []
    handler = partial(_Handler, directory=str(root), requests=requests)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield LocalServer(root, f"http://127.0.0.1:{server.server_address[1]}/", requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
