"""A rehearsal of the paper environment, end to end (issue 24, part 2): a user's paper data in miniature under the
project's data/01_raw (tests/paper_fixture.py), tiny random-weight checkpoints of each paper model's architecture in a
Hugging Face hub cache under the paper's hub ids, and for each model preset one `kedro run --env=paper` of
eagle_coco (sentence and word level), eagle_mmvp and eagle_repope, with only sizes reduced (images, regions, tokens,
baseline iterations) and the device set to the CPU. Nothing may be downloaded (HF_HUB_OFFLINE=1, and the cache is
unchanged after the run); every table the paper reports is produced."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import copy_project
from tests.paper_fixture import HUB_IDS, write_checkpoint, write_paper_data

PIPELINES = ["eagle_coco", "eagle_mmvp", "eagle_repope"]
#: sizes only: images, regions, tokens, baseline samples and iterations, pixel steps, figures; the device and dtype
#: of a CPU machine
SIZES = ("device=cpu,dtype=float32,eval_data.coco.images=2,superpixels.n_segments=4,eagle_coco.max_new_tokens=4,"
         "eagle_mmvp.max_new_tokens=4,eagle_repope.answering.max_new_tokens=4,eagle_repope.max_questions=2,"
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


def _reference_lists(project: Path, cache: Path, preset: str) -> None:
    """The reference's lists for this model in the authors' formats, where docs/paper.md puts them."""
    from huggingface_hub import constants

    from eagle_pipelines.io import VisionLanguageModelDataset
    from tests.paper_fixture import write_reference_lists

    family = {"qwen2_5_vl_3b": "qwen_vl", "llava_1_5_7b": "llava", "internvl3_5_4b": "internvl"}[preset]
    saved = constants.HF_HUB_CACHE
    constants.HF_HUB_CACHE = str(cache)
    try:
        adapter = VisionLanguageModelDataset(hub_id=HUB_IDS[preset], family=family).load()
    finally:
        constants.HF_HUB_CACHE = saved
    write_reference_lists(project / "data/01_raw/reference_lists", adapter, preset, project / "data/01_raw")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def kedro_run(project: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`kedro run` in `project`, offline, reading checkpoints from `cache` only."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(project / ".hf_home"), "KEDRO_DISABLE_TELEMETRY": "true",
           # one thread: the tiny models' matrices are too small to share, and the test machine's cores are shared
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "kedro", "run", "--env=paper", *args], cwd=project, env=env,
                            capture_output=True, text=True, timeout=900)
    (project / "kedro_run.log").write_text(result.stdout + result.stderr)  # node by node, for a failure's reader
    return result


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(HUB_IDS))
def test_the_paper_environment_runs_end_to_end_for_each_model(preset, hub_cache, tmp_path):
    project = copy_project(tmp_path / "project")
    write_paper_data(project / "data/01_raw")
    _reference_lists(project, hub_cache, preset)
    before = _files(hub_cache)
    start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = kedro_run(project, hub_cache, f"--pipelines={','.join(PIPELINES)}", "--params", f"model={preset},{SIZES}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{preset}: {time.perf_counter() - start:.0f} s wall, "
          f"{after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime:.0f} CPU-s")
    assert result.returncode == 0, result.stderr[-4000:]
    assert _files(hub_cache) == before  # nothing written into the cache, nothing downloaded
    assert not (project / ".hf_home").exists() or not any((project / ".hf_home").rglob("*.safetensors"))

    tables = {p: pd.read_csv(project / f"data/08_reporting/{p}_paper/{preset}/tables/metrics.csv") for p in PIPELINES}
    for p, table in tables.items():  # what each table holds, for the report
        levels = table.groupby(table.level if "level" in table else pd.Series("-", index=table.index))
        n = "n_samples" if "n_samples" in table else "n_explained"
        print(f"  {p}: " + "; ".join(f"{lvl}: {', '.join(sorted(set(g.method)))} (n = {g.iloc[0][n]})"
                                     for lvl, g in levels))
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
    # the paper's tables beside the run's: every cell of the paper's COCO (sentence, word) and MMVP tables for
    # this model is covered (the values are meaningless here: random weights)
    from eagle_pipelines.reporting.paper import paper_coverage, read_paper_tables

    comparisons = pd.concat([pd.read_csv(project / f"data/08_reporting/{p}_paper/{preset}/tables/paper_comparison.csv")
                             for p in ("eagle_coco", "eagle_mmvp")], ignore_index=True)
    found = paper_coverage(comparisons, read_paper_tables())
    print(f"{preset}: {found['covered']} of the paper's {found['cells']} cells covered")
    assert found["cells"] > 0 and found["covered"] == found["cells"], found["missing"]


# --- bad input on the paper path: one line naming the file and the fix, no traceback ------------------------------

@pytest.fixture(scope="session")
def llava_cache(tmp_path_factory):
    """A hub cache holding LLaVA-1.5's tiny checkpoint only (the cheapest of the three to build)."""
    cache = tmp_path_factory.mktemp("hub_llava")
    write_checkpoint(cache, "llava_1_5_7b")
    return cache


