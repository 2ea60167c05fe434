"""Smoke runs of the pipelines through a KedroSession, on a tiny configuration in a copy of the project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession

from eagle_pipelines.parameters import ParameterError

from tests.conftest import MODEL_DIR

TINY = {
    "shapes": {"splits": {"train": 24, "val": 4, "eval": 3}},
    "toy_model": {
        "architecture": {"vision_depth": 1, "vision_hidden": 32, "vision_intermediate": 32, "vision_heads": 2,
                         "text_layers": 1, "text_hidden": 32, "text_intermediate": 32, "text_heads": 2,
                         "text_kv_heads": 1},
        "training": {"max_steps": 3, "batch_size": 4, "warmup_steps": 1, "log_every": 1},
        "eval_batch_size": 4,
        "max_new_tokens": 4,
    },
    "eagle_coco": {"max_new_tokens": 4},
    "superpixels": {"n_segments": 6},
    "evaluation": {"pixel_steps": 4},
    "reporting": {"figure_samples": 2},
}


def _run(project: Path, pipeline: str, params: dict) -> None:
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_name=pipeline)


def test_pipelines_are_registered():
    from eagle_pipelines.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert {"__default__", "eagle_coco", "toy_model", "data_preparation"} <= pipelines.keys()
    assert pipelines["__default__"].all_outputs() == pipelines["eagle_coco"].all_outputs()
    assert "vlm" in pipelines["toy_model"].all_outputs()
    assert "vlm" in pipelines["eagle_coco"].inputs()  # eagle_coco explains a saved model, it does not train one


@pytest.mark.slow
def test_toy_model_then_eagle_coco_on_a_tiny_configuration(project):
    _run(project, "toy_model", TINY)
    data = project / "data"
    assert len(list((data / "01_raw/shapes/train/images").glob("*.png"))) == 24
    instances = json.loads((data / "01_raw/shapes/train/annotations/instances.json").read_text())
    assert len(instances["images"]) == 24 and instances["info"]["cooccurrence"]["anchor"] == "red circle"
    model_dir = project / MODEL_DIR
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    quality = json.loads((model_dir / "quality.json").read_text())
    assert quality["images"] == 4 and quality["training_steps"] == 3
    assert 0.0 <= quality["token_accuracy"] <= 1.0
    assert (data / "08_reporting/toy_model/training_loss.png").stat().st_size > 1000

    _run(project, "eagle_coco", TINY)
    answers = json.loads((data / "07_model_output/eagle_coco/answers.json").read_text())
    assert [a["image_id"] for a in answers["answers"]] == [3_000_000, 3_000_001, 3_000_002]
    assert all(len(a["token_ids"]) == len(a["token_probs"]) <= 4 for a in answers["answers"])
    assert (data / "05_model_input/eagle_coco/eval_list.csv").read_text().startswith("item,image_id,file_name")
    assert len(list((data / "07_model_output/eagle_coco/attributions/sentence").glob("*.npz"))) == 3

    import pandas as pd

    metrics = pd.read_csv(data / "08_reporting/eagle_coco/metrics.csv")
    assert list(metrics.columns[:4]) == ["method", "level", "protocol", "n_samples"]
    assert {"insertion_auc", "deletion_auc", "ahc", "point_game_mask", "seconds_per_sample"} <= set(metrics.columns)
    sentence = metrics[metrics.level == "sentence"]
    baselines = {"llava_cam", "igos_pp", "tam", "captum"}
    assert set(zip(sentence.method, sentence.protocol)) == {("eagle", "regions"), ("eagle", "pixels"),
                                                             ("random", "regions"), ("random", "pixels")} | {
        (m, "pixels") for m in baselines}
    assert (sentence.n_samples == 3).all()
    assert (sentence[sentence.method.isin(baselines)].seconds_per_sample > 0).all()
    for method in baselines:  # one (H, W) map per image, with its seconds and peak memory
        maps = list((data / "07_model_output/eagle_coco/baselines" / method / "sentence").glob("*.npz"))
        assert len(maps) == 3, method
    assert metrics[["insertion_auc", "deletion_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    per_sample = pd.read_csv(data / "08_reporting/eagle_coco/metrics_per_sample.csv")
    assert len(per_sample) == 3 * 4 + 3 * len(baselines)
    report = (data / "08_reporting/eagle_coco/report.html").read_text()
    assert "<table" in report and "insertion_auc" in report and report.count("data:image/png;base64,") >= 3
    # published together: latest -> history/<time>/ holds the tables, figures, page and run facts
    history = [p for p in (data / "08_reporting/eagle_coco/history").iterdir() if not p.name.startswith(".")]
    assert len(history) == 1 and (data / "08_reporting/eagle_coco/latest").resolve() == history[0].resolve()
    published = {p.name for p in history[0].iterdir()}
    assert {"metrics.csv", "metrics_per_sample.csv", "report.html", "run.json"} <= published
    assert (history[0] / "figures/curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_wrong_parameter_fails_before_any_node_runs(project):
    bad = {**TINY, "shapes": {"splits": {"train": 24, "val": 0, "eval": 3}}}
    with pytest.raises(ParameterError, match=r"shapes\.splits\.val"):
        _run(project, "toy_model", bad)
    assert not (project / "data" / "01_raw").exists()


@pytest.mark.slow
def test_eagle_coco_without_a_model_says_how_to_get_one(project):
    from kedro.io.core import DatasetError

    with pytest.raises(DatasetError, match=r"kedro run --pipeline=toy_model"):
        _run(project, "eagle_coco", TINY)


@pytest.mark.slow
def test_kedro_viz_build_succeeds(project):
    import os
    import subprocess
    import sys

    kedro = Path(sys.executable).with_name("kedro")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    result = subprocess.run([str(kedro), "viz", "build"], cwd=project, env=env, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Success" in output and "ERROR" not in output, output[-3000:]
    pipeline = json.loads((project / "build" / "api" / "main").read_text())
    assert {"prepare_eval_split", "generate_answers", "vlm"} <= {n["name"] for n in pipeline["nodes"]}
    assert {"eagle_coco", "toy_model", "data_preparation"} <= {p["id"] for p in pipeline["pipelines"]}
