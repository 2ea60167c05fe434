"""eagle_mmvp: VQA with a prompt per question, end to end through the experiment template, on the embedded question
set (image pairs drawn from the shapes benchmark) and on a small local copy in MMVP's layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from PIL import Image

from eagle_pipelines.hooks import MissingInputError
from eagle_pipelines.parameters import ParameterError, parse

from tests.conftest import MODEL_DIR, ROOT, link_shipped_model

TINY = {
    "eagle_mmvp": {"embedded": {"pairs": 1}},  # 4 questions on 2 images
    "superpixels": {"n_segments": 6},
    "evaluation": {"pixel_steps": 4},
    "baselines": {"methods": ["tam"]},
    "reporting": {"figure_samples": 1},
}
QUESTIONS = ("Index,Question,Options,Correct Answer\n"
             "1,Is the circle on the left or on the right?,(a) Left (b) Right,(a)\n"
             "2,Is the circle on the left or on the right?,(a) Left (b) Right,(b)\n"
             "3,\"Is the square red, or blue?\",(a) Red (b) Blue,(b)\n")


def _shapes():
    return parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])


def _run(project: Path, params: dict) -> None:
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_name="eagle_mmvp")


@pytest.fixture
def toy_project(project):
    link_shipped_model(project)
    return project


def _outputs(project: Path, n_questions: int, n_images: int) -> tuple[pd.DataFrame, dict]:
    """Checks what every run must make: one answer per question (items distinct), one sentence-level attribution
    per answered question, metrics rows over all of them and the published report."""
    data = project / "data"
    eval_list = pd.read_csv(data / "05_model_input/eagle_mmvp/eval_list.csv", dtype={"item": str})
    assert list(eval_list.columns[:5]) == ["item", "image_id", "file_name", "prompt", "reference"]
    assert len(eval_list) == n_questions and eval_list.item.is_unique and eval_list.image_id.nunique() == n_images
    answers = json.loads((data / "07_model_output/eagle_mmvp/answers.json").read_text())
    assert [a["item"] for a in answers["answers"]] == eval_list.item.tolist()
    assert [a["prompt"] for a in answers["answers"]] == eval_list.prompt.tolist()
    assert answers["summary"]["items"] == n_questions and not answers["errors"]
    attributions = json.loads((data / "07_model_output/eagle_mmvp/attributions.json").read_text())
    assert sorted(attributions["items"]) == sorted(f"sentence/{item}" for item in eval_list.item)
    metrics = pd.read_csv(data / "08_reporting/eagle_mmvp/metrics.csv")
    assert set(metrics.level) == {"sentence"}  # no instance annotations: no word-level target
    assert set(metrics.method) == {"eagle", "random", "tam"} and (metrics.n_samples == n_questions).all()
    assert metrics.insertion_auc.between(0, 1).all()
    per_sample = pd.read_csv(data / "08_reporting/eagle_mmvp/metrics_per_sample.csv", dtype={"item": str})
    assert set(per_sample.item) == set(eval_list.item)
    report = data / "08_reporting/eagle_mmvp"
    assert (report / "report.html").stat().st_size > 1000 and (report / "latest").exists()
    run = json.loads((report / "run.json").read_text())
    assert run["targets (sentence)"] == n_questions and run["items not made"] == 0
    assert run["params"]["experiment"]["source"] in ("embedded", "mmvp")
    return eval_list, answers


# --- the embedded question set ------------------------------------------------------------------------------------
def test_embedded_pairs_differ_in_one_object_and_each_question_gets_both_answers():
    from eagle_pipelines.pipelines.eagle_mmvp.nodes import embedded_questions

    shapes = _shapes()
    params = parse("eagle_mmvp", {"embedded": {"pairs": 3}})
    images, info, rows = embedded_questions(shapes, params)
    assert [r["item"] for r in rows] == [str(k) for k in range(1, 13)]
    assert sorted(images, key=int) == [str(k) for k in range(1, 7)] and [i["id"] for i in info] == list(range(1, 7))
    frame = pd.DataFrame(rows)
    assert (frame.groupby("image_id").size() == 2).all()  # two questions on every image
    for k in range(3):
        a, b = (np.asarray(images[str(i)]) for i in (2 * k + 1, 2 * k + 2))
        changed = (a != b).any(axis=2)
        assert 0 < changed.sum() < 0.25 * changed.size  # one object recoloured, the rest identical
        names_a, names_b = info[2 * k]["objects"], info[2 * k + 1]["objects"]
        assert len(set(names_a) ^ set(names_b)) == 2  # exactly one name differs
        pair = frame[frame.pair == k]
        for prompt, asked in pair.groupby("prompt"):
            assert sorted(asked.reference) == ["No", "Yes"] and asked.image_id.nunique() == 2
            name = prompt.removeprefix("Is there a ").removesuffix(" in the image?")
            for row in asked.itertuples():
                present = info[row.image_id - 1]["objects"]
                assert (row.reference == "Yes") == (name in present)
    again = embedded_questions(shapes, params)  # seeded: the same bytes
    assert all((np.asarray(again[0][k]) == np.asarray(images[k])).all() for k in images) and again[2] == rows
    other = embedded_questions(shapes, parse("eagle_mmvp", {"embedded": {"pairs": 3, "seed": 1}}))
    assert any((np.asarray(other[0][k]) != np.asarray(images[k])).any() for k in images)


def test_parameters_are_validated_and_the_paper_file_reads_mmvp():
    with pytest.raises(ParameterError, match=r"eagle_mmvp\.embedded\.pairs"):
        parse("eagle_mmvp", {"embedded": {"pairs": 0}})
    with pytest.raises(ParameterError, match=r"eagle_mmvp\.source"):
        parse("eagle_mmvp", {"source": "coco"})
    base = yaml.safe_load((ROOT / "conf/base/parameters_eagle_mmvp.yml").read_text())["eagle_mmvp"]
    paper = yaml.safe_load((ROOT / "conf/paper/parameters_eagle_mmvp.yml").read_text())["eagle_mmvp"]
    assert parse("eagle_mmvp", base).source == "embedded"
    assert parse("eagle_mmvp", {**base, **paper}).source == "mmvp"
    assert parse("eagle_mmvp", base).prompt_units == "none"  # today's image-only outputs by default
    with pytest.raises(ParameterError, match=r"eagle_mmvp\.prompt_units"):
        parse("eagle_mmvp", {"prompt_units": "letters"})
    repope = yaml.safe_load((ROOT / "conf/base/parameters_eagle_repope.yml").read_text())["eagle_repope"]
    assert parse("eagle_repope", repope).prompt_units == "none"
    with pytest.raises(ParameterError, match=r"eagle_repope\.prompt_units"):
        parse("eagle_repope", {**repope, "prompt_units": "tokens"})


@pytest.mark.slow
def test_eagle_mmvp_on_the_embedded_set(toy_project):
    """Two questions on each image of one pair: distinct items, answers, attributions and table rows for all."""
    _run(toy_project, TINY)
    eval_list, answers = _outputs(toy_project, n_questions=4, n_images=2)
    assert (eval_list.groupby("image_id").size() == 2).all()
    assert set(eval_list.reference) == {"Yes", "No"}
    assert all(a["text"] in ("Yes", "No") for a in answers["answers"])  # the embedded model answers these
    split = toy_project / "data/01_raw/eagle_mmvp/eval"
    instances = json.loads((split / "annotations/instances.json").read_text())
    assert [i["id"] for i in instances["images"]] == [1, 2] and instances["annotations"] == []
    assert not (split / "annotations/captions.json").exists()


# --- the local MMVP copy ------------------------------------------------------------------------------------------
def _mmvp_copy(project: Path) -> None:
    """Three questions in MMVP's layout: Questions.csv and 'MMVP Images/<Index>.jpg' (one not square)."""
    from eagle_pipelines.data.shapes import generate_images

    raw = project / "data/01_raw/mmvp"
    (raw / "MMVP Images").mkdir(parents=True)
    (raw / "Questions.csv").write_text(QUESTIONS)
    split = generate_images(_shapes(), "eval", [0, 1, 2])
    for k, (_, pixels) in enumerate(sorted(split.images.items()), start=1):
        image = Image.fromarray(pixels)
        (image.resize((168, 112)) if k == 3 else image).save(raw / "MMVP Images" / f"{k}.jpg", quality=95)


