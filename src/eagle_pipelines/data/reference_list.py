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

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from eagle_pipelines.data.coco import CocoFormatError, image_size, split_file_name
from eagle_pipelines.data.params import CocoSampleParams, category_words
from eagle_pipelines.extras import LazyModule
from eagle_pipelines.models.base import Answer

#: pycocotools (the `pipelines` extra), imported on first use: the parameter models import without it
mask_utils = LazyModule("pycocotools.mask", "COCO masks (pycocotools)")

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


# --- one entry, type-checked --------------------------------------------------------------------------------------
#: a token id or an answer position: a JSON integer (not a string such as "0123", not 1.9, not true), at least 0
Index = Annotated[StrictInt, Field(ge=0)]


class _Entry(BaseModel):
    """The fields of a list entry that the pipelines read, each type-checked (strict: no coercion of "0123" or
    1.9 into integers); other fields (``words``, ``target_generated_token``...) are kept as they are and unread."""

    model_config = ConfigDict(extra="allow", strict=True)

    generated_ids: list[Index] = Field(min_length=1)
    generate_sentence: StrictStr = ""

    @field_validator("generated_ids", mode="before")
    @classmethod
    def _one_sequence(cls, value):
        """Caption lists nest the sequence once (``[[...]]``): checked as the one sequence it holds."""
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            if len(value) != 1:
                raise ValueError(f"a nested generated_ids holds exactly one sequence, not {len(value)}")
            return value[0]
        return value


class _Sentence(_Entry):
    selected_interpretation_token_id: list[Index] = Field(min_length=1)
    selected_interpretation_token_word_id: list[Index] = []

    @field_validator("selected_interpretation_token_word_id")
    @classmethod
    def _same_length(cls, value, info):
        positions = info.data.get("selected_interpretation_token_id")
        if value and positions is not None and len(value) != len(positions):
            raise ValueError(f"{len(value)} token ids for {len(positions)} positions "
                             "(selected_interpretation_token_id)")
        return value


#: a coordinate: a JSON number (an integer or not), finite
Number = Annotated[float, Field(allow_inf_nan=False)]


class CaptionEntry(_Sentence):
    image_path: StrictStr = Field(min_length=1)
    gt_caption: list[StrictStr] | StrictStr | None = None


class ObjectEntry(_Entry):
    image_path: StrictStr = Field(min_length=1)
    gt_caption: list[StrictStr] | StrictStr | None = None
    output_word_id: list[Index] = Field(min_length=1)
    select_category: StrictStr = Field(min_length=1)
    location: list[Number] = Field(min_length=4, max_length=4)
    segmentation: list[list[Number]] | None = None
    target_generated_index: Index
    target_generated_id: Index | None = None

    @field_validator("location")
    @classmethod
    def _box(cls, value):
        x1, y1, x2, y2 = value
        if not (x2 > x1 >= 0 and y2 > y1 >= 0):
            raise ValueError(f"the box {value} is not x1 y1 x2 y2 with x2 > x1 >= 0 and y2 > y1 >= 0")
        return value

    @field_validator("segmentation")
    @classmethod
    def _polygons(cls, value):
        for polygon in value or []:
            if len(polygon) < 6 or len(polygon) % 2:
                raise ValueError(f"a COCO polygon is x y pairs, at least 3 points; got {len(polygon)} numbers")
        return value


class MmvpEntry(_Sentence):
    question_id: StrictStr | StrictInt
    image_filename: StrictStr = Field(min_length=1)
    question: StrictStr
    options: list[StrictStr] = []
    answer: StrictStr = ""


class RepopeEntry(_Sentence):
    id: StrictInt | StrictStr | None = None
    image_name: StrictStr = Field(min_length=1)
    question: StrictStr
    label: StrictStr
    counter_word_id: list[Index] = Field(min_length=1)


ENTRY_MODELS = {"caption": CaptionEntry, "object": ObjectEntry, "mmvp": MmvpEntry, "repope": RepopeEntry}


