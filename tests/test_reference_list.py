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

SAMPLES = Path(__file__).parent / "fixtures" / "reference_lists"
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
    record = reference_record(entry, "object", 0)
    n_prompt = len(entry["generated_ids"]) - len(entry["output_word_id"])
    prompt = entry["generated_ids"][:n_prompt]
    answer, end = split_answer(record, prompt, {IM_END}, "385029")
    assert reference_targets(record, answer + [end], "385029") == {"word": {"position": 1, "category": "person"}}
    assert (answer + [end])[1] == entry["target_generated_id"] == 1697
    other = list(prompt)
    other[20] += 1  # e.g. another image size: another number of image placeholders
    with pytest.raises(ValueError, match="item 385029: the list's prompt tokens differ .* at position 20"):
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


@pytest.mark.parametrize("fmt", ["caption", "object"])
def test_a_paper_run_on_a_reference_list_explains_the_listed_answers(fmt, project, tmp_path, tiny_model,
                                                                      tiny_processor):
    from eagle_pipelines.models.qwen_vl import QwenVLAdapter

    made = make_coco(tmp_path / "coco", n_plain=3)
    adapter = QwenVLAdapter(tiny_model, tiny_processor)
    adapter.save(project / "data/06_models/toy_qwen2_5_vl")
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