@pytest.mark.slow
def test_a_missing_mmvp_copy_stops_the_run_before_any_node(project):
    params = {**TINY, "eagle_mmvp": {"source": "mmvp"}}
    with pytest.raises(MissingInputError) as error:
        _run(project, params)
    message = str(error.value)
    assert f"{project}/data/01_raw/mmvp/Questions.csv (the question list)" in message
    assert "MMVP Images/ (the images folder)" in message and "MMVP/MMVP" in message
    assert not (project / "data/01_raw/eagle_mmvp").exists()


@pytest.fixture
def mmvp_project(project):
    """The project with a tiny random Qwen2.5-VL whose word-level vocabulary knows the MMVP prompts of QUESTIONS
    (the embedded model knows only its training words and refuses others)."""
    from io import StringIO

    from eagle_pipelines.data.mmvp import MmvpParams, mmvp_eval_list
    from eagle_pipelines.data.shapes import category_names
    from eagle_pipelines.models.processing import build_processor
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter
    from eagle_pipelines.models.toy import ToyArchitecture, ToyModelParams, build_toy_model, vocabulary_texts

    prompts = mmvp_eval_list(pd.read_csv(StringIO(QUESTIONS)), {"1": 0, "2": 0, "3": 0}, MmvpParams()).prompt
    shapes = _shapes()
    processor = build_processor([*vocabulary_texts([], category_names(shapes), ToyModelParams()), *prompts],
                                shapes.image_size)
    arch = ToyArchitecture(vision_depth=1, vision_hidden=32, vision_intermediate=32, vision_heads=2, text_layers=1,
                           text_hidden=32, text_intermediate=32, text_heads=2, text_kv_heads=1)
    QwenVLAdapter(build_toy_model(processor, arch, seed=0), processor).save(project / MODEL_DIR)
    return project