class EntryError(ValueError):
    """One list entry that cannot be used: its index, the field and why (a skipped.csv row's reason)."""

    def __init__(self, index: int, message: str, image: str = ""):
        self.index, self.image, self.reason = index, image, message
        super().__init__(f"entry {index}{f' ({image})' if image else ''}: {message}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate_entry(entry, fmt: str, index: int) -> dict:
    """The entry as a plain dict once every field the pipelines read has its type (``ENTRY_MODELS[fmt]``), else an
    ``EntryError`` naming the entry's index, its image and the first wrong field with the value found."""
    if not isinstance(entry, dict):
        raise EntryError(index, f"expected a JSON object, got {type(entry).__name__} {_shown(entry)}")
    image = entry.get("image_path", entry.get("image_filename", entry.get("image_name", "")))
    image = PurePosixPath(image).name if isinstance(image, str) else ""
    # a file name that is not UTF-8 reaches Python as lone surrogates (surrogateescape), which pydantic's strings
    # refuse: validate a printable stand-in and keep the name itself, which names the file on disk
    raw = {k: v for k, v in entry.items() if isinstance(v, str) and any("\ud800" <= c <= "\udfff" for c in v)}
    stand_in = {**entry, **{k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for k, v in raw.items()}}
    try:
        return {**ENTRY_MODELS[fmt].model_validate(stand_in).model_dump(), **raw}
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("list[", "function-", "constrained-"))
               and str(p) not in ("str", "int", "float", "none", "is-instance[int]")]
        field = loc[0] if loc else "?"
        where = f"field '{field}'" + (f" item {'/'.join(loc[1:])}" if len(loc) > 1 else "")
        if err["type"] == "missing":
            raise EntryError(index, f"field '{field}' is missing (a {fmt} list needs it; "
                                    "docs/paper.md#reference-lists)", image) from None
        found = entry.get(field, None) if field in entry else None
        raise EntryError(index, f"{where}: {err['msg']} (found {_shown(found)}; "
                                "docs/paper.md#reference-lists)", image) from None


def _skip(skipped: list, index: int, image: str, reason: str) -> None:
    row = {"item": f"entry {index}" + (f" ({image})" if image else ""), "entry": index, "image": image,
           "reason": reason}
    logger.error("reference list %s skipped: %s", row["item"], reason)
    skipped.append(row)


def _checked_entries(entries: list, fmt: str, source: str, skipped: list):
    """(index, entry, record) of each entry that is type-checked; each other one becomes a skipped row."""
    for k, raw in enumerate(entries):
        try:
            entry = validate_entry(raw, fmt, k)
            yield k, entry, reference_record(entry, fmt, k, source)
        except (EntryError, CocoFormatError) as exc:
            _skip(skipped, k, getattr(exc, "image", ""), getattr(exc, "reason", str(exc)))


def _all_skipped(source: str, skipped: list[dict]) -> CocoFormatError:
    first = "; ".join(f"{s['item']}: {s['reason']}" for s in skipped[:3])
    return CocoFormatError(f"{source}: every entry of the list was refused ({len(skipped)}), e.g. {first}")


def flat_ids(generated_ids) -> list[int]:
    """The whole generated sequence as a flat list (caption lists nest it once: [[...]])."""
    ids = generated_ids
    while isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], list):
        ids = ids[0]
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise CocoFormatError("generated_ids is not a list of token ids")
    return [int(i) for i in ids]