def cli_run(project: Path, cache: Path, monkeypatch, *args: str):
    """`kedro run --env=paper ...` through the project's command (eagle_pipelines.cli), in this process, offline."""
    from click.testing import CliRunner
    from huggingface_hub import constants

    from eagle_pipelines.cli import cli

    monkeypatch.chdir(project)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return CliRunner().invoke(cli, ["run", "--env=paper", *args])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@pytest.mark.slow
def test_a_missing_annotation_file_is_one_line_naming_the_file_and_the_fix(tmp_path, llava_cache, monkeypatch):
    project = copy_project(tmp_path / "project")
    write_paper_data(project / "data/01_raw")
    missing = project / "data/01_raw/coco/annotations/instances_val2014.json"
    missing.unlink()
    result = cli_run(project, llava_cache, monkeypatch, "--pipeline=eagle_repope", "--params",
                     "model=llava_1_5_7b,device=cpu,dtype=float32")
    line = _one_line_error(result)
    assert f"{missing} (the instances annotation file)" in line and "nothing was run" in line
    assert "val2014.zip, annotations_trainval2014.zip from cocodataset.org" in line
    assert not (project / "data/02_intermediate").exists()  # no node ran


@pytest.mark.slow
def test_a_hub_id_not_in_the_cache_is_one_line_naming_it_and_the_fix(tmp_path, llava_cache, monkeypatch):
    project = copy_project(tmp_path / "project")
    write_paper_data(project / "data/01_raw")
    result = cli_run(project, llava_cache, monkeypatch, "--pipeline=eagle_coco", "--params",
                     "model=internvl3_5_4b,device=cpu,dtype=float32")
    line = _one_line_error(result)
    assert f"'OpenGVLab/InternVL3_5-4B-HF' is not in the local Hugging Face cache ({llava_cache};" in line
    assert "huggingface-cli download OpenGVLab/InternVL3_5-4B-HF" in line and "nothing is downloaded" in line
    assert not (project / "data/02_intermediate").exists()


