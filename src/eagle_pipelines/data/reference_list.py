"""The authors' evaluation lists as input: the same images, the same generated ids and the same targets.

The reference repository (RuoyuChen10/EAGLE, folder ``datasets/``) feeds its scripts JSON lists made with each model
once: per entry the image, the whole generated sequence (``generated_ids``: the chat prompt with its image
placeholders, the answer and the end-of-turn token) and the answer positions to explain. Its scripts never
regenerate: they read where the answer starts as the length of the processor's prompt for that image and explain
``generated_ids`` at those positions (teacher forcing). Formats (docs/paper.md#reference-lists):

- ``caption`` (``<model>-coco-caption.json``): ``image_path``, ``gt_caption`` (list), ``generate_sentence``,
  ``generated_ids`` ([[...]]), ``selected_interpretation_token_id`` (answer positions, the end token included),
  ``selected_interpretation_token_word_id`` (their ids), ``words``;
- ``object`` (``coco_single_target_once_<model>.json``): ``image_path``, ``gt_caption`` (str),
  ``generate_sentence``, ``generated_ids`` (flat), ``output_word_id`` (the answer's ids), ``select_category``,
  ``location`` (x1 y1 x2 y2, photo pixels), ``segmentation`` (COCO polygon), ``target_generated_index`` (one answer
  position), ``target_generated_id``, ``target_generated_token``;
- ``mmvp`` (``<model>-MMVP-VQA.json``): ``question_id``, ``image_filename``, ``question`` (the whole prompt: the
  reference asks the bare question), ``options``, ``answer``, and the caption fields; read by eagle_mmvp;
- ``repope`` (``<model>-RePOPE-FP/TN.json``): ``id``, ``image_name`` (COCO val2014), ``question``, ``label``,
  ``counter_word_id`` (the correct answer's token, explained instead of the model's) and the caption fields;
  recognised here, refused by eagle_coco and eagle_mmvp with the pipeline that reads it.

``reference_eval_split`` turns a caption or object list into eagle_coco's COCO-format split: images from the local
COCO folder (by file name), the object of an object list as its annotation (the list's own polygon and box), and
per image a ``reference`` record that the answers and targets stages use instead of generating.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from eagle_pipelines.data.coco import CocoFormatError, image_size, split_file_name

logger = logging.getLogger(__name__)

FORMATS = {
    "caption": {"image_path", "generated_ids", "selected_interpretation_token_id"},
    "object": {"image_path", "generated_ids", "output_word_id", "target_generated_index", "select_category"},
    "repope": {"image_name", "question", "label", "generated_ids", "counter_word_id"},
    "mmvp": {"question_id", "image_filename", "question", "options", "generated_ids"},
}
PIPELINE_OF = {"caption": "eagle_coco", "object": "eagle_coco", "repope": "eagle_repope", "mmvp": "eagle_mmvp"}


def list_format(entries: list, source: str = "reference list") -> str:
    """Which of the reference's list formats `entries` follow (by the fields of the first entry)."""
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        raise CocoFormatError(f"{source}: not a reference evaluation list (a JSON list of entries)")
    fields = set(entries[0])
    for name, needed in FORMATS.items():
        if needed <= fields:
            return name
    raise CocoFormatError(f"{source}: entries with fields {sorted(fields)[:8]} follow none of the reference's "
                          f"list formats ({', '.join(FORMATS)}; docs/paper.md#reference-lists)")


def flat_ids(generated_ids) -> list[int]:
    """The whole generated sequence as a flat list (caption lists nest it once: [[...]])."""
    ids = generated_ids
    while isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], list):
        ids = ids[0]
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CocoFormatError("generated_ids is not a list of token ids")
    return [int(i) for i in ids]


