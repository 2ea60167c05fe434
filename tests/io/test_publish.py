"""A report is published whole or not at all, and an unchanged one adds no history entry."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from eagle_pipelines.io import report_dataset
from eagle_pipelines.io.report_dataset import PublishedReportDataset


def _bundle(value: float, when: str) -> dict:
    return {"metrics.csv": pd.DataFrame({"method": ["eagle"], "insertion_auc": [value]}),
            "report.html": f"<html>{value} made {when}</html>", "figures/curves.png": b"png-%d" % int(value * 10),
            "run.json": {"generated": when}}


def _history(folder):
    return sorted(p.name for p in (folder / "history").iterdir() if not p.name.startswith("."))


def test_a_publication_killed_halfway_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    folder = tmp_path / "report"
    dataset = PublishedReportDataset(str(folder))
    dataset.save(_bundle(0.5, "monday"))
    assert pd.read_csv(folder / "metrics.csv").insertion_auc.tolist() == [0.5]
    first = _history(folder)

    calls = []
    real = report_dataset.atomic_write

    def dies_on_the_third_file(path, write):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        real(path, write)

    monkeypatch.setattr(report_dataset, "atomic_write", dies_on_the_third_file)
    with pytest.raises(KeyboardInterrupt):
        dataset.save(_bundle(0.9, "tuesday"))
    monkeypatch.setattr(report_dataset, "atomic_write", real)
    # the links still show one whole run: the previous one
    assert _history(folder) == first
    assert pd.read_csv(folder / "metrics.csv").insertion_auc.tolist() == [0.5]
    assert "monday" in (folder / "report.html").read_text()
    assert (folder / "latest/figures/curves.png").read_bytes() == b"png-5"
    assert list((folder / "history").glob(".incomplete-*"))  # the unfinished one is not referenced...

    dataset.save(_bundle(0.9, "wednesday"))
    assert not list((folder / "history").glob(".incomplete-*"))  # ...and cleared by the next publication
    assert pd.read_csv(folder / "metrics.csv").insertion_auc.tolist() == [0.9]
    assert "wednesday" in (folder / "report.html").read_text()
    assert len(_history(folder)) == 2


def test_an_unchanged_report_adds_no_history_entry(tmp_path):
    folder = tmp_path / "report"
    dataset = PublishedReportDataset(str(folder))
    dataset.save(_bundle(0.5, "monday"))
    dataset.save(_bundle(0.5, "tuesday"))  # only the page's time differs
    assert len(_history(folder)) == 1 and "monday" in (folder / "report.html").read_text()
    dataset.save(_bundle(0.6, "tuesday"))
    assert len(_history(folder)) == 2
    changed = _bundle(0.6, "friday")  # the same tables under other parameters: a new entry
    changed["run.json"]["params"] = {"attribution": {"lambda2": 0.5}}
    dataset.save(changed)
    assert len(_history(folder)) == 3
    assert dataset.load()["content_sha256"]


def test_the_figures_and_the_explorer_are_published_where_the_readme_names_them(tmp_path):
    """README: ``figures/`` (e.g. ``corrections.png``, ``amcr.png``) under ``data/08_reporting/<pipeline>/latest/``;
    the report explorer's data beside them."""
    folder = tmp_path / "report"
    bundle = _bundle(0.5, "monday")
    bundle.update({"figures/corrections.png": b"png-corrections", "figures/amcr.png": b"png-amcr",
                   "figures/explorer.json": {"images": [{"id": 7, "tokens": []}]}})
    PublishedReportDataset(str(folder)).save(bundle)
    latest = folder / "latest" / "figures"
    assert (latest / "corrections.png").read_bytes() == b"png-corrections"
    assert (latest / "amcr.png").read_bytes() == b"png-amcr" and (latest / "curves.png").read_bytes() == b"png-5"
    assert json.loads((latest / "explorer.json").read_text()) == {"images": [{"id": 7, "tokens": []}]}
    # the explorer's data is part of what makes a report new
    changed = _bundle(0.5, "tuesday")
    changed.update({"figures/corrections.png": b"png-corrections", "figures/amcr.png": b"png-amcr",
                    "figures/explorer.json": {"images": [{"id": 8, "tokens": []}]}})
    PublishedReportDataset(str(folder)).save(changed)
    assert len(_history(folder)) == 2
