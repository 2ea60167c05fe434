"""The reference's evaluation lists as input (data/reference_list.py): the five formats are recognised, a caption
or object list becomes eagle_coco's split with the same images, generated ids and targets, and a paper run
explains the listed answers by teacher forcing (nothing regenerated). The format samples are two entries of each
of the authors' lists (RuoyuChen10/EAGLE, datasets/; Qwen2.5-VL-3B token ids)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kedro.framework.session import KedroSession
from PIL import Image

from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.data.reference_list import (
    flat_ids,
    list_format,
    reference_eval_split,
    reference_record,
    reference_targets,
    split_answer,
)
from tests.coco_fixtures import make_coco
from tests.conftest import MODEL_DIR, ROOT, link_shipped_model

SAMPLES = Path(__file__).parents[1] / "fixtures" / "reference_lists"
IM_END = 151645


def _sample(name: str) -> list:
    return json.loads((SAMPLES / f"sample-{name}.json").read_text())


@pytest.mark.parametrize("name, fmt", [("caption", "caption"), ("object", "object"), ("repope_fp", "repope"),
                                       ("repope_tn", "repope"), ("mmvp", "mmvp")])
def test_each_of_the_five_formats_is_recognised(name, fmt):
    assert list_format(_sample(name)) == fmt


def test_a_file_of_another_kind_is_refused_by_name():
    with pytest.raises(CocoFormatError, match="none of the reference's list formats"):
        list_format([{"image": "a.jpg"}], "mine.json")
    with pytest.raises(CocoFormatError, match="not a reference evaluation list"):
        list_format({"images": []}, "mine.json")


def test_caption_targets_are_every_answer_token_and_the_end_token():
    """The reference's caption lists explain 27 targets for a 26-token sentence: the last is <|im_end|>."""
    entry = _sample("caption")[0]
    record = reference_record(entry, "caption", 0)
    sequence = flat_ids(entry["generated_ids"])
    n_prompt = len(sequence) - len(entry["selected_interpretation_token_id"])
    answer, end = split_answer(record, sequence[:n_prompt], {IM_END}, "416256")
    assert end == IM_END and len(answer) == 26 and len(entry["selected_interpretation_token_id"]) == 27
    targets = reference_targets(record, answer + [end], "416256")
    assert targets == {"sentence": list(range(27))}
    assert entry["words"][-1] == "" and entry["selected_interpretation_token_word_id"][-1] == IM_END


def test_an_object_entry_names_one_token_and_a_prompt_that_differs_is_refused():
    entry = _sample("object")[0]
    record = reference_record(entry, "object", 0, "coco_single_target_once_qwen25vl-3B.json")
    n_prompt = len(entry["generated_ids"]) - len(entry["output_word_id"])
    prompt = entry["generated_ids"][:n_prompt]
    answer, end = split_answer(record, prompt, {IM_END}, "385029")
    assert reference_targets(record, answer + [end], "385029") == {"word": {"position": 1, "category": "person"}}
    assert (answer + [end])[1] == entry["target_generated_id"] == 1697
    other = list(prompt)
    other[20] += 1  # e.g. another image size: another number of image placeholders
    with pytest.raises(ValueError, match=r"coco_single_target_once_qwen25vl-3B.json, entry 0 \(item 385029\): the "
                                         r"list's prompt differs from this run's prompt for the image at token 20 "
                                         r"\(list 151655, ours 151656\).*run with the prompt it was made with"):
        split_answer(record, other, {IM_END}, "385029")
    with pytest.raises(ValueError, match="does not hold its target_generated_id"):
        reference_targets({**record, "word": {**record["word"], "position": 2}}, answer + [end], "385029")


def test_an_object_list_becomes_a_split_with_the_lists_own_object(tmp_path):
    entries = _sample("object")
    names = [e["image_path"] for e in entries]
    sizes = {names[0]: (480, 640), names[1]: (427, 640)}
    images = {n.rsplit(".", 1)[0]: (lambda n=n: Image.new("RGB", sizes[n][::-1])) for n in names}
    instances = {"images": [{"id": 385029, "file_name": names[0], "height": 480, "width": 640}],
                 "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    loaders, split, captions = reference_eval_split(entries, images, instances, "sample-object.json")
    assert [im["source_file_name"] for im in split["images"]] == names  # the list's images, in its order
    assert split["images"][0]["id"] == 385029 and split["images"][1]["height"] == 427  # size from the file
    ann = split["annotations"][0]
    x1, y1, x2, y2 = entries[0]["location"]
    assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1]
    assert {c["name"] for c in split["categories"]} == {e["select_category"] for e in entries}
    assert captions["annotations"][0]["caption"] == entries[0]["gt_caption"]
    assert split["images"][0]["reference"]["word"]["position"] == entries[0]["target_generated_index"]
    with pytest.raises(CocoFormatError, match="read by eagle_repope"):
        reference_eval_split(_sample("repope_fp"), images, instances)
    with pytest.raises(CocoFormatError, match="not in the COCO images folder"):
        reference_eval_split(entries, {}, instances)


