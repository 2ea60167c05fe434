"""eagle_coco is resumable per image: a killed run loses nothing, parameters invalidate only what they change,
and a bad image is skipped with its reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession

from eagle_pipelines.models.qwen_vl import QwenVLAdapter

PARAMS = {
    "shapes": {"splits": {"train": 4, "val": 4, "eval": 6}},
    "eagle_coco": {"max_new_tokens": 3},
    "superpixels": {"n_segments": 12},
    "attribution": {"batch_size": 1, "levels": ["sentence"]},
}


def _flat(params: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in params.items():
        if isinstance(v, dict):
            out += _flat(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={json.dumps(v) if isinstance(v, list) else v}")
    return out


@pytest.fixture
def tiny_project(project, tiny_model, tiny_processor):  # noqa: F811
    QwenVLAdapter(tiny_model, tiny_processor).save(project / "data/06_models/toy_qwen2_5_vl")
    return project


def _done(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _run(project: Path, params: dict, **kwargs) -> None:
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_name="eagle_coco", **kwargs)


def test_a_killed_run_resumes_with_only_the_missing_images(tiny_project):
    out = tiny_project / "data/07_model_output/eagle_coco/sentence"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "400"}  # no wrapped log lines
    kedro = str(Path(sys.executable).with_name("kedro"))
    cmd = [kedro, "run", "--pipeline=eagle_coco", "--params", ",".join(_flat(PARAMS))]
    proc = subprocess.Popen(cmd, cwd=tiny_project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.rglob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _done(out)
    finished = {n for n in before if n.endswith(".json")}
    assert 2 <= len(finished) < 6, "the run must be killed half-way for this test to mean anything"
    # no half-written partition is visible: every finished json has its npz
    assert all(n.replace(".json", ".npz") in before for n in finished)

    result = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(finished)} of 6 items already done, computing {6 - len(finished)}" in result.stdout + result.stderr
    after = _done(out)
    assert len([n for n in after if n.endswith(".json")]) == 6
    assert all(after[n] == t for n, t in before.items() if n in finished or n.replace(".npz", ".json") in finished)


def test_parameters_invalidate_only_what_they_change_and_a_bad_image_is_skipped(tiny_project):
    data = tiny_project / "data"
    _run(tiny_project, PARAMS)
    superpixels = _done(data / "02_intermediate/eagle_coco/superpixels")
    sentence = data / "07_model_output/eagle_coco/sentence"
    assert len(list(sentence.iterdir())) == 1 and len(superpixels) == 6

    # a search parameter: new attributions, the same superpixel files untouched
    _run(tiny_project, {**PARAMS, "attribution": {**PARAMS["attribution"], "lambda2": 0.5}})
    assert len(list(sentence.iterdir())) == 2
    assert _done(data / "02_intermediate/eagle_coco/superpixels") == superpixels

    # a corrupt image: skipped with its id and reason, the others finish
    (data / "01_raw/shapes/eval/images/eval_000002.png").write_bytes(b"not a png")
    _run(tiny_project, {**PARAMS, "superpixels": {"n_segments": 9}}, from_nodes=["build_eval_list_node"])
    folders = sorted(sentence.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    newest = folders[-1]
    assert len(list(newest.glob("*.json"))) == 6  # 5 attributions + 1 skip marker
    marker = json.loads((newest / "3000002.skipped.json").read_text())
    assert "eval_000002.png" in marker["reason"]
    answers = json.loads((data / "07_model_output/eagle_coco/answers.json").read_text())
    assert answers["errors"][0]["image_id"] == 3000002