@pytest.mark.slow
def test_a_list_whose_prompt_differs_is_refused_for_its_entry_by_file_and_the_rest_finish(tmp_path, llava_cache,
                                                                                          monkeypatch):
    """A caption list whose first entry was made with another prompt than the configuration's: that entry is
    refused with one line naming the file, the entry, the words where the prompts part and the fix; the other
    entry is explained and tabled."""
    import json

    from eagle_pipelines.io import VisionLanguageModelDataset
    from tests.paper_fixture import write_reference_lists

    project = copy_project(tmp_path / "project")
    write_paper_data(project / "data/01_raw")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(llava_cache))
    adapter = VisionLanguageModelDataset(hub_id=HUB_IDS["llava_1_5_7b"], family="llava").load()
    files = write_reference_lists(project / "data/01_raw/reference_lists", adapter, "llava_1_5_7b",
                                  project / "data/01_raw")
    entries = json.loads(files["caption"].read_text())
    other = entries[0]["generated_ids"][0]
    answer = other[len(other) - len(entries[0]["selected_interpretation_token_id"]):]
    photo = np.asarray(Image.open(project / "data/01_raw/coco/val2017" / entries[0]["image_path"]).convert("RGB"))
    prompt_ids = adapter.encode([adapter.model_image(photo)], "Is there a dog in the image?")["input_ids"][0]
    entries[0]["generated_ids"] = [prompt_ids.tolist() + answer]  # made with another prompt
    files["caption"].write_text(json.dumps(entries))

    result = cli_run(project, llava_cache, monkeypatch, "--pipeline=eagle_coco", "--params",
                     f"model=llava_1_5_7b,device=cpu,dtype=float32,eval_data.source=reference_list,"
                     f"reference_list={files['caption']},attribution.levels=[sentence],baselines.methods=[],"
                     f"superpixels.n_segments=4,evaluation.pixel_steps=4,reporting.figure_samples=1")
    assert result.exit_code == 0, result.output
    answers = json.loads((project / "data/07_model_output/eagle_coco_paper/llava_1_5_7b/answers.json").read_text())
    assert [a["image_id"] for a in answers["answers"]] == [285]
    (error,) = answers["errors"]
    message = error["error"]
    assert "\n" not in message and message.startswith(f"{files['caption'].name}, entry 0 (item 139): the list's "
                                                      "prompt differs from this run's prompt")
    assert "Is there a dog" in message and "Describe the image in" in message, message  # where the prompts part
    assert "run with the prompt it was made with (eagle_coco.prompt" in message
    metrics = pd.read_csv(project / "data/08_reporting/eagle_coco_paper/llava_1_5_7b/tables/metrics.csv")
    assert (metrics[metrics.method == "eagle"].n_samples == 1).all()


def test_a_word_list_holding_every_sampled_caption_image_makes_a_split(tmp_path):
    """`reference_lists` on a small sample: when every image of the caption sample is also in the authors' word
    list, the split is the list's images (it stopped with "the COCO instances file has no image")."""
    import json

    from eagle_pipelines.data.coco_sample import CocoSampleParams, coco_eval_split

    data = write_paper_data(tmp_path / "raw")
    instances = data["instances_val2017"]
    captions = json.loads((data["coco"] / "annotations/captions_val2017.json").read_text())
    images = {im["file_name"].rsplit(".", 1)[0]: (lambda f=im["file_name"]: Image.open(data["coco"] / "val2017" / f))
              for im in instances["images"]}
    entries = []
    for im in instances["images"]:
        ann = next(a for a in instances["annotations"] if a["image_id"] == im["id"] and a["category_id"] == 18)
        x, y, w, h = ann["bbox"]
        entries.append({"image_path": im["file_name"], "gt_caption": "a dog", "generate_sentence": "Yes dog",
                        "generated_ids": [1, 2, 3, 4], "output_word_id": [3, 4], "select_category": "dog",
                        "location": [x, y, x + w, y + h], "segmentation": ann["segmentation"],
                        "target_generated_index": 1, "target_generated_id": 4, "target_generated_token": "dog"})
    params = CocoSampleParams(images=len(instances["images"]))
    loaders, split, split_captions = coco_eval_split(instances, captions, images, params,
                                                     word_list=(entries, "coco_single_target_once_x.json"))
    assert sorted(im["id"] for im in split["images"]) == sorted(im["id"] for im in instances["images"])
    assert all(im["samples"] == ["word", "caption"] for im in split["images"])
    assert split["info"]["word_list"] == "coco_single_target_once_x.json" and len(loaders) == len(entries)