@pytest.mark.slow
def test_the_paper_environment_reads_the_local_copy(project):
    with pytest.raises(MissingInputError) as error, KedroSession.create(
            project_path=project, env="paper", runtime_params={"model": "toy"}) as session:
        session.run(pipeline_name="eagle_mmvp")
    assert "'mmvp_source': The MMVP copy at" in str(error.value) and "Questions.csv (the question list)" in str(
        error.value)


@pytest.mark.slow
def test_eagle_mmvp_on_a_local_mmvp_copy(mmvp_project):
    _mmvp_copy(mmvp_project)
    _run(mmvp_project, {**TINY, "eagle_mmvp": {"source": "mmvp", "max_new_tokens": 3}})
    eval_list, _ = _outputs(mmvp_project, n_questions=3, n_images=3)
    # the split keeps MMVP's files as they are (copied, not re-encoded): the list names them
    assert eval_list.item.tolist() == ["1", "2", "3"] and eval_list.file_name.tolist() == ["1.jpg", "2.jpg", "3.jpg"]
    split = mmvp_project / "data/01_raw/eagle_mmvp/eval/images"
    assert all((split / f"{k}.jpg").read_bytes() == (mmvp_project / f"data/01_raw/mmvp/MMVP Images/{k}.jpg")
               .read_bytes() for k in (1, 2, 3))
    assert eval_list.reference.tolist() == ["(a) Left", "(b) Right", "(b) Blue"]
    assert eval_list.pair.tolist() == [0, 0, 1]
    assert eval_list.prompt[2].splitlines() == ["Is the square red, or blue?", "(a) Red", "(b) Blue",
                                                "Answer with the option's letter from the given choices directly."]
    instances = json.loads((mmvp_project / "data/01_raw/eagle_mmvp/eval/annotations/instances.json").read_text())
    assert [(i["id"], i["width"], i["height"], i["mmvp_file"]) for i in instances["images"]] == [
        (1, 112, 112, "1.jpg"), (2, 112, 112, "2.jpg"), (3, 168, 112, "3.jpg")]


# --- joint attribution: the question's words beside the regions -----------------------------------------------------
JOINT = {**TINY, "eagle_mmvp": {"embedded": {"pairs": 1}, "max_questions": 2, "prompt_units": "words"}}


