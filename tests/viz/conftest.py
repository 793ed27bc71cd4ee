"""Fixtures for the viz tests: a tiny run in memory and a headless browser (see viz_helpers.py and
viz_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from viz_helpers import make_tiny_run

from stridenet.viz.run import RunData


@pytest.fixture
def tiny_run() -> RunData:
    return make_tiny_run()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """A headless Chromium driven over DevTools; skips when no chromium is installed."""
    from viz_browser import Browser, find_chromium

    if find_chromium() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it): "
                    "the report cannot be rendered in a browser")
    with Browser() as instance:
        yield instance
