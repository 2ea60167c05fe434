"""eagle-compare --figures: an HTML page with two runs' figures side by side (issue 26 item 8)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from eagle_pipelines.compare import figure_pairs, main
from eagle_pipelines.io.report_dataset import PublishedReportDataset


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _publish(report_dir: Path, n_segments: int, figures: dict[str, bytes]) -> None:
    metrics = pd.DataFrame([("eagle", "sentence", "pixels", 2, 0.5 + n_segments / 100)],
                           columns=["method", "level", "protocol", "n_samples", "insertion_auc"])
    PublishedReportDataset(str(report_dir)).save({
        "metrics.csv": metrics, "report.html": "<html></html>", **figures,
        "run.json": {"generated": "now", "git commit": "abc1234", "params": {"superpixels": {"n_segments": n_segments}},
                     "coverage": {}}})
    time.sleep(0.002)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.kedro]\npackage_name = "p"\n')
    report = tmp_path / "data" / "08_reporting" / "eagle_coco"
    red, blue, grey = _png((220, 40, 40)), _png((50, 90, 230)), _png((128, 128, 128))
    _publish(report, 6, {"figures/curves.png": red, "figures/examples/img_1.png": grey, "figures/gone.png": grey})
    _publish(report, 8, {"figures/curves.png": blue, "figures/examples/img_1.png": grey, "figures/new.png": red})
    return tmp_path


def _images(page: Path) -> list[Path]:
    return [(page.parent / src).resolve() for src in re.findall(r'<img src="([^"]+)"', page.read_text())]


def test_figures_page_pairs_the_two_runs_figures_by_name(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main(["--figures"]) == 0
    out = capsys.readouterr().out
    report = project / "data" / "08_reporting" / "eagle_coco"
    old, new = sorted(p.name for p in (report / "history").iterdir())
    page = report / "compare" / f"{old}_vs_{new}.html"
    assert f"Figures: 4 side by side (3 differ) in {page}" in out
    text = page.read_text()
    assert "superpixels.n_segments  6 -&gt; 8" in text  # the printed comparison heads the page
    names = re.findall(r"<th colspan=\"2\">(\S+) <span class=\"status\">([^<]+)</span>", text)
    assert names == [("figures/curves.png", "changed"), ("figures/new.png", "only in new"),
                     ("figures/gone.png", "only in old"), ("figures/examples/img_1.png", "same")]
    images = _images(page)
    assert all(p.is_file() for p in images) and len(images) == 6  # 2 + 1 + 1 + 2 cells with an image
    curves = [p for p in images if p.name == "curves.png"]
    assert [p.parent.parent.name for p in curves] == [old, new]  # old on the left, new on the right
    assert "not in the old run" in text and "not in the new run" in text
    assert not list((report / "compare").glob("*.png"))  # linked from the history entries, not copied


def test_figures_page_elsewhere_links_back_and_an_unwritable_page_is_one_line(project, tmp_path_factory,
                                                                               monkeypatch, capsys):
    monkeypatch.chdir(project)
    elsewhere = tmp_path_factory.mktemp("pages") / "a" / "cmp.html"
    assert main(["--figures", str(elsewhere)]) == 0
    assert all(p.is_file() for p in _images(elsewhere)) and len(_images(elsewhere)) == 6
    capsys.readouterr()
    blocker = tmp_path_factory.mktemp("file") / "not_a_folder"
    blocker.write_text("x")
    assert main(["--figures", str(blocker / "cmp.html")]) == 2
    err = capsys.readouterr().err
    assert "cannot be written" in err and "--figures PAGE" in err and len(err.strip().splitlines()) == 1


def test_pairs_of_identical_runs_are_all_the_same(tmp_path):
    for run in ("a", "b"):
        (tmp_path / run / "figures").mkdir(parents=True)
        (tmp_path / run / "figures" / "x.png").write_bytes(_png((1, 2, 3)))
    assert [row[3] for row in figure_pairs(tmp_path / "a", tmp_path / "b")] == ["same"]