# --- a paper run on a list made with the (tiny) model itself, as the reference makes its lists -------------------
TINY = {"eval_data": {"source": "reference_list"}, "eagle_coco": {"max_new_tokens": 4, "prompt": "Describe the image."},
        "superpixels": {"n_segments": 6}, "evaluation": {"pixel_steps": 4}, "reporting": {"figure_samples": 1},
        "baselines": {"methods": []}, "attribution": {"strategy": "pooled"}}


def _write_list(adapter, coco: Path, made: dict, fmt: str, path: Path) -> list[dict]:
    """A list in the reference's format from the tiny model: the prompt the processor makes for the photo, then
    an answer the model would NOT generate greedily (the greedy answer's ids reversed), then the end token."""
    instances = json.loads((coco / "annotations/instances_val2017.json").read_text())
    tok = adapter.processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    entries = []
    annotated = {a["image_id"] for a in instances["annotations"]}
    for im in [im for im in instances["images"] if im["id"] in annotated][:3]:
        photo = made["pixels"][im["id"]]
        image = adapter.model_image(photo if photo.ndim == 3 else np.stack([photo] * 3, -1))
        prompt_ids = adapter.encode([image], "Describe the image.")["input_ids"][0].tolist()
        greedy = list(adapter.generate(image, "Describe the image.", max_new_tokens=4).token_ids)
        answer = (greedy[::-1] if len(greedy) > 1 else greedy + greedy) + [end]
        entry = {"image_path": im["file_name"], "generate_sentence": tok.decode(answer[:-1])}
        if fmt == "caption":
            entry.update(generated_ids=[prompt_ids + answer], gt_caption=["a caption"],
                         selected_interpretation_token_id=list(range(len(answer))),
                         selected_interpretation_token_word_id=answer)
        else:
            ann = next(a for a in instances["annotations"] if a["image_id"] == im["id"])
            x, y, w, h = ann["bbox"]
            entry.update(generated_ids=prompt_ids + answer, output_word_id=answer, gt_caption="a caption",
                         select_category="person", location=[x, y, x + w, y + h], segmentation=[],
                         target_generated_index=0, target_generated_id=answer[0],
                         target_generated_token=tok.convert_ids_to_tokens(answer[0]))
        entries.append(entry)
    path.write_text(json.dumps(entries))
    return entries


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["caption", "object"])
def test_a_paper_run_on_a_reference_list_explains_the_listed_answers(fmt, project, tmp_path, tiny_model,
                                                                      tiny_processor):
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    made = make_coco(tmp_path / "coco", n_plain=3)
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    adapter.save(project / MODEL_DIR)
    listed = _write_list(adapter, tmp_path / "coco", made, fmt, tmp_path / "list.json")
    params = {"model": "toy", "coco_root": str(tmp_path / "coco"), "reference_list": str(tmp_path / "list.json"),
              **TINY, "attribution": {**TINY["attribution"], "levels": ["sentence"] if fmt == "caption"
                                      else ["word"]}}
    with KedroSession.create(project_path=project, env="paper", runtime_params=params) as session:
        session.run(pipeline_names=["eagle_coco"])
    answers = json.loads((project / "data/07_model_output/eagle_coco_paper/toy/answers.json").read_text())
    assert len(answers["answers"]) == 3 and not answers["errors"]
    for a, entry in zip(answers["answers"], listed):
        sequence = flat_ids(entry["generated_ids"])
        assert a["token_ids"] + [a["end_token_id"]] == sequence[len(sequence) - len(a["token_ids"]) - 1:]
        assert a["listed"]["format"] == fmt
    targets = json.loads((project / "data/05_model_input/eagle_coco_paper/toy/targets.json").read_text())
    if fmt == "caption":  # every listed position, the end token included
        assert [t["positions"] for t in targets["targets"]] == [e["selected_interpretation_token_id"] for e in listed]
        assert all(t["token_ids"][-1] == tiny_processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
                   for t in targets["targets"])
    else:  # one token per image, on the list's object
        assert [t["positions"] for t in targets["targets"]] == [[0]] * 3
        assert all(t["meta"]["listed"] and t["meta"]["category"] == "person" for t in targets["targets"])
    metrics = (project / "data/08_reporting/eagle_coco_paper/toy/metrics.csv").read_text()
    assert ("sentence" if fmt == "caption" else "word") in metrics


