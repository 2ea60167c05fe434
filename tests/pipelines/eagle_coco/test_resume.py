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

import numpy as np
import pandas as pd
import pytest
from kedro.framework.session import KedroSession

from eagle_pipelines.models.qwen_vl import QwenVLAdapter

from tests.conftest import MODEL_DIR

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
    QwenVLAdapter(tiny_model, tiny_processor).save(project / MODEL_DIR)
    return project


def _done(folder: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def _run(project: Path, params: dict, **kwargs) -> None:
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["eagle_coco"], **kwargs)


@pytest.mark.slow
def test_a_killed_run_resumes_with_only_the_missing_images(tiny_project):
    out = tiny_project / "data/07_model_output/eagle_coco/attributions/sentence"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "400"}  # no wrapped log lines
    kedro = str(Path(sys.executable).with_name("kedro"))
    cmd = [kedro, "run", "--pipeline=eagle_coco", "--params", ",".join(_flat(PARAMS))]
    proc = subprocess.Popen(cmd, cwd=tiny_project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*.json"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _done(out)
    finished = {n for n in before if n.endswith(".json")}
    assert 2 <= len(finished) < 6, "the run must be killed half-way for this test to mean anything"
    # no half-written item is visible: every finished json has its npz
    assert all(n.replace(".json", ".npz") in before for n in finished)

    result = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"{len(finished)} of 6 items already made for these inputs, making {6 - len(finished)}" in log
    after = _done(out)
    assert len([n for n in after if n.endswith(".json")]) == 6
    assert all(after[n] == t for n, t in before.items() if n in finished or n.replace(".npz", ".json") in finished)


@pytest.mark.slow
def test_a_bad_image_is_skipped_named_and_retried_once_readable_and_a_corrupt_item_is_remade(tiny_project):
    data = tiny_project / "data"
    image = data / "01_raw/eagle_coco/eval/images/eval_000002.png"
    _run(tiny_project, PARAMS)
    good = image.read_bytes()
    attributions = data / "07_model_output/eagle_coco/attributions/sentence"
    assert len(list(attributions.glob("*.npz"))) == 6

    # bad images (one unreadable, e.g. read while being rewritten; one a decompression bomb's header): each named,
    # skipped and listed in the report; a 16-bit copy of another is scaled, not clipped; the rest finish
    from PIL import Image

    from tests.hostile_corpus import png_header

    bomb = data / "01_raw/eagle_coco/eval/images/eval_000001.png"
    sixteen = data / "01_raw/eagle_coco/eval/images/eval_000003.png"
    image.write_bytes(b"not a png")
    bomb.write_bytes(png_header(60000, 60000))
    pixels = np.asarray(Image.open(sixteen).convert("L"))
    Image.fromarray(pixels.astype(np.uint16) * 257).save(sixteen)
    # the split as one made from a source folder that holds these files (a COCO folder's files are copied as they
    # are): its content stamps are those of the files now (an edited split without them counts as missing)
    from eagle_pipelines.io.split_dataset import CONTENT_FILE, CocoSplitDataset

    split = data / "01_raw/eagle_coco/eval"
    assert CocoSplitDataset(str(split)).changed_files() == ["images/eval_000001.png", "images/eval_000002.png",
                                                              "images/eval_000003.png"]
    from eagle_pipelines.provenance import StaleInputError

    with pytest.raises(StaleInputError, match=r"eval_split': its files changed since it was made \(images/eval_0000"):
        _run(tiny_project, PARAMS, from_nodes=["eagle_coco.answers.generate_answers"])
    (split / CONTENT_FILE).write_text(json.dumps(CocoSplitDataset(str(split))._current_content()))
    _run(tiny_project, PARAMS, from_nodes=["eagle_coco.answers.generate_answers"])
    answers = json.loads((data / "07_model_output/eagle_coco/answers.json").read_text())
    errors = {e["image_id"]: e["error"] for e in answers["errors"]}
    assert sorted(errors) == [3000001, 3000002]
    assert "eval_000002.png" in errors[3000002] and "decompression bomb" in errors[3000001]
    assert 3000003 in {a["image_id"] for a in answers["answers"]}
    metrics = pd.read_csv(data / "08_reporting/eagle_coco/metrics.csv")
    assert set(metrics.n_samples) == {4}
    coverage = json.loads((data / "08_reporting/eagle_coco/run.json").read_text())["coverage"]
    assert any(n["item"] == "3000002" and "eval_000002.png" in n["reason"] for n in coverage["not_made"])
    assert "eval_000002.png" in (data / "08_reporting/eagle_coco/report.html").read_text()
    skipped = pd.read_csv(data / "08_reporting/eagle_coco/latest/skipped.csv")
    assert {"3000001", "3000002"} <= set(skipped["item"].astype(str))

    # readable again (the split is rewritten since its files differ from what it should be): not sticky
    _run(tiny_project, PARAMS)
    assert image.read_bytes() == good
    metrics = pd.read_csv(data / "08_reporting/eagle_coco/metrics.csv")
    assert set(metrics.n_samples) == {6}

    # a damaged attribution counts as missing: named, removed and made again; the tables are complete
    victim = sorted(attributions.glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    with KedroSession.create(project_path=tiny_project, runtime_params=PARAMS) as session:
        session.run(pipeline_names=["eagle_coco"], only_missing_outputs=True)
    from eagle_pipelines.core.attribution import Attribution

    Attribution.load(victim.with_suffix(".x"))  # loads again
    assert set(pd.read_csv(data / "08_reporting/eagle_coco/metrics.csv").n_samples) == {6}


@pytest.mark.slow
def test_a_second_run_on_the_same_data_folder_is_refused_with_a_clear_message(tiny_project):
    from filelock import FileLock

    from eagle_pipelines.provenance import ProjectLockedError

    (tiny_project / "data").mkdir(exist_ok=True)
    with FileLock(str(tiny_project / "data/.eagle.lock")):
        with pytest.raises(ProjectLockedError, match="another kedro run is writing this project's data folder"):
            _run(tiny_project, PARAMS)
    assert not (tiny_project / "data/07_model_output/eagle_coco").exists()
