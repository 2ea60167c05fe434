"""The paper's tables beside a run's (reporting/paper.py), the node that publishes them, and the cost estimate of
the paper environment (paper_cost.py). Fast: hand-built metric rows, no model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from eagle_pipelines.core.baselines import BASELINES
from eagle_pipelines.pipelines.experiment.nodes import COLUMNS
from eagle_pipelines.reporting import paper
from eagle_pipelines.reporting.paper import PaperTableError, compare, paper_coverage, read_paper_tables

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return read_paper_tables()


def _cell(table: pd.DataFrame, task, level, model, method, metric) -> float:
    found = table[(table["task"] == task) & (table["level"] == level) & (table["model"] == model)
                  & (table["method"] == method) & (table["metric"] == metric)]
    assert len(found) == 1
    return float(found["value"].iloc[0])


def _metrics(levels=("sentence", "word"), methods=("eagle", "random", "llava_cam", "igos_pp", "tam", "captum"),
             seed: int = 0) -> pd.DataFrame:
    """A metrics.csv as aggregate_metrics makes it: EAGLE and random under both protocols, the baselines under
    pixels, random values, n per level."""
    rng = np.random.default_rng(seed)
    rows = []
    for level in levels:
        n = 41 if level == "sentence" else 37
        for method in methods:
            for protocol in (("regions", "pixels") if method in ("eagle", "random") else ("pixels",)):
                row = {"method": method, "level": level, "protocol": protocol, "n_samples": n}
                for col in COLUMNS[4:]:
                    row[col] = float(rng.uniform(0.05, 0.95))
                row["peak_memory_mb"] = float(rng.uniform(1000, 9000))
                row["seconds_per_sample"] = float(rng.uniform(1, 500))
                if level == "sentence":
                    row["point_game_box"] = row["point_game_mask"] = np.nan
                rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _run_value(metrics, method, level, protocol, column) -> float:
    row = metrics[(metrics["method"] == method) & (metrics["level"] == level) & (metrics["protocol"] == protocol)]
    return float(row[column].iloc[0])


# --- the shipped table --------------------------------------------------------------------------------------------
def test_the_shipped_table_is_the_papers_cells_with_its_source(table):
    text = paper.PAPER_TABLES.read_text()
    assert "CVPR 2026" in text.split("\n", 1)[0] + text and "Where MLLMs Attend" in text
    shared = ROOT.parent / "shared" / "paper-tables.csv"
    if shared.exists():  # the team's transcription, copied unchanged
        assert pd.read_csv(shared).equals(table)
    counts = table.groupby("model").size()
    assert set(counts) == {76} and len(counts) == 4  # 24 caption + 28 word + 24 MMVP per model
    assert table.groupby(["task", "level"]).size().to_dict() == {("coco_caption", "sentence"): 96,
                                                                  ("coco_caption", "word"): 112,
                                                                  ("mmvp", "sentence"): 96}


def _field(lines: list[str], index: int, field: int, value: str | None) -> list[str]:
    """`lines` with field `field` of line `index` set to `value` (None: dropped)."""
    fields = lines[index].split(",")
    if value is None:
        del fields[field]
    else:
        fields[field] = value
    return [*lines[:index], ",".join(fields), *lines[index + 1:]]


@pytest.mark.parametrize("damage, named", [
    (lambda lines: _field(lines, 10, 5, "abc"), "value"),
    (lambda lines: _field(lines, 10, 4, "insertion"), "metric"),
    (lambda lines: _field(lines, 10, 3, "gradcam"), "method"),
    (lambda lines: _field(lines, 10, 1, "paragraph"), "level"),
    (lambda lines: _field(lines, 10, 5, "-0.5"), "value"),
    (lambda lines: _field(lines, 10, 5, "inf"), "value"),
    (lambda lines: _field(lines, 10, 5, None), "value"),
    (lambda lines: lines + [lines[10]], "also on line"),
    (lambda lines: [line.replace("metric,value", "metric,score") for line in lines], "columns"),
    (lambda lines: _field(lines, 10, 5, "0.5,extra"), "CSV"),
])
def test_a_damaged_table_is_refused_with_one_line_naming_the_file(tmp_path, damage, named):
    lines = paper.PAPER_TABLES.read_text().splitlines()
    bad = tmp_path / "paper_tables.csv"
    bad.write_text("\n".join(damage(lines)) + "\n")
    with pytest.raises(PaperTableError) as err:
        read_paper_tables(bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and named in message and "restore" in message


def test_a_missing_table_is_refused_with_one_line(tmp_path):
    with pytest.raises(PaperTableError, match="cannot be read"):
        read_paper_tables(tmp_path / "absent.csv")


def test_the_line_number_points_at_the_damaged_row(tmp_path):
    lines = paper.PAPER_TABLES.read_text().splitlines()
    lines[20] = lines[20].rsplit(",", 1)[0] + ",nan"
    bad = tmp_path / "t.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(PaperTableError, match="line 21: value"):
        read_paper_tables(bad)


# --- comparison ---------------------------------------------------------------------------------------------------
def test_each_cell_gets_the_papers_value_the_runs_the_difference_and_n(table):
    metrics = _metrics()
    rows = compare(metrics, table, experiment="eagle_coco", preset="qwen2_5_vl_3b", paper_model="Qwen2.5-VL 3B",
                   fingerprint="fp-123", device="cuda:0")
    assert len(rows) == 24 + 28 and rows["covered"].all()
    assert set(rows["model_fingerprint"]) == {"fp-123"} and set(rows["preset"]) == {"qwen2_5_vl_3b"}
    for r in rows.itertuples(index=False):
        level = r.level
        method = r.method
        protocol = "regions" if method == "eagle" else "pixels"  # the paper's protocol per method
        assert r.protocol == protocol
        assert r.paper == _cell(table, r.task, level, "Qwen2.5-VL 3B", method, r.metric)
        column, factor = {"gpu_memory_gb": ("peak_memory_mb", 1 / 1024)}.get(r.metric, (r.metric, 1.0))
        expected = _run_value(metrics, method, level, protocol, column) * factor
        assert r.run == pytest.approx(expected)
        assert r.difference == pytest.approx(expected - r.paper)
        assert r.n == (41 if level == "sentence" else 37)
    memory = rows[rows["metric"] == "gpu_memory_gb"]
    assert memory["measured_as"].str.contains("torch.cuda.max_memory_allocated").all()
    eagle_ins = rows[(rows["method"] == "eagle") & (rows["metric"] == "insertion_auc") & (rows["level"] == "word")]
    assert eagle_ins["run"].iloc[0] == pytest.approx(_run_value(metrics, "eagle", "word", "regions", "insertion_auc"))


def test_memory_on_a_cpu_is_labelled_resident_set(table):
    rows = compare(_metrics(levels=("sentence",)), table, experiment="eagle_mmvp", preset="llava_1_5_7b",
                   paper_model="LLaVA-1.5 7B", device="cpu")
    assert len(rows) == 24 and set(rows["task"]) == {"mmvp"}
    memory = rows[rows["metric"] == "gpu_memory_gb"]["measured_as"]
    assert memory.str.contains("resident set").all() and not memory.str.contains("cuda").any()
    assert rows[rows["metric"] == "seconds_per_sample"]["measured_as"].str.contains("on cpu").all()


def test_cells_the_run_lacks_are_listed_uncovered_with_the_reason(table):
    metrics = _metrics(levels=("sentence",), methods=("eagle", "random", "llava_cam", "igos_pp"))
    metrics.loc[(metrics["method"] == "eagle") & (metrics["level"] == "sentence"), "ahc_sensitive"] = np.nan
    rows = compare(metrics, table, experiment="eagle_coco", preset="internvl3_5_4b", paper_model="InternVL3.5 4B")
    word = rows[rows["level"] == "word"]
    assert len(word) == 28 and not word["covered"].any()
    assert word["note"].str.contains("no word-level row").all() and word["run"].isna().all()
    undefined = rows[(rows["method"] == "eagle") & (rows["metric"] == "ahc_sensitive")]
    assert undefined["covered"].all() and undefined["run"].isna().all()
    assert undefined["note"].str.contains("undefined").all()
    found = paper_coverage(rows, table)
    assert (found["cells"], found["covered"], found["with_value"]) == (76, 24, 23)
    assert len(found["missing"]) == 52 and "coco_caption/word/InternVL3.5 4B/tam/point_game_box" in found["missing"]


def test_coverage_over_runs_counts_the_cells_of_their_models(table):
    coco = compare(_metrics(), table, experiment="eagle_coco", preset="qwen2_5_vl_7b", paper_model="Qwen2.5-VL 7B")
    assert paper_coverage(coco, table) | {"missing": None} == {
        "models": ["Qwen2.5-VL 7B"], "cells": 76, "covered": 52, "with_value": 52, "missing": None,
        "per_model": {"Qwen2.5-VL 7B": {"cells": 76, "covered": 52}}}
    mmvp = compare(_metrics(levels=("sentence",)), table, experiment="eagle_mmvp", preset="qwen2_5_vl_7b",
                   paper_model="Qwen2.5-VL 7B")
    both = pd.concat([coco, mmvp, coco])  # the same run read twice counts once
    assert paper_coverage(both, table)["covered"] == 76 and paper_coverage(both, table)["missing"] == []
    other = compare(_metrics(levels=("sentence",)), table, experiment="eagle_mmvp", preset="llava_1_5_7b",
                    paper_model="LLaVA-1.5 7B")
    found = paper_coverage(pd.concat([both, other]), table)
    assert found["cells"] == 152 and found["covered"] == 100
    assert found["per_model"]["LLaVA-1.5 7B"] == {"cells": 76, "covered": 24}


def test_coverage_refuses_a_row_that_is_not_a_paper_cell(table):
    rows = compare(_metrics(), table, experiment="eagle_coco", preset="qwen2_5_vl_3b", paper_model="Qwen2.5-VL 3B")
    rows.loc[0, "metric"] = "f1"
    with pytest.raises(PaperTableError, match="not a cell of the paper's tables"):
        paper_coverage(rows, table)


def test_a_preset_without_paper_cells_gives_one_note_and_no_cell(table):
    rows = compare(_metrics(), table, experiment="eagle_coco", preset="toy", paper_model=None, fingerprint="abc")
    assert len(rows) == 1 and rows["metric"].isna().all() and not rows["covered"].any()
    assert "'toy' has no cells in the paper's tables" in rows["note"].iloc[0]
    assert paper_coverage(rows, table)["cells"] == 0
    repope = compare(_metrics(), table, experiment="eagle_repope", preset="qwen2_5_vl_3b",
                     paper_model="Qwen2.5-VL 3B")
    assert len(repope) == 1 and "no table in the paper" in repope["note"].iloc[0]


def test_unknown_names_are_refused_with_one_line(table):
    metrics = _metrics(methods=("eagle", "gradcam"))
    with pytest.raises(PaperTableError) as err:
        compare(metrics, table, experiment="eagle_coco", preset="qwen2_5_vl_3b", paper_model="Qwen2.5-VL 3B")
    assert "'gradcam'" in str(err.value) and "METHODS" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PaperTableError) as err:
        compare(_metrics(), table, experiment="eagle_coco", preset="qwen2_5_vl_3b", paper_model="Qwen2.5 VL 3B")
    assert "paper_comparison.paper_models.qwen2_5_vl_3b" in str(err.value) and "\n" not in str(err.value)


def test_an_unmapped_preset_stops_the_run_at_its_parameters():
    from eagle_pipelines.parameters import ParameterError, parse

    base = yaml.safe_load((ROOT / "conf/base/parameters_paper_comparison.yml").read_text())["paper_comparison"]
    assert parse("paper_comparison", base).preset == "toy"
    with pytest.raises(ParameterError, match="'qwen9_vl' has no entry in paper_comparison.paper_models"):
        parse("paper_comparison", {**base, "preset": "qwen9_vl"})


def test_every_preset_and_method_has_a_mapping_onto_the_paper(table):
    presets = yaml.safe_load((ROOT / "conf/paper/globals.yml").read_text())["paper_models"]
    mapping = yaml.safe_load((ROOT / "conf/base/parameters_paper_comparison.yml").read_text())
    mapped = mapping["paper_comparison"]["paper_models"]
    assert set(presets) == set(mapped)
    assert {m for m in mapped.values() if m} == set(table["model"])  # every paper model reachable
    assert set(BASELINES) | {"eagle", "random"} == set(paper.METHODS)
    assert {m for m in paper.METHODS.values() if m} == set(table["method"])
    assert set(paper.METRICS) == set(table["metric"])


# --- the node and the report ----------------------------------------------------------------------------------------
def test_the_node_publishes_a_note_instead_of_failing(table):
    from eagle_pipelines.parameters import parse
    from eagle_pipelines.pipelines.experiment.report import compare_with_paper, paper_section

    params = parse("paper_comparison", yaml.safe_load(
        (ROOT / "conf/base/parameters_paper_comparison.yml").read_text())["paper_comparison"])
    vlm = SimpleNamespace(fingerprint="f00d", device="cpu")
    embedded = compare_with_paper(_metrics(), vlm, table, params, experiment="eagle_coco")
    assert len(embedded) == 1 and embedded["model_fingerprint"].iloc[0] == "f00d"
    assert "No cell to compare" in paper_section(embedded)
    qwen = params.model_copy(update={"preset": "qwen2_5_vl_3b"})
    broken = compare_with_paper(_metrics(methods=("eagle", "gradcam")), vlm, table, qwen, experiment="eagle_coco")
    assert len(broken) == 1 and broken["note"].iloc[0].startswith("not made: metrics: method 'gradcam'")
    made = compare_with_paper(_metrics(), SimpleNamespace(fingerprint="f00d", device="cuda:0"), table, qwen,
                              experiment="eagle_coco")
    page = paper_section(made)
    assert "52 of the paper's 52 cells" in page and "max_memory_allocated" in page and "f00d" in page


def test_the_template_wires_the_comparison_into_the_published_report():
    from eagle_pipelines.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    for name in ("eagle_coco", "eagle_mmvp"):
        nodes = {n.name: n for n in pipelines[name].nodes}
        compare_node = nodes[f"{name}.reporting.compare_with_paper"]
        assert compare_node.inputs == [f"{name}.metrics", "vlm", "paper_tables", "params:paper_comparison"]
        assert compare_node.func.keywords == {"experiment": name}
        assert f"{name}.paper_comparison" in nodes[f"{name}.reporting.publish_report"].inputs


def test_a_damaged_table_stops_a_run_before_any_node(tmp_path):
    from eagle_pipelines.hooks import missing_input
    from eagle_pipelines.io import PaperTablesDataset

    assert missing_input("paper_tables", PaperTablesDataset()) is None
    bad = tmp_path / "paper_tables.csv"
    bad.write_text("task,level,model,method,metric,value\nmmvp,sentence,X,eagle,ahc,oops\n")
    problem = missing_input("paper_tables", PaperTablesDataset(str(bad)))
    assert problem.startswith("'paper_tables': ") and "line 2: value" in problem and "\n" not in problem


# --- cost -----------------------------------------------------------------------------------------------------------
def test_the_cost_arithmetic_by_hand():
    from eagle_pipelines.api import expected_forward_passes
    from eagle_pipelines.paper_cost import baseline_passes, evaluation_passes, hours, load_params, table_costs

    assert evaluation_passes(64, 64, 4) == 2 * 64 + 4 * 64 + 2 * 64 * 4  # 896
    settings = {"llava_cam": {"samples": 50}, "igos_pp": {"iterations": 5, "ig_steps": 10}}
    assert baseline_passes(["llava_cam"], settings, 64, "word") == 1 + 3 * 50
    assert baseline_passes(["igos_pp"], settings, 64, "sentence") == 1 + 3 * 5 * 4 * 10 + 2
    assert baseline_passes(["igos_pp"], settings, 64, "word") == 1 + 3 * 5 * 4 * 10
    assert baseline_passes(["tam", "captum"], settings, 64, "word") == 1 + 1 + 65
    assert hours(3600, 0.5) == 0.5

    params = load_params("qwen2_5_vl_3b")
    n = params["superpixels"].n_segments
    search, exact = expected_forward_passes("greedy", n)
    assert (search, exact) == (n * (n + 1), True)
    tables = {t.table: t for t in table_costs(params, search)}
    caption = tables["coco_caption/sentence"]
    assert caption.samples == params["eval_data"].coco.images
    steps, methods = params["evaluation"].pixel_steps, list(params["baselines"].methods)
    assert caption.evaluation == 2 * n + 4 * steps + 2 * steps * len(methods)
    assert caption.generation == params["eagle_coco"].max_new_tokens
    assert caption.passes == caption.samples * (caption.search + caption.evaluation + caption.baselines
                                                + caption.generation)
    assert tables["coco_caption/word"].generation == 0
    assert tables["mmvp/sentence"].samples == (params["eagle_mmvp"].max_questions or 300)


def test_the_gpu_figure_is_the_papers_own_rate_and_labelled_an_assumption(table, capsys):
    from eagle_pipelines.paper_cost import main, paper_seconds_per_pass

    rate = paper_seconds_per_pass("Qwen2.5-VL 3B")
    assert rate == pytest.approx(_cell(table, "coco_caption", "sentence", "Qwen2.5-VL 3B", "eagle",
                                       "seconds_per_sample") / 4160)
    assert paper_seconds_per_pass(None) is None
    assert main(["--model", "qwen2_5_vl_3b"]) == 0
    out = capsys.readouterr().out
    assert "ASSUMPTION, not measured here" in out and "coco_caption/word" in out
    total = int(out.split("\ntotal")[1].split()[0].replace(",", ""))
    assert float(out.split("\ntotal")[1].split()[1]) == pytest.approx(total * rate / 3600, abs=0.06)
    assert main(["--model", "toy"]) == 0 and "give --seconds-per-pass or --measure" in capsys.readouterr().out
    assert main(["--model", "qwen9"]) == 2 and "not a model preset" in capsys.readouterr().err
    assert main(["--model", "llava_1_5_7b", "--seconds-per-pass", "0.01"]) == 0
    assert "0.01 (given)" in capsys.readouterr().out
    assert math.isfinite(rate)


def test_the_coverage_command_reads_published_comparisons(tmp_path, table, capsys):
    coco = compare(_metrics(), table, experiment="eagle_coco", preset="qwen2_5_vl_3b", paper_model="Qwen2.5-VL 3B")
    mmvp = compare(_metrics(levels=("sentence",)), table, experiment="eagle_mmvp", preset="qwen2_5_vl_3b",
                   paper_model="Qwen2.5-VL 3B")
    assert paper.main([str(tmp_path / "absent.csv")]) == 1
    assert "no comparison was read" in capsys.readouterr().out
    coco.to_csv(tmp_path / "coco.csv", index=False)
    assert paper.main([str(tmp_path / "coco.csv")]) == 1
    assert "Qwen2.5-VL 3B: 52 of the paper's 76 cells covered" in capsys.readouterr().out
    mmvp.to_csv(tmp_path / "mmvp.csv", index=False)
    assert paper.main([str(tmp_path / "coco.csv"), str(tmp_path / "mmvp.csv"), str(tmp_path / "absent.csv")]) == 0
    out = capsys.readouterr().out
    assert "in all: 76 of 76 cells" in out and "absent.csv: not read" in out