def reference_record(entry: dict, fmt: str, index: int, source: str = "reference list") -> dict:
    """What the answers and targets stages need of one list entry: the whole sequence, the answer text, the
    sentence positions (caption lists) or the one word target (object lists), with the ids the list expects at
    them (checked against the sequence once the prompt length is known); `source` names the list's file. The entry
    is type-checked first (``validate_entry``: an ``EntryError`` naming the entry and the field)."""
    entry = validate_entry(entry, fmt, index)
    record = {"format": fmt, "index": index, "source": str(source), "sequence": flat_ids(entry["generated_ids"]),
              "text": str(entry.get("generate_sentence", ""))}
    if fmt in ("caption", "mmvp", "repope"):
        record["sentence_positions"] = [int(p) for p in entry["selected_interpretation_token_id"]]
        record["sentence_ids"] = [int(t) for t in entry.get("selected_interpretation_token_word_id", [])]
        if fmt == "repope":  # the correct answer's token, explained in place of the model's (wrong) one
            record["counter_ids"] = [int(t) for t in entry["counter_word_id"]]
    else:
        record["answer_ids"] = [int(t) for t in entry["output_word_id"]]
        record["word"] = {"position": int(entry["target_generated_index"]),
                          "token_id": None if entry.get("target_generated_id") is None
                          else int(entry["target_generated_id"]),
                          "category": str(entry["select_category"])}
    return record


def reference_eval_split(entries: list, images: Mapping[str, Callable[[], Any]], instances: dict | None,
                         source: str = "reference list") -> tuple[dict[str, Callable], dict, dict]:
    """eagle_coco's split for a caption or object list: the images keyed by file stem, as given (``SourceImage``
    files: the split copies their bytes and decodes them only when an item is reached, so an unreadable image is
    named and skipped there), an instances dictionary (object lists: the list's own
    object per image) and a captions dictionary (the list's reference captions). Each image entry carries the
    list's ``reference`` record. Image ids and sizes come from the COCO instances file where it lists the file."""
    fmt = list_format(entries, source)
    if fmt not in ("caption", "object"):
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_coco "
                              f"(docs/paper.md#reference-lists)")
    known = {im["file_name"]: im for im in (instances or {}).get("images", []) if isinstance(im, dict)}
    categories = {c["name"]: c for c in (instances or {}).get("categories", [])}
    split_images, annotations, captions, loaders, skipped = [], [], [], {}, []
    seen: dict[str, int] = {}  # file stem -> the entry that took it
    owner: dict[int, tuple[int, str]] = {}  # image id -> the entry that took it and its image
    next_id = 1 + max([int(im["id"]) for im in known.values() if isinstance(im.get("id"), int)], default=0)
    for k, entry, record in _checked_entries(entries, fmt, source, skipped):
        name = PurePosixPath(entry["image_path"]).name
        stem = name.rsplit(".", 1)[0]
        if stem in seen:
            _skip(skipped, k, name, f"lists the image '{name}' that entry {seen[stem]} already lists (entries "
                                    f"{seen[stem]} and {k}); a list explains each image once: keep one of them")
            continue
        if stem not in images:
            _skip(skipped, k, name, f"the image '{name}' is not in the COCO images folder; the list needs the "
                                    "val2017 images it was made on")
            continue
        info = known.get(name)
        if info is None:  # not in the instances file: the next free id (never digits of the file name)
            try:
                width, height = image_size(images[stem])  # the header only; (0, 0) if unreadable: skipped later
            except Exception as exc:  # noqa: BLE001 - any decoder failure names the entry and its file
                _skip(skipped, k, name, f"the image '{name}' cannot be read: {exc}")
                continue
            while next_id in owner:
                next_id += 1
            info = {"id": next_id, "file_name": name, "width": width, "height": height}
        image_id = int(info["id"])
        if image_id in owner:
            first, other = owner[image_id]
            _skip(skipped, k, name, f"gets image id {image_id} from the instances file, as entry {first} "
                                    f"('{other}') does (entries {first} and {k}); fix the instances file's ids")
            continue
        try:
            annotation = (_list_object(entry, image_id, int(info["height"]), int(info["width"]), k, categories)
                          if fmt == "object" and int(info["width"]) and int(info["height"]) else None)
        except (ValueError, TypeError, KeyError) as exc:
            _skip(skipped, k, name, f"its object cannot be drawn on the {info['width']}x{info['height']} image: "
                                    f"{exc}")
            continue
        seen[stem], owner[image_id] = k, (k, name)
        split_images.append({"id": image_id, "file_name": split_file_name(stem, images[stem]),
                             "source_file_name": name, "width": int(info["width"]), "height": int(info["height"]),
                             "reference": record})
        loaders[stem] = images[stem]
        refs = entry.get("gt_caption") or []
        for j, caption in enumerate([refs] if isinstance(refs, str) else refs):
            captions.append({"id": image_id * 100 + j, "image_id": image_id, "caption": str(caption)})
        if annotation is not None:
            annotations.append(annotation)
    if not split_images:
        raise _all_skipped(source, skipped)
    names = sorted({a["category_name"] for a in annotations})
    cats = [{"id": int(categories[n]["id"]) if n in categories else 1000 + i, "name": n, "supercategory": "",
             "words": category_words(n, CocoSampleParams())} for i, n in enumerate(names)]
    ids = {c["name"]: c["id"] for c in cats}
    for a in annotations:
        a["category_id"] = ids[a.pop("category_name")]
    info = {"sample": {"source": "reference_list", "format": fmt, "entries": len(entries)}, "skipped": skipped}
    split = {"info": info, "licenses": [], "images": split_images, "annotations": annotations, "categories": cats}
    logger.info("%s: a %s list of %d images%s%s", source, fmt, len(split_images),
                f", {len(annotations)} objects" if annotations else "",
                f"; {len(skipped)} entries refused (listed in skipped.csv)" if skipped else "")
    return loaders, split, {"info": info, "licenses": [], "images": split_images, "annotations": captions}


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