def reference_record(entry: dict, fmt: str, index: int) -> dict:
    """What the answers and targets stages need of one list entry: the whole sequence, the answer text, the
    sentence positions (caption lists) or the one word target (object lists), with the ids the list expects at
    them (checked against the sequence once the prompt length is known)."""
    record = {"format": fmt, "index": index, "sequence": flat_ids(entry["generated_ids"]),
              "text": str(entry.get("generate_sentence", ""))}
    if fmt in ("caption", "mmvp", "repope"):
        record["sentence_positions"] = [int(p) for p in entry["selected_interpretation_token_id"]]
        record["sentence_ids"] = [int(t) for t in entry.get("selected_interpretation_token_word_id", [])]
        if fmt == "repope":  # the correct answer's token, explained in place of the model's (wrong) one
            record["counter_ids"] = [int(t) for t in entry["counter_word_id"]]
    else:
        record["answer_ids"] = [int(t) for t in entry["output_word_id"]]
        record["word"] = {"position": int(entry["target_generated_index"]),
                          "token_id": int(entry["target_generated_id"]) if "target_generated_id" in entry else None,
                          "category": str(entry["select_category"])}
    return record


def reference_eval_split(entries: list, images: Mapping[str, Callable[[], Any]], instances: dict | None,
                         source: str = "reference list") -> tuple[dict[str, Callable], dict, dict]:
    """eagle_coco's split for a caption or object list: the images keyed by file stem, as given (``SourceImage``
    files: the split copies their bytes and decodes them only when an item is reached, so an unreadable image is
    named and skipped there), an instances dictionary (object lists: the list's own
    object per image) and a captions dictionary (the list's reference captions). Each image entry carries the
    list's ``reference`` record. Image ids and sizes come from the COCO instances file where it lists the file."""
    from eagle_pipelines.data.coco_sample import category_words, CocoSampleParams

    fmt = list_format(entries, source)
    if fmt not in ("caption", "object"):
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_coco "
                              f"(docs/paper.md#reference-lists)")
    known = {im["file_name"]: im for im in (instances or {}).get("images", [])}
    categories = {c["name"]: c for c in (instances or {}).get("categories", [])}
    split_images, annotations, captions, loaders, seen = [], [], [], {}, set()
    for k, entry in enumerate(entries):
        name = PurePosixPath(str(entry["image_path"])).name
        stem = name.rsplit(".", 1)[0]
        if stem in seen:
            raise CocoFormatError(f"{source}: entry {k} lists '{name}' a second time; a list explains each image once")
        seen.add(stem)
        if stem not in images:
            raise CocoFormatError(f"{source}: entry {k}'s image '{name}' is not in the COCO images folder; the list "
                                  "needs the val2017 images it was made on")
        info = known.get(name)
        if info is None:
            width, height = image_size(images[stem])
            info = {"id": _id_of(stem, k), "file_name": name, "width": width, "height": height}
        image_id = int(info["id"])
        split_images.append({"id": image_id, "file_name": split_file_name(stem, images[stem]),
                             "source_file_name": name, "width": int(info["width"]), "height": int(info["height"]),
                             "reference": reference_record(entry, fmt, k)})
        loaders[stem] = images[stem]
        refs = entry.get("gt_caption") or []
        for j, caption in enumerate([refs] if isinstance(refs, str) else refs):
            captions.append({"id": image_id * 100 + j, "image_id": image_id, "caption": str(caption)})
        if fmt == "object" and int(info["width"]) and int(info["height"]):  # (an unreadable image: skipped later)
            annotations.append(_list_object(entry, image_id, int(info["height"]), int(info["width"]), k,
                                            categories))
    names = sorted({a["category_name"] for a in annotations})
    cats = [{"id": int(categories[n]["id"]) if n in categories else 1000 + i, "name": n, "supercategory": "",
             "words": category_words(n, CocoSampleParams())} for i, n in enumerate(names)]
    ids = {c["name"]: c["id"] for c in cats}
    for a in annotations:
        a["category_id"] = ids[a.pop("category_name")]
    info = {"sample": {"source": "reference_list", "format": fmt, "entries": len(entries)}}
    split = {"info": info, "licenses": [], "images": split_images, "annotations": annotations, "categories": cats}
    logger.info("%s: a %s list of %d images%s", source, fmt, len(split_images),
                f", {len(annotations)} objects" if annotations else "")
    return loaders, split, {"info": info, "licenses": [], "images": split_images, "annotations": captions}


