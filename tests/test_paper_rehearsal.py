"""A rehearsal of the paper environment, end to end (issue 24, part 2): a user's paper data in miniature under the
project's data/01_raw (tests/paper_fixture.py), tiny random-weight checkpoints of each paper model's architecture in a
Hugging Face hub cache under the paper's hub ids, and for each model preset one `kedro run --env=paper` of
eagle_coco (sentence and word level), eagle_mmvp and eagle_repope, with only sizes reduced (images, regions, tokens,
baseline iterations) and the device set to the CPU. Nothing may be downloaded (HF_HUB_OFFLINE=1, and the cache is
unchanged after the run); every table the paper reports is produced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import copy_project
from tests.paper_fixture import HUB_IDS, write_checkpoint, write_paper_data

PIPELINES = ["eagle_coco", "eagle_mmvp", "eagle_repope"]
#: sizes only: images, regions, tokens, baseline samples and iterations, pixel steps, figures; the device and dtype
#: of a CPU machine
SIZES = ("device=cpu,dtype=float32,eval_data.coco.images=2,superpixels.n_segments=4,eagle_coco.max_new_tokens=4,"
         "eagle_mmvp.max_new_tokens=4,eagle_repope.max_new_tokens=4,eagle_repope.max_questions=2,"
         "baselines.llava_cam.samples=2,baselines.igos_pp.iterations=1,baselines.igos_pp.ig_steps=2,"
         "baselines.igos_pp.size=8,evaluation.pixel_steps=4,reporting.figure_samples=1,"
         "eagle_repope.correction.pixel_steps=4,eagle_repope.figure_samples=1")


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory):
    """The three paper checkpoints in one hub cache, built once per session."""
    cache = tmp_path_factory.mktemp("hub")
    for preset in HUB_IDS:
        write_checkpoint(cache, preset)
    return cache


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def kedro_run(project: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`kedro run` in `project`, offline, reading checkpoints from `cache` only."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(project / ".hf_home"), "KEDRO_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, "-m", "kedro", "run", "--env=paper", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(HUB_IDS))
def test_the_paper_environment_runs_end_to_end_for_each_model(preset, hub_cache, tmp_path):
    project = copy_project(tmp_path / "project")
    write_paper_data(project / "data/01_raw")
    before = _files(hub_cache)
    start = time.perf_counter()
    result = kedro_run(project, hub_cache, f"--pipelines={','.join(PIPELINES)}", "--params", f"model={preset},{SIZES}")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-4000:]
    print(f"{preset}: {seconds:.0f} s")
    assert _files(hub_cache) == before  # nothing written into the cache, nothing downloaded
    assert not (project / ".hf_home").exists() or not any((project / ".hf_home").rglob("*.safetensors"))

    tables = {p: pd.read_csv(project / f"data/08_reporting/{p}_paper/{preset}/tables/metrics.csv") for p in PIPELINES}
    coco = tables["eagle_coco"]
    # the sentence- and word-level tables of COCO: EAGLE, the random floor and the paper's baselines
    for level in ("sentence", "word"):
        rows = coco[coco.level == level]
        assert {"eagle", "random", "llava_cam", "igos_pp", "tam"} <= set(rows.method), (level, set(rows.method))
        assert rows.insertion_auc.between(0, 1).all() and rows.deletion_auc.between(0, 1).all()
    assert (coco[coco.level == "sentence"].n_samples == 2).all()  # both images explained at sentence level
    assert (coco[coco.level == "word"].n_samples == 2).all()  # each image's dog
    mmvp = tables["eagle_mmvp"]
    assert {"eagle", "random"} <= set(mmvp[mmvp.level == "sentence"].method) and (mmvp.n_samples == 2).all()
    repope = tables["eagle_repope"]
    assert {"eagle", "random", "llava_cam", "igos_pp", "tam"} <= set(repope.method), repope
    for p in PIPELINES:
        assert (project / f"data/08_reporting/{p}_paper/{preset}/report.html").stat().st_size > 1000
