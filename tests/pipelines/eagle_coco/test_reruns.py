"""Kedro's own rerun tools on eagle_coco give right answers (tiny configuration, the shipped model):
``--only-missing-outputs`` after a parameter change, ``--from-nodes`` with a stale input, a shrunken evaluation
list, a new data seed. Each checks the rows, n, that nothing stale is read and nothing is overwritten by a failing
run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession

from eagle_pipelines.provenance import StaleInputError
from tests.conftest import copy_project

TINY = {"shapes": {"splits": {"eval": 3}}, "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4},
        "reporting": {"figure_samples": 1}, "eagle_coco": {"max_new_tokens": 8}, "baselines": {"methods": ["tam"]}}
OUT = Path("data/07_model_output/eagle_coco")
REPORT = Path("data/08_reporting/eagle_coco")
MODELS: list[int] = []  # id() of the model object each node received


def _merge(base: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def _run(project: Path, extra: dict | None = None, **kwargs) -> set[str]:
    """Runs eagle_coco; returns the names of the nodes that ran."""
    from kedro.framework.hooks import hook_impl

    ran: set[str] = set()

    class Recorder:
        @hook_impl
        def before_node_run(self, node):
            ran.add(node.name.rsplit(".", 1)[-1])

        @hook_impl
        def after_dataset_loaded(self, dataset_name, data):
            if dataset_name == "vlm":
                MODELS.append(id(data))

    with KedroSession.create(project_path=project, runtime_params=_merge(TINY, extra or {})) as session:
        session._hook_manager.register(Recorder())
        session.run(pipeline_names=["eagle_coco"], **kwargs)
    return ran


def _files(folder: Path, pattern: str) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob(pattern)}


def _history(project: Path) -> list[str]:
    return sorted(p.name for p in (project / REPORT / "history").iterdir() if not p.name.startswith("."))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A project copy with the shipped model, after one full tiny run."""
    project = copy_project(tmp_path_factory.mktemp("reruns"), shipped_model=True)
    MODELS.clear()
    assert len(_run(project)) == 14  # draw_table draws the metrics table before publish_report
    assert len(MODELS) == 8 and len(set(MODELS)) == 1  # eight nodes read the model; it was loaded once
    return project


@pytest.mark.slow
def test_a_noop_rerun_with_only_missing_outputs_runs_nothing_and_keeps_the_history(tiny):
    history = _history(tiny)
    assert _run(tiny, only_missing_outputs=True) == set()
    assert _history(tiny) == history
    attributions = _files(tiny / OUT / "attributions", "*")
    assert len(_run(tiny)) == 14  # a plain rerun runs every node, makes no item and publishes nothing new
    assert _files(tiny / OUT / "attributions", "*") == attributions
    assert _history(tiny) == history


@pytest.mark.slow
def test_a_new_lambda2_with_only_missing_outputs_recomputes_exactly_what_it_reaches(tiny):
    before_sp = _files(tiny / "data/02_intermediate/eagle_coco/superpixels", "*.npz")
    before_maps = _files(tiny / OUT / "baselines", "*.npz")
    answers_mtime = (tiny / OUT / "answers.json").stat().st_mtime_ns
    ran = _run(tiny, {"attribution": {"lambda2": 0.5}}, only_missing_outputs=True)
    # the superpixels and answers do not depend on lambda2; targets and baselines read params:attribution but
    # reuse every item (same fingerprints)
    assert {"prepare_eval_split", "build_eval_list", "generate_answers", "compute_superpixels"}.isdisjoint(ran)
    assert {"explain", "evaluate", "aggregate_metrics", "publish_report"} <= ran
    assert (tiny / OUT / "answers.json").stat().st_mtime_ns == answers_mtime
    assert _files(tiny / "data/02_intermediate/eagle_coco/superpixels", "*.npz") == before_sp
    assert _files(tiny / OUT / "baselines", "*.npz") == before_maps  # not one baseline map recomputed
    attributions = json.loads((tiny / OUT / "attributions.json").read_text())
    assert attributions["params"]["attribution"]["lambda2"] == 0.5
    from eagle_pipelines.io.items import Manifest

    manifest = Manifest(attributions)
    assert all(manifest.load(k).lambda2 == 0.5 for k in manifest.items)
    metrics = pd.read_csv(tiny / REPORT / "metrics.csv")
    for level, group in metrics.groupby("level"):
        assert group.n_samples.nunique() == 1, level  # every row of a level covers the same targets
    # and back to the default: everything is in the stores already, nothing is searched again
    eagle_files = _files(tiny / OUT / "attributions", "*.npz")
    _run(tiny, only_missing_outputs=True)
    assert _files(tiny / OUT / "attributions", "*.npz") == eagle_files