def _id_of(stem: str, k: int) -> int:
    digits = "".join(ch for ch in stem if ch.isdigit())
    return int(digits) if digits else k + 1


def _list_object(entry: dict, image_id: int, height: int, width: int, k: int, categories: dict) -> dict:
    """The list's object as a COCO annotation: its polygon rasterised at the photo's size, its box (the list's
    x1 y1 x2 y2 as COCO's x y w h)."""
    polygon = entry.get("segmentation")
    x1, y1, x2, y2 = (float(v) for v in entry["location"])
    if polygon:
        rle = mask_utils.merge(mask_utils.frPyObjects(polygon, height, width))
    else:  # no polygon: the box is the object's extent
        rle = mask_utils.encode(np.asfortranarray(_box_mask(height, width, x1, y1, x2, y2)))
    return {"id": image_id * 10 + 1, "image_id": image_id, "category_name": str(entry["select_category"]),
            "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)), "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0,
            "reference_entry": k}


def _box_mask(height: int, width: int, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = 1
    return mask


def split_answer(record: dict, prompt_ids: list[int], end_ids: set[int], item: str) -> tuple[list[int], int | None]:
    """The answer of a list entry: the sequence after the prompt this model makes for the image, checked to be
    exactly the list's prompt (else the list was made with another model, processor, prompt or image size).
    Returns the answer ids (end token excluded) and the end token id (None when the answer was cut off)."""
    sequence = record["sequence"]
    n = len(prompt_ids)
    if sequence[:n] != list(prompt_ids):
        diff = next((i for i, (a, b) in enumerate(zip(sequence, prompt_ids)) if a != b), min(len(sequence), n))
        raise ValueError(f"item {item}: the list's prompt tokens differ from this model's prompt for the image at "
                         f"position {diff} (list {sequence[diff] if diff < len(sequence) else 'ends'}, ours "
                         f"{prompt_ids[diff] if diff < n else 'ends'}): the list was made with another model, "
                         "processor, prompt or image size; use the list made for this model and prompt")
    answer = sequence[n:]
    if record["format"] == "object" and record.get("answer_ids") and record["answer_ids"] != answer:
        raise ValueError(f"item {item}: the list's output_word_id differ from its generated_ids after the prompt")
    if not answer:
        raise ValueError(f"item {item}: the list's sequence has no answer after the prompt")
    if answer[-1] in end_ids:
        return answer[:-1], int(answer[-1])
    return answer, None


def reference_targets(record: dict, token_ids: list[int], item: str) -> dict:
    """The list's targets over `token_ids` (the answer with its end token): ``sentence`` positions (caption lists)
    or the one ``word`` position (object lists), each checked against the ids the list expects there."""
    out = {}
    if record["format"] != "object":
        positions = record["sentence_positions"]
        if positions and max(positions) >= len(token_ids):
            raise ValueError(f"item {item}: the list explains answer position {max(positions)}, the answer has "
                             f"{len(token_ids)} tokens")
        expected = record.get("sentence_ids") or []
        if expected and [token_ids[p] for p in positions] != expected:
            raise ValueError(f"item {item}: the list's selected_interpretation_token_word_id are not the answer's "
                             "ids at its positions")
        out["sentence"] = positions
    else:
        word = record["word"]
        p = word["position"]
        if not 0 <= p < len(token_ids) or (word["token_id"] is not None and token_ids[p] != word["token_id"]):
            raise ValueError(f"item {item}: the list's target_generated_index {p} does not hold its "
                             f"target_generated_id {word['token_id']} in the answer")
        out["word"] = {"position": p, "category": word["category"]}
    return out


def mmvp_reference_questions(entries: list, images: Mapping[str, Callable[[], Any]],
                             source: str = "reference list") -> tuple[dict, list[dict], list[dict]]:
    """eagle_mmvp's split and list for an MMVP list: the images (from the local MMVP images folder, by file name),
    their entries with the list's ``reference`` record, and one question per entry whose prompt is the list's
    question as the reference asks it (no options, no instruction)."""
    fmt = list_format(entries, source)
    if fmt != "mmvp":
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_mmvp "
                              f"(docs/paper.md#reference-lists)")
    loaded, info, rows = {}, [], []
    for k, entry in enumerate(entries):
        name = PurePosixPath(str(entry["image_filename"])).name
        stem = name.rsplit(".", 1)[0]
        if stem in loaded:
            raise CocoFormatError(f"{source}: entry {k} lists '{name}' a second time; a list explains each image once")
        if stem not in images:
            raise CocoFormatError(f"{source}: entry {k}'s image '{name}' is not in the MMVP images folder")
        loaded[stem] = images[stem]
        width, height = image_size(images[stem])
        image_id = _id_of(stem, k)
        options = entry.get("options") or []
        letter = str(entry.get("answer", "")).strip("() ").lower()
        pick = ord(letter) - ord("a") if len(letter) == 1 else -1
        reference = f"({letter}) {options[pick]}" if 0 <= pick < len(options) else str(entry.get("answer", ""))
        file_name = split_file_name(stem, images[stem])
        info.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                     "mmvp_file": name, "pair": (image_id - 1) // 2, "reference": reference_record(entry, fmt, k)})
        rows.append({"item": str(entry["question_id"]), "image_id": image_id, "file_name": file_name,
                     "prompt": str(entry["question"]), "reference": reference, "pair": (image_id - 1) // 2})
    return loaded, info, rows


def repope_records(entries: list, source: str = "reference list") -> list[dict]:
    """The reference's RePOPE list (``<model>-RePOPE-FP.json`` / ``-TN.json``) as POPE question records for
    eagle_repope: question id, image (COCO val2014 file name), question text, label, and the list's ``listed``
    record (the whole generated sequence, the explained position, the counter token) that the answers stage
    teacher-forces instead of generating."""
    fmt = list_format(entries, source)
    if fmt != "repope":
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_repope "
                              f"(docs/paper.md#reference-lists)")
    records = []
    for k, entry in enumerate(entries):
        records.append({"question_id": entry.get("id", k + 1), "image": PurePosixPath(str(entry["image_name"])).name,
                        "text": str(entry["question"]), "label": str(entry["label"]), "kind": "repope",
                        "listed": reference_record(entry, fmt, k)})
    return records


def listed_answer(model, pixels: np.ndarray, prompt: str, item: str, record: dict):
    """The answer a list entry gives for an image, as ``models/base.py: Answer``: its generated ids after the
    prompt `model` makes for the image (which must be the list's own prompt tokens, ``split_answer``), each
    token's probability teacher-forced on the intact image; and the list's targets over the answer with its end
    token (``reference_targets``)."""
    from eagle_pipelines.models.base import Answer

    image = model.model_image(pixels)
    prompt_ids = model.encode([image], prompt)["input_ids"][0].tolist()
    tok = model.processor.tokenizer
    gen = model.model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
    ids, end = split_answer(record, prompt_ids, set(eos if isinstance(eos, list) else [eos]), item)
    full = ids + ([end] if end is not None else [])
    probs = model.scorer(image, prompt, full, list(range(len(full))), memory_budget_mb=0)(
        np.ones((1, *image.shape[:2]), dtype=bool))[0]
    answer = Answer(prompt=prompt, token_ids=tuple(ids), tokens=tuple(tok.convert_ids_to_tokens(ids)),
                    text=tok.decode(ids, skip_special_tokens=True),
                    token_probs=tuple(float(p) for p in probs[:len(ids)]), finished=end is not None,
                    end_token_id=end)
    if record.get("text") and answer.text.strip() != record["text"].strip():
        logger.warning("item %s: the list's sentence %r decodes here as %r", item, record["text"], answer.text)
    return answer, reference_targets(record, full, item)
