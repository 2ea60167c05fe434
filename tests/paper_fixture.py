"""A user's paper data, in miniature: the tree `--env=paper` reads (docs/paper.md, docs/hallucination.md), written
by the tests.

``write_paper_data(root)`` writes, under `root` (a project's ``data/01_raw``):

- ``coco/val2017/*.jpg`` and ``coco/annotations/{instances,captions}_val2017.json`` (COCO's official schema: info,
  licenses, images with their licence and URLs, annotations with polygons, areas, boxes, categories with their
  supercategory);
- ``coco/val2014/COCO_val2014_*.jpg`` and ``coco/annotations/instances_val2014.json``, and RePOPE's
  ``repope/coco_repope_random.json`` (POPE's JSON lines: question_id, image, text, label);
- ``mmvp/Questions.csv`` and ``mmvp/MMVP Images/<n>.jpg`` (the MMVP/MMVP dataset repository's layout).

``write_checkpoint(cache, preset)`` saves a tiny random-weight model of the preset's real architecture
(Qwen2.5-VL, LLaVA-1.5, InternVL3.5) into a Hugging Face hub cache folder under the paper's hub id
(``models--<org>--<name>/snapshots/<hash>/``, ``refs/main``), with a word-level tokenizer that knows the paper's
prompts. Random weights answer at random and would rarely name a COCO object or end their answer; three rows of
the output head are planted so that every model answers "Yes dog" and then its end token on every prompt (its
probabilities still depend on the image): the word level has its object, the sentence level its end token, and
RePOPE its false positives.

``write_reference_lists(folder, adapter, preset, data)`` writes the reference's evaluation lists in the authors'
formats (shared/reference-lists/README.md) for the fixture's images, made with the tiny model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.models.test_adapters import hub_layout, tiny_internvl, tiny_llava  # the same tiny models, deeper

#: the paper's prompts as conf/paper words them (the tokenizer must know every word of them)
CAPTION_PROMPT = ("Describe the image in one factual English sentence of no more than 20 words. Do not include "
                  "information that is not clearly visible.")
REPOPE_TEMPLATE = ("You are asked a visual question answering task. \nFirst, answer strictly with \"Yes\" or \"No\". "
                   "\nThen, provide a short explanation if necessary.\n\nQuestion: {}\nAnswer:")
MMVP_INSTRUCTION = "Answer with the option's letter from the given choices directly."
MMVP_QUESTIONS = [  # Index, Question, Options, Correct Answer (MMVP's Questions.csv)
    (1, "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(a)"),
    (2, "Is the dog facing left or right from the camera's perspective?", "(a) Left (b) Right", "(b)"),
]
CATEGORIES = [{"supercategory": "person", "id": 1, "name": "person"},
              {"supercategory": "animal", "id": 18, "name": "dog"},
              {"supercategory": "furniture", "id": 67, "name": "dining table"}]
#: (image id, height, width, [(annotation id, category id, x0, y0, x1, y1)]): every image holds a dog
VAL2017 = [(139, 48, 64, [(1001, 18, 6, 8, 30, 40), (1002, 1, 36, 4, 60, 44)]),
           (285, 56, 48, [(1003, 18, 10, 20, 40, 52)])]
VAL2014 = [(42, 48, 64, [(2001, 18, 4, 6, 28, 40)]),
           (73, 52, 52, [(2002, 1, 8, 8, 40, 48), (2003, 18, 30, 30, 50, 50)])]
REPOPE = [  # POPE's JSON lines; label no on an image without a person: the model's "Yes" is a false positive
    {"question_id": 1, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a person in the image?",
     "label": "no"},
    {"question_id": 2, "image": "COCO_val2014_000000000042.jpg", "text": "Is there a dog in the image?",
     "label": "yes"},
    {"question_id": 3, "image": "COCO_val2014_000000000073.jpg", "text": "Is there a dining table in the image?",
     "label": "no"},
]
ANSWER = ("Yes", "dog")  # what every fixture model answers before its end token (the planted rows)

#: the paper's presets (conf/paper/globals.yml) this fixture has a checkpoint for, and their end tokens
HUB_IDS = {"qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct", "llava_1_5_7b": "llava-hf/llava-1.5-7b-hf",
           "internvl3_5_4b": "OpenGVLab/InternVL3_5-4B-HF"}
#: the file names of the reference's lists (datasets/ of RuoyuChen10/EAGLE; Qwen2.5-VL-3B's as published)
LIST_NAMES = {"qwen2_5_vl_3b": "Qwen2.5-VL-3B", "llava_1_5_7b": "LLaVA-1.5-7B", "internvl3_5_4b": "InternVL3.5-4B"}
ONCE_NAMES = {"qwen2_5_vl_3b": "qwen25vl-3B", "llava_1_5_7b": "llava-1_5-7B", "internvl3_5_4b": "internvl-4B"}


def vocabulary() -> list[str]:
    """Every text a paper run puts into a prompt or names an object with."""
    texts = [CAPTION_PROMPT, REPOPE_TEMPLATE.format(""), MMVP_INSTRUCTION, " ".join(ANSWER), "No yes no"]
    texts += [q for _, q, _, _ in MMVP_QUESTIONS] + [o for _, _, o, _ in MMVP_QUESTIONS]
    texts += [r["text"] for r in REPOPE] + [c["name"] for c in CATEGORIES]
    texts += [f"a caption of image {i}" for i, *_ in VAL2017]
    return texts


# --- data -----------------------------------------------------------------------------------------------------------

def _photo(rng, h: int, w: int) -> np.ndarray:
    """A photo-like image: smooth colour fields plus noise (SLICO finds regions in it)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(x / 9 + c) * np.cos(y / 7 - c) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _instances(year: str, specs, folder: Path, name) -> dict:
    rng = np.random.default_rng(int(year))
    images, annotations = [], []
    for image_id, h, w, objects in specs:
        file_name = name(image_id)
        Image.fromarray(_photo(rng, h, w)).save(folder / file_name, quality=92)
        images.append({"license": 1, "file_name": file_name, "coco_url": f"http://images.cocodataset.org/"
                       f"{folder.name}/{file_name}", "height": h, "width": w, "date_captured": "2013-11-14 17:02:52",
                       "flickr_url": "http://farm7.staticflickr.com/1/1.jpg", "id": image_id})
        for ann_id, category_id, x0, y0, x1, y1 in objects:
            annotations.append({"segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]],
                                "area": float((x1 - x0) * (y1 - y0)),
                                "iscrowd": 0, "image_id": image_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "category_id": category_id, "id": ann_id})
    return {"info": {"description": f"COCO {year} Dataset (test fixture)", "url": "http://cocodataset.org",
                     "version": "1.0", "year": int(year), "contributor": "COCO Consortium",
                     "date_created": f"{year}/09/01"},
            "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
                          "name": "Attribution-NonCommercial-ShareAlike License"}],
            "images": images, "annotations": annotations, "categories": CATEGORIES}


