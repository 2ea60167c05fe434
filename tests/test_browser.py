"""The HTML report and the kedro-viz build render in headless Chromium (Debian's chromium; .ci/run installs it)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_run import TINY, _run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="headless Chromium is not installed (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def _chromium(tmp_path: Path, url: str, *extra: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _screenshot(tmp_path: Path, url: str, out: Path, height: int = 2400) -> np.ndarray:
    _chromium(tmp_path, url, f"--screenshot={out}", f"--window-size=1280,{height}", "--virtual-time-budget=20000")
    return np.asarray(Image.open(out).convert("RGB"))


def test_report_renders_the_table_and_figures(project, tmp_path):  # noqa: F811
    _run(project, "toy_model", TINY)
    _run(project, "eagle_coco", TINY)
    report = project / "data/08_reporting/eagle_coco/report.html"
    dom = _chromium(tmp_path, report.as_uri(), "--dump-dom", "--virtual-time-budget=10000")
    assert "EAGLE report" in dom and "insertion_auc" in dom and dom.count("<tr") >= 5
    shot = project / "data/08_reporting/eagle_coco/report_screenshot.png"
    pixels = _screenshot(tmp_path, report.as_uri(), shot)
    assert shot.stat().st_size > 10_000
    # the embedded figures are drawn: far more colours than text on white would give
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500


def test_kedro_viz_build_renders_the_pipeline(project, tmp_path):  # noqa: F811
    kedro = str(Path(sys.executable).with_name("kedro"))
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    subprocess.run([kedro, "viz", "build"], cwd=project, env=env, check=True, capture_output=True, timeout=600)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(project / "build"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        dom = _chromium(tmp_path, url, "--dump-dom", "--virtual-time-budget=30000", "--window-size=1600,1000")
        shot = project / "build" / "pipeline_screenshot.png"
        pixels = _screenshot(tmp_path, url, shot, height=1000)
    finally:
        server.shutdown()
    text = dom.lower().replace("_", " ")
    assert "generate answers" in text and "build report" in text, dom[:2000]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
