"""The `paper` environment: its configuration resolves to the paper's setting, a missing dataset or checkpoint stops
the run before any node with the path and how to obtain it, and a tiny run on a COCO fixture goes end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kedro.framework.session import KedroSession
from PIL import Image

from eagle_pipelines.hooks import MissingInputError
from eagle_pipelines.parameters import PARAMETER_MODELS, ParameterError, parse
from tests.coco_fixtures import make_coco
from tests.conftest import MODEL_DIR

PAPER_PROMPT = ("Describe the image in one factual English sentence of no more than 20 words. Do not include "
                "information that is not clearly visible.")  # the reference's caption prompt, both sentences


def _context(project: Path, runtime_params: dict | None = None):
    session = KedroSession.create(project_path=project, env="paper", runtime_params=runtime_params or {})
    return session, session.load_context()


def _run(project: Path, params: dict) -> None:
    with KedroSession.create(project_path=project, env="paper", runtime_params=params) as session:
        session.run(pipeline_names=["eagle_coco"])


def test_the_paper_configuration_resolves_to_the_papers_setting(project):
    session, context = _context(project)
    # Kedro hands typed groups as their models; compare their values
    params = {k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in context.params.items()}
    for group in PARAMETER_MODELS.keys() & params.keys():
        parse(group, params[group])  # every group is valid
    assert params["superpixels"]["n_segments"] == 64
    # the reference's regions: OpenCV SLICO (ruler 20, 20 iterations) on the photo, masked before the processor
    assert (params["superpixels"]["backend"], params["superpixels"]["ruler"], params["superpixels"]["num_iterations"],
            params["superpixels"]["compose"]) == ("opencv", 20.0, 20, "processor")
    # the reference's targets: the end-of-turn token at sentence level, one token per image at word level
    assert params["attribution"]["end_token"] is True and params["attribution"]["word_selection"] == "reference"
    assert params["reporting"]["headline_protocol"] == "regions"
    assert params["attribution"]["lambda1"] == params["attribution"]["lambda2"] == 1.0
    assert params["attribution"]["strategy"] == "greedy" and params["attribution"]["word_targets"] == "objects"
    assert params["eagle_coco"]["prompt"] == PAPER_PROMPT
    assert params["eval_data"]["source"] == "coco" and params["eval_data"]["coco"]["images"] == 275
    assert params["evaluation"]["pixel_steps"] == 64
    # Soft merge: what the paper files do not name stays as in base.
    assert params["superpixels"]["compactness"] == 10.0 and params["shapes"]["splits"]["eval"] == 60
    assert "person" in params["eval_data"]["coco"]["words"]

    catalog = context.config_loader["catalog"]
    vlm = catalog["vlm"]
    assert (vlm["hub_id"], vlm["path"], vlm["family"], vlm["dtype"], vlm["device"]) == (
        "Qwen/Qwen2.5-VL-3B-Instruct", None, "qwen_vl", "bfloat16", "cuda")
    assert "huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct" in vlm["missing_hint"]
    coco = context.catalog.get("coco_val2017")._describe()
    assert coco["path"].endswith("data/01_raw/coco") and coco["images"] == "val2017"
    assert coco["instances"] == "annotations/instances_val2017.json"
    assert context.catalog.get("eagle_coco.eval_split")._describe()["path"].endswith(
        "data/02_intermediate/eagle_coco_paper/eval")
    assert str(context.catalog.get("eagle_coco.metrics")._describe()["filepath"]).endswith(
        "data/08_reporting/eagle_coco_paper/qwen2_5_vl_3b/tables/metrics.csv")
    assert context.catalog.get("eagle_coco.report")._describe()["path"].endswith(
        "data/08_reporting/eagle_coco_paper/qwen2_5_vl_3b")
    session.close()


def test_a_model_preset_and_the_coco_folder_are_chosen_by_runtime_parameters(project, tmp_path):
    session, context = _context(project, {"model": "llava_1_5_7b", "coco_root": str(tmp_path / "elsewhere")})
    vlm = context.config_loader["catalog"]["vlm"]
    assert (vlm["hub_id"], vlm["family"], vlm["dtype"], vlm["device"]) == (
        "llava-hf/llava-1.5-7b-hf", "llava", "float16", "cuda")
    assert str(context.catalog.get("eagle_coco.answers")._describe()["filepath"]).endswith(
        "eagle_coco_paper/llava_1_5_7b/answers.json")
    assert context.catalog.get("coco_val2017")._describe()["path"] == str(tmp_path / "elsewhere")
    session.close()
    session, context = _context(project, {"model": "qwen2_5_vl_3b_local"})
    vlm = context.config_loader["catalog"]["vlm"]
    assert vlm["hub_id"] is None and vlm["path"].endswith("data/06_models/Qwen2.5-VL-3B-Instruct")
    session.close()


def test_a_wrong_source_is_named():
    with pytest.raises(ParameterError, match=r"eval_data\.source"):
        parse("eval_data", {"source": "imagenet"})


@pytest.mark.slow
def test_missing_coco_and_checkpoint_stop_the_run_before_any_node(project):
    with pytest.raises(MissingInputError) as error:
        _run(project, {})
    message = str(error.value)
    assert "nothing was run" in message
    assert f"{project}/data/01_raw/coco/val2017/ (the images folder)" in message
    assert f"{project}/data/01_raw/coco/annotations/instances_val2017.json" in message
    assert "cocodataset.org" in message and "docs/paper.md" in message
    assert "'Qwen/Qwen2.5-VL-3B-Instruct' is not in the local Hugging Face cache" in message
    assert "huggingface-cli download Qwen/Qwen2.5-VL-3B-Instruct" in message
    assert not (project / "data").exists()  # no node ran


@pytest.mark.slow
def test_a_missing_checkpoint_alone_is_named_with_its_path(project, tmp_path):
    make_coco(tmp_path / "coco", n_plain=0)
    with pytest.raises(MissingInputError) as error:
        _run(project, {"model": "toy", "coco_root": str(tmp_path / "coco")})
    message = str(error.value)
    assert f"no model checkpoint (a folder with config.json) at '{project / MODEL_DIR}'" in message
    assert "kedro run --pipeline=toy_model" in message and "coco" not in message.split("'vlm'")[0]
    assert not (project / "data" / "02_intermediate").exists()


TINY = {
    "eval_data": {"coco": {"images": 3, "seed": 0}},
    "eagle_coco": {"max_new_tokens": 4, "prompt": "Describe the image."},  # the tiny vocabulary's prompt
    "superpixels": {"n_segments": 6},
    "evaluation": {"pixel_steps": 4},
    "reporting": {"figure_samples": 2},
    "baselines": {"methods": []},  # the COCO path of EAGLE only (the baselines have their own tests)
    # the tiny random model never ends an answer within 4 tokens, so there is no end token to explain
    # (tests/paper/test_reference_list.py runs the paper targets end to end)
    "attribution": {"end_token": False},
}


@pytest.mark.slow
def test_a_tiny_paper_run_on_a_coco_fixture_goes_end_to_end(project, tmp_path, tiny_model, tiny_processor):
    """The COCO path of eagle_coco with the paper's configuration, on the CPU: a 7-image COCO fixture and a tiny
    random-weight Qwen2.5-VL saved where the `toy` preset looks; the photos are not square, as COCO's are not."""
    from eagle_pipelines.core.images import read_image
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    made = make_coco(tmp_path / "coco", n_plain=3)
    QwenVLAdapter(tiny_model, tiny_processor).save(project / MODEL_DIR)
    _run(project, {"model": "toy", "coco_root": str(tmp_path / "coco"), **TINY})

    split = project / "data/02_intermediate/eagle_coco_paper/eval"
    instances = json.loads((split / "annotations/instances.json").read_text())
    ids = [i["id"] for i in instances["images"]]
    # the caption sample (3 annotated images) and the word level's candidates per category (the reference's rule:
    # eval_data.coco.word_sample: per_category), each image marked with the levels it serves
    caption_ids = [i["id"] for i in instances["images"] if "caption" in i["samples"]]
    assert len(caption_ids) == 3 and set(ids) <= {1, 2, 4, 10, 11, 12}
    assert {i["id"] for i in instances["images"] if "word" in i["samples"]} == {
        i for c in instances["info"]["word_candidates"] for i in c["image_ids"]}
    for image_id in ids:  # the split keeps the JPEG files as they are (copied, never decoded to be saved)
        name = f"{image_id:012d}.jpg"
        assert (split / "images" / name).read_bytes() == (tmp_path / "coco/val2017" / name).read_bytes()
        assert np.array_equal(read_image(split / "images" / name), made["pixels"][image_id])
    if 1 in ids:  # the two people of image 1 are one object
        assert [a["instance_ids"] for a in instances["annotations"] if a["image_id"] == 1] == [[11, 12], [13]]
    captions = json.loads((split / "annotations/captions.json").read_text())
    assert {a["image_id"] for a in captions["annotations"]} == set(ids)

    out = project / "data/07_model_output/eagle_coco_paper/toy/answers.json"
    answers = json.loads(out.read_text())
    assert [a["image_id"] for a in answers["answers"]] == sorted(ids)
    assert all(a["prompt"] == "Describe the image." for a in answers["answers"])
    eval_list = (project / "data/05_model_input/eagle_coco_paper/toy/eval_list.csv").read_text().splitlines()
    assert len(eval_list) == len(ids) + 1 and eval_list[1].split(",")[2] == f"{sorted(ids)[0]:012d}.jpg"
    assert "caption 0 of image" in eval_list[1]
    assert len(list((project / "data/07_model_output/eagle_coco/attributions/sentence").glob("*.npz"))) == 3
    import pandas as pd

    metrics = pd.read_csv(project / "data/08_reporting/eagle_coco_paper/toy/metrics.csv")
    sentence = metrics[metrics.level == "sentence"]
    assert (sentence.n_samples == 3).all() and sentence.insertion_auc.between(0, 1).all()
    assert (project / "data/08_reporting/eagle_coco_paper/toy/report.html").stat().st_size > 1000
    # the paper's tables beside the run's, published beside metrics.csv: the toy preset has no paper cells
    comparison = pd.read_csv(project / "data/08_reporting/eagle_coco_paper/toy/paper_comparison.csv")
    assert len(comparison) == 1 and "'toy' has no cells in the paper's tables" in comparison["note"].iloc[0]
    assert "The paper's tables beside this run" in (
        project / "data/08_reporting/eagle_coco_paper/toy/report.html").read_text()