def split_answer(record: dict, prompt_ids: list[int], end_ids: set[int], item: str,
                 decode: Callable[[list[int]], str] | None = None) -> tuple[list[int], int | None]:
    """The answer of a list entry: the sequence after the prompt this model makes for the image, checked to be
    exactly the list's prompt (else the list was made with another model, processor, prompt or image size; the
    error names the list's file and entry, and with `decode` (the tokenizer's) the words where they part).
    Returns the answer ids (end token excluded) and the end token id (None when the answer was cut off)."""
    sequence = record["sequence"]
    n = len(prompt_ids)
    if sequence[:n] != list(prompt_ids):
        diff = next((i for i, (a, b) in enumerate(zip(sequence, prompt_ids)) if a != b), min(len(sequence), n))
        where = f"{record.get('source', 'reference list')}, entry {record.get('index', '?')} (item {item})"
        if decode is not None:
            lo = max(0, diff - 3)
            parted = (f"the list reads {decode(sequence[lo:diff + 5])!r} where this run's prompt reads "
                      f"{decode(list(prompt_ids[lo:diff + 5]))!r}")
        else:
            parted = (f"list {sequence[diff] if diff < len(sequence) else 'ends'}, ours "
                      f"{prompt_ids[diff] if diff < n else 'ends'}")
        raise ValueError(f"{where}: the list's prompt differs from this run's prompt for the image at token {diff} "
                         f"({parted}): the list was made with another prompt, model, processor or image size; run "
                         "with the prompt it was made with (eagle_coco.prompt, eagle_repope.prompt_template) and "
                         "this list's model, or use the list made for this model and prompt")
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
                             source: str = "reference list",
                             skipped: list | None = None) -> tuple[dict, list[dict], list[dict]]:
    """eagle_mmvp's split and list for an MMVP list: the images (from the local MMVP images folder, by file name),
    their entries with the list's ``reference`` record, and one question per entry whose prompt is the list's
    question as the reference asks it (no options, no instruction). An entry that cannot be used (a wrong field,
    an image the folder lacks, an image another entry already takes) is appended to `skipped` (the skipped.csv
    rows: item, entry, image, reason) and the rest go on. Image ids are MMVP's own numbers (its images are named
    ``<number>.jpg``; the pair of image n is (n - 1) // 2)."""
    fmt = list_format(entries, source)
    if fmt != "mmvp":
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_mmvp "
                              f"(docs/paper.md#reference-lists)")
    skipped = [] if skipped is None else skipped
    loaded, info, rows, owner = {}, [], [], {}
    for k, entry, record in _checked_entries(entries, fmt, source, skipped):
        name = PurePosixPath(entry["image_filename"]).name
        stem = name.rsplit(".", 1)[0]
        if not stem.isascii() or not stem.isdigit():
            _skip(skipped, k, name, f"'{name}' is not an MMVP image name (<number>.jpg, the number giving its pair)")
            continue
        image_id = int(stem)
        if image_id in owner:
            first, other = owner[image_id]
            _skip(skipped, k, name, f"'{name}' is MMVP image {image_id}, as entry {first}'s '{other}' is (entries "
                                    f"{first} and {k}); a list explains each image once: keep one of them")
            continue
        if stem not in images:
            _skip(skipped, k, name, f"the image '{name}' is not in the MMVP images folder")
            continue
        loaded[stem] = images[stem]
        width, height = image_size(images[stem])
        owner[image_id] = (k, name)
        options = entry.get("options") or []
        letter = str(entry.get("answer", "")).strip("() ").lower()
        pick = ord(letter) - ord("a") if len(letter) == 1 else -1
        reference = f"({letter}) {options[pick]}" if 0 <= pick < len(options) else str(entry.get("answer", ""))
        file_name = split_file_name(stem, images[stem])
        info.append({"id": image_id, "file_name": file_name, "width": width, "height": height,
                     "mmvp_file": name, "pair": (image_id - 1) // 2, "reference": record})
        rows.append({"item": str(entry["question_id"]), "image_id": image_id, "file_name": file_name,
                     "prompt": str(entry["question"]), "reference": reference, "pair": (image_id - 1) // 2})
    if not rows:
        raise _all_skipped(source, skipped)
    return loaded, info, rows


def repope_records(entries: list, source: str = "reference list") -> list[dict]:
    """The reference's RePOPE list (``<model>-RePOPE-FP.json`` / ``-TN.json``) as POPE question records for
    eagle_repope: question id, image (COCO val2014 file name), question text, label, and the list's ``listed``
    record (the whole generated sequence, the explained position, the counter token) that the answers stage
    teacher-forces instead of generating. A wrong entry refuses the list with one line naming the entry and the
    field (eagle_repope reads its questions whole)."""
    fmt = list_format(entries, source)
    if fmt != "repope":
        raise CocoFormatError(f"{source}: a {fmt} list is read by {PIPELINE_OF[fmt]}, not eagle_repope "
                              f"(docs/paper.md#reference-lists)")
    records = []
    for k, raw in enumerate(entries):
        try:
            entry = validate_entry(raw, fmt, k)
            listed = reference_record(entry, fmt, k, source)
        except EntryError as exc:
            raise CocoFormatError(f"{source}: {exc}") from None
        records.append({"question_id": k + 1 if entry.get("id") is None else entry["id"],
                        "image": PurePosixPath(entry["image_name"]).name,
                        "text": entry["question"], "label": entry["label"], "kind": "repope", "listed": listed})
    return records


def listed_answer(model, pixels: np.ndarray, prompt: str, item: str, record: dict):
    """The answer a list entry gives for an image, as ``models/base.py: Answer``: its generated ids after the
    prompt `model` makes for the image (which must be the list's own prompt tokens, ``split_answer``), each
    token's probability teacher-forced on the intact image; and the list's targets over the answer with its end
    token (``reference_targets``)."""
    image = model.model_image(pixels)
    prompt_ids = model.encode([image], prompt)["input_ids"][0].tolist()
    tok = model.processor.tokenizer
    gen = model.model.generation_config
    eos = gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id
    ids, end = split_answer(record, prompt_ids, set(eos if isinstance(eos, list) else [eos]), item,
                            decode=lambda ids: tok.decode(ids))
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
