"""eagle-compare: the parameter and metric differences of two published runs, from any folder of the project."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from eagle_pipelines.compare import find_project, flatten, main, metric_diff, param_diff
from eagle_pipelines.io.report_dataset import PublishedReportDataset


def _params(n_segments: int, methods: list[str]) -> dict:
    return {"experiment": {"max_new_tokens": 6}, "superpixels": {"n_segments": n_segments, "compactness": 10.0},
            "baselines": {"methods": methods}, "model": "toy_qwen2_5_vl"}


def _metrics(eagle_ins: float, extra: bool = False) -> pd.DataFrame:
    rows = [("eagle", "sentence", "pixels", 2, eagle_ins, 0.40), ("random", "sentence", "pixels", 2, 0.70, 0.70)]
    if extra:
        rows.append(("tam", "sentence", "pixels", 2, 0.80, 0.50))
    return pd.DataFrame(rows, columns=["method", "level", "protocol", "n_samples", "insertion_auc", "deletion_auc"])


def _publish(report_dir, params: dict, metrics: pd.DataFrame) -> None:
    """One run's bundle, saved as the pipeline saves it."""
    PublishedReportDataset(str(report_dir)).save({
        "metrics.csv": metrics, "metrics_per_sample.csv": metrics.head(1), "report.html": "<html></html>",
        "figures/curves.png": b"\x89PNG" + repr(params).encode(),
        "run.json": {"generated": "now", "git commit": "abc1234", "params": params, "coverage": {}}})
    time.sleep(0.002)  # history entries are named by the time, to the microsecond


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n\n[tool.kedro]\npackage_name = "p"\n')
    (tmp_path / "src" / "deep" / "er").mkdir(parents=True)
    return tmp_path


def test_flatten_and_param_diff():
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None}) == {"a.b": 1, "a.c": [1, 2], "a.d": {},
                                                                          "e": None}
    diff = param_diff(_params(6, ["tam"]), {**_params(8, ["tam", "captum"]), "extra": {"x": True}})
    assert diff == [("baselines.methods", '["tam"]', '["tam", "captum"]'), ("extra.x", "<absent>", "true"),
                    ("superpixels.n_segments", "6", "8")]
    assert param_diff(_params(6, ["tam"]), _params(6, ["tam"])) == []


def test_metric_diff_joins_on_method_level_protocol():
    table = metric_diff(_metrics(0.90), _metrics(0.95, extra=True), ["insertion_auc"])
    eagle = table[table.method == "eagle"].iloc[0]
    assert (eagle.old, eagle.new) == (0.90, 0.95) and abs(eagle.delta - 0.05) < 1e-12
    tam = table[table.method == "tam"].iloc[0]
    assert pd.isna(tam.old) and tam.new == 0.80 and pd.isna(tam.delta)
    assert set(metric_diff(_metrics(0.9), _metrics(0.9)).metric) == {"n_samples", "insertion_auc", "deletion_auc"}


def test_compare_prints_the_parameter_and_metric_differences_of_the_last_two_runs(project, monkeypatch, capsys):
    report = project / "data" / "08_reporting" / "eagle_coco"
    _publish(report, _params(6, ["tam"]), _metrics(0.90))
    _publish(report, _params(6, ["tam"]), _metrics(0.90))  # changes nothing: no history entry
    _publish(report, _params(8, ["tam", "captum"]), _metrics(0.95, extra=True))
    runs = sorted(p.name for p in (report / "history").iterdir())
    assert len(runs) == 2

    monkeypatch.chdir(project / "src" / "deep" / "er")  # from a folder inside the project
    assert find_project(project / "src" / "deep" / "er") == project
    assert main([]) == 0
    out = capsys.readouterr().out
    assert f"old = {runs[0]}" in out and f"new = {runs[1]}" in out
    assert "Parameters (2 changed, old -> new):" in out
    assert 'baselines.methods       ["tam"] -> ["tam", "captum"]' in out
    assert "superpixels.n_segments  6 -> 8" in out and "compactness" not in out
    lines = {tuple(line.split()) for line in out.splitlines()}
    assert ("eagle", "sentence", "pixels", "insertion_auc", "0.9000", "0.9500", "+0.0500") in lines
    assert ("eagle", "sentence", "pixels", "deletion_auc", "0.4000", "0.4000", "+0.0000") in lines
    assert ("tam", "sentence", "pixels", "insertion_auc", "-", "0.8000", "-") in lines

    assert main(["--changed", "--metrics", "insertion_auc"]) == 0
    out = capsys.readouterr().out
    assert "0.9500" in out and "deletion_auc" not in out and "random" not in out

    # --runs with unique prefixes, the other way round
    assert main(["--runs", runs[1], runs[0][:-3]]) == 0
    assert "superpixels.n_segments  8 -> 6" in capsys.readouterr().out
    assert main(["--list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{runs[0]}  git abc1234")


def test_compare_from_outside_the_project_and_other_experiments(project, tmp_path_factory, monkeypatch, capsys):
    report = project / "data" / "08_reporting" / "eagle_repope"
    _publish(report, _params(6, ["tam"]), _metrics(0.5))
    _publish(report, _params(6, ["tam"]), _metrics(0.6))
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    assert main(["--experiment", "eagle_repope"]) == 2
    assert "no Kedro project here" in capsys.readouterr().err
    assert main(["--project", str(project), "--experiment", "eagle_repope"]) == 0
    out = capsys.readouterr().out
    assert "Parameters: the same in both runs." in out
    assert ("eagle", "sentence", "pixels", "insertion_auc", "0.5000", "0.6000", "+0.1000") in {
        tuple(line.split()) for line in out.splitlines()}


def test_fewer_than_two_runs_and_unknown_runs_are_said_clearly(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "eagle_coco has 0 published runs under data/08_reporting/eagle_coco/history" in err
    report = project / "data" / "08_reporting" / "eagle_coco"
    _publish(report, _params(6, ["tam"]), _metrics(0.9))
    assert main([]) == 2
    assert "eagle_coco has 1 published run under" in capsys.readouterr().err and "needs two" in err
    assert main(["--runs", "nope", "2"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    _publish(report, _params(7, ["tam"]), _metrics(0.9))
    assert main(["--runs", "2", "2"]) == 2
    assert "names 2 runs" in capsys.readouterr().err
    assert main(["--metrics", "nope"]) == 2
    assert "no metric nope in both tables" in capsys.readouterr().err