def write_paper_data(root: Path) -> dict:
    """The paper's data under `root` (a project's ``data/01_raw``); returns the paths it wrote."""
    coco = root / "coco"
    for sub in ("val2017", "val2014", "annotations"):
        (coco / sub).mkdir(parents=True, exist_ok=True)
    val2017 = _instances("2017", VAL2017, coco / "val2017", lambda i: f"{i:012d}.jpg")
    (coco / "annotations/instances_val2017.json").write_text(json.dumps(val2017))
    captions = {k: val2017[k] for k in ("info", "licenses", "images")}
    captions["annotations"] = [{"image_id": i, "id": 10 * i + k, "caption": f"a caption of image {i}"}
                               for i, *_ in VAL2017 for k in range(5)]
    (coco / "annotations/captions_val2017.json").write_text(json.dumps(captions))
    val2014 = _instances("2014", VAL2014, coco / "val2014", lambda i: f"COCO_val2014_{i:012d}.jpg")
    (coco / "annotations/instances_val2014.json").write_text(json.dumps(val2014))
    (root / "repope").mkdir(parents=True, exist_ok=True)
    (root / "repope/coco_repope_random.json").write_text("".join(json.dumps(r) + "\n" for r in REPOPE))
    mmvp = root / "mmvp"
    (mmvp / "MMVP Images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with open(mmvp / "Questions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Index", "Question", "Options", "Correct Answer"])
        for row in MMVP_QUESTIONS:
            writer.writerow(row)
            Image.fromarray(_photo(rng, 40, 56)).save(mmvp / "MMVP Images" / f"{row[0]}.jpg", quality=92)
    return {"coco": coco, "repope": root / "repope/coco_repope_random.json", "mmvp": mmvp,
            "instances_val2017": val2017, "instances_val2014": val2014}


# --- checkpoints ----------------------------------------------------------------------------------------------------

#: the paper's prompts are longer than tests/models/test_adapters.py's TEXT allows for
MAX_POSITIONS = 1024
#: the decoder depth of each paper model (the presets' llava_cam_layer indexes into it): Qwen2.5-VL-3B 36,
#: LLaVA-1.5-7B (Vicuna-7B) 32, InternVL3.5-4B (Qwen3-4B) 36
DEPTH = {"qwen2_5_vl_3b": 36, "llava_1_5_7b": 32, "internvl3_5_4b": 36}


def _qwen2_5_vl():
    from eagle_pipelines.models.processing import build_processor
    from eagle_pipelines.models.toy import ToyArchitecture, build_toy_model

    processor = build_processor(vocabulary(), 84)  # 84² pixels at most, 56² at least
    arch = ToyArchitecture(vision_depth=1, vision_hidden=32, vision_intermediate=64, vision_heads=2,
                           text_layers=DEPTH["qwen2_5_vl_3b"], text_hidden=32, text_intermediate=64, text_heads=2,
                           text_kv_heads=1)
    return build_toy_model(processor, arch, seed=0), processor, "<|im_end|>", "Qwen2_5_VLProcessor"


def _llava():
    model, processor = tiny_llava(vocabulary() + ["USER ASSISTANT :"], num_hidden_layers=DEPTH["llava_1_5_7b"],
                                  max_position_embeddings=MAX_POSITIONS)
    return model, processor, "</s>", "LlavaProcessor"


def _internvl():
    model, processor = tiny_internvl(vocabulary() + ["system user assistant"], model_type="qwen3", head_dim=16,
                                     num_hidden_layers=DEPTH["internvl3_5_4b"], max_position_embeddings=MAX_POSITIONS,
                                     tie_word_embeddings=False)
    return model, processor, "<|im_end|>", "InternVLProcessor"


BUILDERS = {"qwen2_5_vl_3b": _qwen2_5_vl, "llava_1_5_7b": _llava, "internvl3_5_4b": _internvl}


def _plant_answer(model, processor, end: str) -> None:
    """Rows of the output head that make the model answer ANSWER, then `end`, after any prompt: the row of each
    answer token points along the (enlarged) input embedding of the token before it, the prompt's last token
    (the same for every prompt: the chat template's assistant turn) for the first."""
    tok = processor.tokenizer
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                          "text": "Yes"}]}], add_generation_prompt=True)
    last = tok(chat, add_special_tokens=False)["input_ids"][-1]
    chain = [last, *tok.convert_tokens_to_ids(list(ANSWER)), tok.convert_tokens_to_ids(end)]
    assert tok.unk_token_id not in chain, chain
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert embed.data_ptr() != head.data_ptr(), "the fixture's models have an output head of their own"
    with torch.no_grad():
        for before, after in zip(chain, chain[1:]):
            embed[before] *= 20.0
            head[after] = 1.2 * embed[before] / embed[before].norm()