def test_end_token_and_one_target_per_image_in_select_targets():
    """conf/paper's targets: sentence level adds the end-of-turn token the answer ended with (an answer cut off
    by max_new_tokens has none: skipped with the reason); word level `once` keeps one object per image and the
    first token of its word."""
    from types import SimpleNamespace

    from eagle_pipelines.data.coco import CocoObject
    from eagle_pipelines.parameters import AttributionParams
    from eagle_pipelines.pipelines.experiment.nodes import select_targets

    words = {1: "a", 2: "red", 3: "circle", 4: "blue", 5: "square", 9: "<end>"}
    tokenizer = SimpleNamespace(decode=lambda ids, **_: " ".join(words[i] for i in ids))
    objects = [CocoObject(7, "blue square", (0, 0, 2, 2), np.ones((4, 4), np.uint8)),
               CocoObject(8, "red circle", (0, 0, 2, 2), np.ones((4, 4), np.uint8))]
    split = SimpleNamespace(index=SimpleNamespace(objects=lambda image_id: objects))
    vlm = SimpleNamespace(processor=SimpleNamespace(tokenizer=tokenizer))

    def answer(item, ids, end):
        return {"item": item, "image_id": int(item), "image_sha": "s", "prompt": "p", "token_ids": ids,
                "tokens": [], "text": " ".join(words[i] for i in ids), "token_probs": [0.5] * len(ids),
                "finished": end is not None, "end_token_id": end}

    answers = {"answers": [answer("1", [1, 2, 3, 1, 4, 5], 9), answer("2", [1, 2, 3], None)]}
    params = AttributionParams(end_token=True, word_selection="once")
    out = select_targets(vlm, split, answers, params)
    sentence = [t for t in out["targets"] if t["level"] == "sentence"]
    assert [(t["item"], t["token_ids"], t["positions"]) for t in sentence] == [("1", [1, 2, 3, 1, 4, 5, 9],
                                                                                list(range(7)))]
    assert [s["key"] for s in out["skipped"] if s["level"] == "sentence"] == ["sentence/2"]
    assert "no end-of-turn token" in out["skipped"][0]["reason"]
    word = [(t["item"], t["meta"]["category"], t["positions"]) for t in out["targets"] if t["level"] == "word"]
    # the first of the image's objects (annotation order) that the answer names, not the one it names first
    # ("red circle"); the first token of its word
    assert word == [("1", "blue square", [4]), ("2", "red circle", [1])]
    each = select_targets(vlm, split, answers, AttributionParams())
    assert [(t["item"], t["meta"]["category"], t["positions"]) for t in each["targets"] if t["level"] == "word"] == [
        ("1", "blue square", [4, 5]), ("1", "red circle", [1, 2]), ("2", "red circle", [1, 2])]
    assert all(t["token_ids"][-1] != 9 for t in each["targets"])


@pytest.mark.slow
def test_an_mmvp_list_runs_eagle_mmvp_on_the_listed_answers(project, shipped_model):
    """eagle_mmvp with `source: reference_list`: the question as the reference asks it (the bare question), the
    listed answer teacher-forced (not regenerated) and every listed position explained (the shipped model, two
    shapes images written as an MMVP folder)."""
    from eagle_pipelines.data.params import ShapesParams
    from eagle_pipelines.data.shapes import generate_split

    vlm = shipped_model
    link_shipped_model(project)
    raw = project / "data/01_raw/mmvp"
    (raw / "MMVP Images").mkdir(parents=True)
    (raw / "Questions.csv").write_text("Index,Question,Options,Correct Answer\n")
    import yaml

    shapes = yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"]
    split = generate_split(ShapesParams(**{**shapes, "splits": {"train": 1, "val": 1, "eval": 2}}), "eval")
    tok = vlm.processor.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    entries = []
    for k, (name, pixels) in enumerate(sorted(split.images.items()), start=1):
        Image.fromarray(pixels).save(raw / "MMVP Images" / f"{k}.jpg", quality=95)
        ann = next(a for a in split.instances["annotations"] if a["image_id"] == split.instances["images"][k - 1]["id"])
        shape = next(c["name"] for c in split.instances["categories"] if c["id"] == ann["category_id"])
        question = f"Is there a {shape} in the image?"
        prompt_ids = vlm.encode([vlm.model_image(pixels)], question)["input_ids"][0].tolist()
        answer = [tok.convert_tokens_to_ids("No" if k == 1 else "Yes"), end]  # listed, whatever the model says
        entries.append({"question_id": str(k), "image_filename": f"{k}.jpg", "question": question,
                        "options": ["Yes", "No"], "answer": "a", "generate_sentence": tok.decode(answer[:1]),
                        "generated_ids": [prompt_ids + answer], "selected_interpretation_token_id": [0, 1],
                        "selected_interpretation_token_word_id": answer, "words": ["", ""]})
    (project / "list.json").write_text(json.dumps(entries))
    params = {"reference_list": str(project / "list.json"), "superpixels": {"n_segments": 6},
              "eagle_mmvp": {"source": "reference_list"}, "evaluation": {"pixel_steps": 4},
              "reporting": {"figure_samples": 1}, "baselines": {"methods": []}}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["eagle_mmvp"])
    answers = json.loads((project / "data/07_model_output/eagle_mmvp/answers.json").read_text())
    assert [(a["item"], a["prompt"], a["token_ids"], a["end_token_id"]) for a in answers["answers"]] == [
        (e["question_id"], e["question"], e["generated_ids"][0][-2:-1], end) for e in entries]
    targets = json.loads((project / "data/05_model_input/eagle_mmvp/targets.json").read_text())
    assert [(t["item"], t["positions"], t["token_ids"]) for t in targets["targets"]] == [
        (e["question_id"], [0, 1], e["generated_ids"][0][-2:]) for e in entries]
    assert (project / "data/08_reporting/eagle_mmvp/metrics.csv").read_text().count("sentence") >= 2