def _run_base(project: Path, pipeline: str) -> None:
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=[pipeline])


@pytest.mark.slow
def test_the_mmvp_pipeline_reads_a_local_copy_and_names_what_is_missing(project):
    with pytest.raises(MissingInputError) as error:
        _run_base(project, "mmvp")
    message = str(error.value)
    assert f"'mmvp_questions': nothing at '{project}/data/01_raw/mmvp/Questions.csv'" in message
    assert "'mmvp_images'" in message and "MMVP Images" in message

    raw = project / "data/01_raw/mmvp"
    (raw / "MMVP Images").mkdir(parents=True)
    (raw / "Questions.csv").write_text(
        "Index,Question,Options,Correct Answer\n"
        "1,\"Is the dog's tail up, or down?\",(a) Up (b) Down,(a)\n"
        "2,\"Is the dog's tail up, or down?\",(a) Up (b) Down,(b)\n")
    for k in (1, 2):
        Image.fromarray(np.full((32, 48, 3), 40 * k, dtype=np.uint8)).save(raw / "MMVP Images" / f"{k}.jpg")
    _run_base(project, "mmvp")
    import pandas as pd

    frame = pd.read_csv(project / "data/05_model_input/mmvp/eval_list.csv")
    assert frame.image_id.tolist() == [1, 2] and frame.reference.tolist() == ["(a) Up", "(b) Down"]
    assert frame.prompt[0].splitlines() == ["Is the dog's tail up, or down?", "(a) Up", "(b) Down",
                                            "Answer with the option's letter from the given choices directly."]


@pytest.mark.slow
def test_a_cuda_model_on_a_machine_without_cuda_stops_before_any_node(project, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    make_coco(tmp_path / "coco", n_plain=0)
    folder = project / "data/06_models/Qwen2.5-VL-3B-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    with pytest.raises(MissingInputError, match=r"'vlm': the model is configured for device 'cuda', but torch sees "
                                                r"no CUDA device"):
        _run(project, {"model": "qwen2_5_vl_3b_local", "coco_root": str(tmp_path / "coco")})
    assert not (project / "data" / "02_intermediate").exists()


@pytest.mark.slow
def test_the_embedded_default_does_not_need_coco(project):
    """In conf/base, coco_val2017 is declared but read only when eval_data.source is coco: a run without a model
    names the model and not COCO; with the source switched to coco, COCO is named too."""
    with pytest.raises(MissingInputError) as error:
        _run_base(project, "eagle_coco")
    assert "'vlm'" in str(error.value) and "coco_val2017" not in str(error.value)
    with KedroSession.create(project_path=project, runtime_params={"eval_data": {"source": "coco"}}) as session:
        with pytest.raises(MissingInputError, match=r"'coco_val2017'.*data/01_raw/coco/val2017/"):
            session.run(pipeline_names=["eagle_coco"])