def write_checkpoint(cache: Path, preset: str) -> Path:
    """The preset's tiny checkpoint in the hub cache `cache` under its hub id; returns the snapshot folder."""
    model, processor, end, processor_class = BUILDERS[preset]()
    _plant_answer(model, processor, end)
    hub_id = HUB_IDS[preset]
    entry = cache / f"models--{hub_id.replace('/', '--')}"
    staging = entry / "staging"
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    if processor_class != "Qwen2_5_VLProcessor":  # the stock Qwen2.5-VL processor needs torchvision here
        hub_layout(staging, processor_class)
    digest = hashlib.sha1(hub_id.encode()).hexdigest()
    snapshot = entry / "snapshots" / digest
    snapshot.parent.mkdir(parents=True)
    shutil.move(staging, snapshot)
    (entry / "refs").mkdir()
    (entry / "refs/main").write_text(digest)
    return snapshot


# --- the reference's lists ------------------------------------------------------------------------------------------

def write_reference_lists(folder: Path, adapter, preset: str, root: Path) -> dict[str, Path]:
    """The reference's five list formats for the fixture's data under `root` (``data/01_raw``), each entry the
    model's own prompt ids and greedy answer, as the authors' scripts wrote them. Returns the files by format."""
    folder.mkdir(parents=True, exist_ok=True)
    tok = adapter.processor.tokenizer
    instances = json.loads((root / "coco/annotations/instances_val2017.json").read_text())
    names = {c["id"]: c["name"] for c in instances["categories"]}

    def run(photo_path: Path, prompt: str):
        image = adapter.model_image(np.asarray(Image.open(photo_path).convert("RGB")))
        prompt_ids = adapter.encode([image], prompt)["input_ids"][0].tolist()
        answer = adapter.generate(image, prompt, max_new_tokens=8)
        ids = list(answer.token_ids) + ([answer.end_token_id] if getattr(answer, "end_token_id", None) is not None
                                         else [])
        return prompt_ids, ids, tok.decode(list(answer.token_ids))

    caption, objects = [], []
    for im in instances["images"]:
        prompt_ids, ids, text = run(root / "coco/val2017" / im["file_name"], CAPTION_PROMPT)
        caption.append({"image_path": im["file_name"], "gt_caption": [f"a caption of image {im['id']}"],
                        "generate_sentence": text, "generated_ids": [prompt_ids + ids],
                        "selected_interpretation_token_id": list(range(len(ids))),
                        "selected_interpretation_token_word_id": ids,
                        "words": tok.convert_ids_to_tokens(ids)})
        ann = next(a for a in instances["annotations"] if a["image_id"] == im["id"] and names[a["category_id"]]
                   in text.split())
        x, y, w, h = ann["bbox"]
        index = text.split().index(names[ann["category_id"]])
        objects.append({"image_path": im["file_name"], "gt_caption": f"a caption of image {im['id']}",
                        "generate_sentence": text, "generated_ids": prompt_ids + ids, "output_word_id": ids,
                        "select_category": names[ann["category_id"]], "location": [x, y, x + w, y + h],
                        "segmentation": ann["segmentation"], "target_generated_index": index,
                        "target_generated_id": ids[index], "target_generated_token": tok.convert_ids_to_tokens(
                            ids[index])})
    mmvp = []
    for index, question, options, correct in MMVP_QUESTIONS:
        prompt_ids, ids, text = run(root / "mmvp/MMVP Images" / f"{index}.jpg", question)
        mmvp.append({"question_id": str(index), "image_filename": f"{index}.jpg", "question": question,
                     "options": [o.strip() for o in options.replace("(a)", "|").replace("(b)", "|").split("|")[1:]],
                     "answer": correct.strip("()"), "generate_sentence": text, "generated_ids": [prompt_ids + ids],
                     "selected_interpretation_token_id": list(range(len(ids))),
                     "selected_interpretation_token_word_id": ids, "words": tok.convert_ids_to_tokens(ids)})
    lists = {"fp": [], "tn": []}
    for record in REPOPE:
        prompt = REPOPE_TEMPLATE.format(record["text"])
        prompt_ids, ids, text = run(root / "coco/val2014" / record["image"], prompt)
        said = "yes" if text[:3] == "Yes" else "no"
        kind = "fp" if (said, record["label"]) == ("yes", "no") else "tn" if said == record["label"] == "no" else None
        if kind:
            lists[kind].append({"id": str(record["question_id"]), "image_name": record["image"],
                                "question": record["text"], "label": record["label"], "generate_sentence": text,
                                "generated_ids": [prompt_ids + ids], "selected_interpretation_token_id": [0],
                                "selected_interpretation_token_word_id": ids[:1],
                                "words": tok.convert_ids_to_tokens(ids),
                                "counter_word_id": [tok.convert_tokens_to_ids("No")]})
    name, once = LIST_NAMES[preset], ONCE_NAMES[preset]
    files = {"caption": folder / f"{name}-coco-caption.json", "object": folder / f"coco_single_target_once_{once}.json",
             "mmvp": folder / f"{name}-MMVP-VQA.json", "repope_fp": folder / f"{name}-RePOPE-FP.json",
             "repope_tn": folder / f"{name}-RePOPE-TN.json"}
    for kind, entries in [("caption", caption), ("object", objects), ("mmvp", mmvp), ("repope_fp", lists["fp"]),
                          ("repope_tn", lists["tn"])]:
        if entries:  # the fixture's models say "Yes" to every question: no true negative, no TN list
            files[kind].write_text(json.dumps(entries, indent=1))
        else:
            del files[kind]
    return files