@pytest.mark.slow
def test_a_repope_list_is_read_by_eagle_repope_and_its_answers_teacher_forced(project, shipped_model):
    """The reference's RePOPE FP list (`<model>-RePOPE-FP.json`) as eagle_repope's question list: its images from a
    COCO val2014-style folder, its answers teacher-forced as listed (a "Yes" the shipped model would not give is
    kept), a listed "Yes" on a no-question explained with the list's counter token."""
    import yaml

    from eagle_pipelines.data.shapes import generate_images
    from eagle_pipelines.parameters import parse

    link_shipped_model(project)
    vlm = shipped_model
    tok = vlm.processor.tokenizer
    yes, no, end = (tok.convert_tokens_to_ids(t) for t in ("Yes", "No", "<|im_end|>"))
    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())
                   ["shapes"])
    split = generate_images(shapes, "eval", [0, 1])
    coco = project / "fixture" / "coco"
    (coco / "val2014").mkdir(parents=True)
    (coco / "annotations").mkdir()
    instances = split.instances
    present = {c["name"] for c in instances["categories"]}
    entries = []
    for n, (info, (_, pixels)) in enumerate(zip(instances["images"], sorted(split.images.items()))):
        info["file_name"] = f"COCO_val2014_{info['id']:012d}.jpg"
        Image.fromarray(pixels).save(coco / "val2014" / info["file_name"], quality=95)
        here = {c["name"] for c in instances["categories"] for a in instances["annotations"]
                if a["image_id"] == info["id"] and a["category_id"] == c["id"]}
        absent = sorted(present - here)[0]
        question = f"Is there a {absent} in the image?"
        prompt_ids = vlm.encode([vlm.model_image(pixels)], question)["input_ids"][0].tolist()
        entries.append({"id": n + 1, "image_name": info["file_name"], "question": question, "label": "no",
                        "generate_sentence": "Yes", "generated_ids": [prompt_ids + [yes, end]],
                        "selected_interpretation_token_id": [0], "selected_interpretation_token_word_id": [yes],
                        "words": ["Yes", ""], "counter_word_id": [no]})
    (coco / "annotations" / "instances_val2014.json").write_text(json.dumps(instances))
    listed = project / "fixture" / "Qwen-RePOPE-FP.json"
    listed.write_text(json.dumps(entries))
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump({"repope_source": {
        "type": "eagle_pipelines.io.coco_dataset.RepopeSourceDataset",
        "filepath": str(listed), "path": str(coco), "metadata": {"kedro-viz": {"layer": "raw"}}}}))
    params = {"eagle_repope": {"source": "repope", "correction": {"methods": ["eagle"]},
                               "answering": {"answer_reading": "reference"}},
              "superpixels": {"n_segments": 6}}
    with KedroSession.create(project_path=project, runtime_params=params) as session:
        session.run(pipeline_names=["eagle_repope"])
    out = project / "data/07_model_output/eagle_repope"
    answers = json.loads((out / "answers.json").read_text())
    assert [(a["question_id"], a["token_ids"], a["end_token_id"], a["parsed"], a["wrong"], a["listed"])
            for a in answers["answers"]] == [(e["id"], [yes], end, "yes", True, True) for e in entries]
    attributions = json.loads((out / "attributions.json").read_text())
    assert sorted(attributions["items"]) == ["1", "2"]
    for key, info in attributions["items"].items():
        meta = json.loads((out / "attributions" / f"{key}.{info['fp']}.json").read_text())
        assert meta["target_token_ids"] == [no]  # the list's counter token
