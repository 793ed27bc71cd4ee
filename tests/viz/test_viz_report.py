"""The HTML report: self-contained, complete, and rendered by a real browser without errors."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from viz_helpers import CLASSES

from stridenet.viz import report


@pytest.fixture(scope="module")
def report_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from viz_helpers import make_tiny_run

    run = make_tiny_run()
    return report.write_report(run, tmp_path_factory.mktemp("report") / "report.html", index=2, dpi=60)


def test_report_is_self_contained(report_page: Path) -> None:
    text = report_page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text.lower()
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    assert not re.search(r"https?://", text)


def test_report_has_every_part(report_page: Path) -> None:
    text = report_page.read_text(encoding="utf-8")
    for heading in ("Model", "Configuration", "Training curves", "Test-set evaluation", "Per-class accuracy",
                    "What the filters look for", "Activation maps", "Saliency", "Mistakes"):
        assert f">{heading}</h" in text, heading
    figures = re.findall(r'<figure id="([^"]+)">', text)
    assert figures == ["curves", "confusion", "per_class_accuracy", "filters", "top_3", "top_6_block_0",
                       "activations_00_0", "activations_01_2", "activations_02_3", "activations_03_6_block_0",
                       "activations_04_7", "saliency", "mistakes"]
    for name in CLASSES:
        assert f"<td>{name}</td>" in text  # per-class accuracy rows
    assert "Conv2d(1-&gt;4, 3x3, p1)" in text and "Parameters: " in text and "config.epochs" in text
    assert "test image #2" in text


def test_report_with_some_sections(tiny_run) -> None:
    text = report.build_report(tiny_run, sections=["saliency", "curves"], dpi=40)
    assert re.findall(r'<figure id="([^"]+)">', text) == ["curves", "saliency"]
    assert "Per-class accuracy" not in text and "Model</h2>" in text
    with pytest.raises(ValueError, match="unknown figure sections"):
        report.build_report(tiny_run, sections=["nope"])


def test_config_is_flattened_and_escaped() -> None:
    text = report.config_html({"config": {"model": "<b>x</b>", "image_size": None}, "data": {"classes": ["a", "b"]}})
    assert "config.model</span> &lt;b&gt;x&lt;/b&gt;" in text and "<b>x</b>" not in text
    assert 'data.classes</span> [&quot;a&quot;, &quot;b&quot;]' in text and "config.image_size</span> None" in text
    assert "No configuration" in report.config_html({})


def screenshot_pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64)


def test_report_renders_in_chromium(report_page: Path, browser) -> None:
    page = browser.visit(report_page.resolve().as_uri())
    assert page.errors == [], page.errors
    external = [url for url in page.requests if not url.startswith(("file:", "data:"))]
    assert external == [], f"the report loads from the network: {external}"
    pixels = screenshot_pixels(page.screenshot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20, "the screenshot is blank"
    assert (pixels.mean(axis=2) < 200).mean() > 0.02, "the screenshot shows almost nothing but background"
    assert (np.ptp(pixels, axis=2) > 60).mean() > 0.005, "no coloured figures visible"


def test_browser_check_catches_errors_and_network_loads(tmp_path: Path, browser) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><h1>bad</h1><img src="http://example.invalid/x.png">'
                   '<script>console.error("boom"); missingFunction();</script></body></html>')
    page = browser.visit(bad.as_uri())
    assert any("boom" in e for e in page.errors) and any("missingFunction" in e for e in page.errors)
    assert "http://example.invalid/x.png" in page.requests
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert screenshot_pixels(browser.visit(blank.as_uri()).screenshot).std() < 1