@pytest.mark.slow
def test_from_nodes_with_attributions_of_other_parameters_stops_before_writing_anything(tiny):
    metrics = (tiny / REPORT / "metrics.csv").read_bytes()
    history = _history(tiny)
    with pytest.raises(StaleInputError) as err:
        _run(tiny, {"attribution": {"lambda2": 0.25}}, from_nodes=["eagle_coco.evaluation.evaluate"])
    message = str(err.value)
    assert "eagle_coco.attributions" in message and "--to-outputs=" in message and "nothing was run" in message
    assert (tiny / REPORT / "metrics.csv").read_bytes() == metrics
    assert _history(tiny) == history
    # with the attributions current, the same partial run works from the cached intermediates
    ran = _run(tiny, from_nodes=["eagle_coco.evaluation.evaluate"])
    assert "explain" not in ran and "evaluate" in ran


@pytest.mark.slow
def test_a_shrunken_evaluation_list_gives_a_table_over_exactly_its_targets(tiny):
    _run(tiny, {"eagle_coco": {"max_images": 1}, "attribution": {"lambda2": 0.75}}, only_missing_outputs=True)
    metrics = pd.read_csv(tiny / REPORT / "metrics.csv")
    sentence = metrics[metrics.level == "sentence"]
    assert set(sentence.n_samples) == {1}
    targets = json.loads((tiny / "data/05_model_input/eagle_coco/targets.json").read_text())["targets"]
    word_targets = [t for t in targets if t["level"] == "word"]
    assert {t["image_id"] for t in targets} == {3_000_000}
    word = metrics[metrics.level == "word"]
    assert set(word.n_samples) == {len(word_targets)}
    per_sample = pd.read_csv(tiny / REPORT / "metrics_per_sample.csv")
    assert set(per_sample.image_id) == {3_000_000}


@pytest.mark.slow
def test_a_new_data_seed_never_reuses_the_old_images_results(tiny):
    _run(tiny, only_missing_outputs=True)  # the default configuration again: all from the stores
    old_answers = json.loads((tiny / OUT / "answers.json").read_text())["answers"]
    old_items = json.loads((tiny / OUT / "attributions.json").read_text())["items"]
    _run(tiny, {"shapes": {"seed": 4242}}, only_missing_outputs=True)
    answers = json.loads((tiny / OUT / "answers.json").read_text())["answers"]
    assert [a["image_id"] for a in answers] == [a["image_id"] for a in old_answers]  # same ids...
    assert all(a["image_sha"] != b["image_sha"] for a, b in zip(answers, old_answers))  # ...other pictures
    items = json.loads((tiny / OUT / "attributions.json").read_text())["items"]
    for key, info in items.items():  # every item made from the new bytes, none read back from the old ones
        assert info["image_sha"] in {a["image_sha"] for a in answers}
        assert old_items.get(key, {}).get("fp") != info["fp"]
    assert old_items  # (the old run had items)
    targets = json.loads((tiny / "data/05_model_input/eagle_coco/targets.json").read_text())["targets"]
    metrics = pd.read_csv(tiny / REPORT / "metrics.csv")
    for level in ("sentence", "word"):
        n = sum(t["level"] == level for t in targets)
        assert set(metrics[metrics.level == level].n_samples) == {n}, level