def _attributions(project: Path):
    from eagle_pipelines.io.items import AttributionManifestDataset

    out = project / "data/07_model_output/eagle_mmvp"
    return AttributionManifestDataset(str(out / "attributions.json"),
                                      store={"path": str(out / "attributions"), "kind": "attribution"}).load()


@pytest.mark.slow
def test_eagle_mmvp_with_prompt_units_writes_joint_records_and_none_recomputes(toy_project):
    """prompt_units: words: each attribution is a joint record (regions and the question's words in one order, each
    step's modality) that loads back from the store, a ``joint`` metrics row with the prompt's share, the explorer
    showing the prompt; switching back to none makes new image-only items, never reading the joint ones."""
    from eagle_pipelines.core.attribution import Attribution
    from eagle_pipelines.core.joint import WORD, JointAttribution

    _run(toy_project, JOINT)
    manifest = _attributions(toy_project)
    assert len(manifest.items) == 2 and manifest.params["prompt_units"] == "words"
    joint_fps = {}
    for key, info in manifest.items.items():
        record = manifest.load(key)
        assert isinstance(record, JointAttribution) and info["prompt_units"] == "words"
        words = WORD.findall(info["prompt"])  # "Is there a red circle in the image?": 8 words
        n = int(record.labels.max()) + 1  # the image's regions
        assert [u["text"] for u in record.units] == words and record.n_image == n
        assert len(record.order) == len(record.modality) == n + len(words)
        assert record.modality.count("prompt") == len(words) and record.modality.count("image") == n
        assert sorted(record.order.tolist()) == list(range(n + len(words)))  # every candidate ranked once
        assert [m == "prompt" for m in record.modality] == [i >= n for i in record.order]
        assert np.all((record.prompt_share >= 0) & (record.prompt_share <= 1) | np.isnan(record.prompt_share))
        joint_fps[key] = info["fp"]
    metrics = pd.read_csv(toy_project / "data/08_reporting/eagle_mmvp/metrics.csv")
    joint = metrics[metrics.protocol == "joint"]
    assert list(joint.method) == ["eagle"] and int(joint.n_samples.iloc[0]) == 2
    assert joint.prompt_share.between(0, 1).all() and metrics[metrics.protocol != "joint"].prompt_share.isna().all()
    per_sample = pd.read_csv(toy_project / "data/08_reporting/eagle_mmvp/metrics_per_sample.csv")
    rows = per_sample[per_sample.protocol == "joint"]
    for key in manifest.items:  # the joint row is the record's own AUCs over the joint steps
        record = manifest.load(key)
        row = rows[rows.item.astype(str) == manifest.info(key)["item"]].iloc[0]
        assert row.insertion_auc == pytest.approx(record.aucs()["insertion_auc"], abs=1e-5)  # CSV: 6 digits
        assert row.deletion_auc == pytest.approx(record.aucs()["deletion_auc"], abs=1e-5)
    explorer = json.loads((toy_project / "data/08_reporting/eagle_mmvp/figures/explorer.json").read_text())
    view = explorer["images"][0]["views"]["answer"]
    ranked = [s for s in view["prompt"]["segments"] if "rank" in s]
    assert [s["text"] for s in ranked] == WORD.findall(explorer["images"][0]["question"])
    page = (toy_project / "data/08_reporting/eagle_mmvp/report.html").read_text()
    assert "ex-prompt" in page and "rows are image-only" in page  # the report says which rows are image-only

    _run(toy_project, {**JOINT, "eagle_mmvp": {**JOINT["eagle_mmvp"], "prompt_units": "none"}})
    manifest = _attributions(toy_project)
    assert "prompt_units" not in manifest.params
    for key, info in manifest.items.items():
        assert info["fp"] != joint_fps[key] and "prompt_units" not in info
        record = manifest.load(key)
        assert isinstance(record, Attribution) and len(record.order) == int(record.labels.max()) + 1  # regions only
    store = toy_project / "data/07_model_output/eagle_mmvp/attributions"
    assert len(list(store.rglob("*.json"))) == 4  # the joint items stay beside the new image-only ones
    metrics = pd.read_csv(toy_project / "data/08_reporting/eagle_mmvp/metrics.csv")
    assert "joint" not in set(metrics.protocol) and "prompt_share" not in metrics
