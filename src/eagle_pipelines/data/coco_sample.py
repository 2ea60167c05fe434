"""The evaluation split taken from a real COCO-format dataset (COCO val2017 in the paper's setting).

``coco_eval_split`` draws a seeded sample of images and returns them as a COCO-format split in the same layout as
the embedded shapes split (images keyed by file stem, an instances dictionary, a captions dictionary), so every
later step reads real COCO exactly as it reads the shapes:

- caption level: each sampled image is explained with the configured prompt (the reference caption is the first
  COCO caption);
- word level: one object per (image, category): the union of that category's instance masks in the image, its
  tight box, and the words an answer may name it by (the category name, its plural, configured synonyms). An
  object is explained when the generated answer contains one of its words; the others are recorded as skipped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils
from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from eagle_pipelines.data.coco import CocoFormatError, CocoIndex, split_file_name

logger = logging.getLogger(__name__)

IRREGULAR_PLURALS = {"person": "people", "mouse": "mice", "knife": "knives", "sheep": "sheep", "skis": "skis",
                     "scissors": "scissors", "skateboard": "skateboards", "teddy bear": "teddy bears"}


class CocoSampleParams(BaseModel):
    """How the evaluation split is drawn from a COCO-format dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: PositiveInt = Field(default=275, description="images in the seeded sample (all when fewer exist)")
    seed: int = 0
    require_objects: bool = Field(default=True, description="sample only images with at least one annotation")
    merge_instances: bool = Field(
        default=True, description="one object per (image, category): the union of its instance masks")
    plurals: bool = Field(default=True, description="an answer may name a category in the plural")
    words: dict[str, list[str]] = Field(
        default_factory=dict, description="extra words per category name (synonyms), e.g. person: [man, woman]")


class EvalDataParams(BaseModel):
    """Where eagle_coco's evaluation split comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["shapes", "coco", "reference_list"] = Field(
        default="shapes", description="shapes: the embedded generator; coco: a sample of the `coco_val2017` dataset; "
                                      "reference_list: the images, answers and targets of a reference evaluation "
                                      "list (`reference_list` dataset) with `coco_val2017`'s images")
    coco: CocoSampleParams = CocoSampleParams()


def plural(name: str) -> str:
    """English plural of a category name (its last word): "dining table" -> "dining tables"."""
    if name in IRREGULAR_PLURALS:
        return IRREGULAR_PLURALS[name]
    head, _, last = name.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    elif last.endswith("fe"):
        last = last[:-2] + "ves"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def category_words(name: str, params: CocoSampleParams) -> list[str]:
    """The words an answer may use for category `name`, in the order they are looked for: the name, its plural,
    the configured synonyms, then each of them capitalised (the first word of a sentence)."""
    words = [name]
    if params.plurals:
        words.append(plural(name))
    words += params.words.get(name, [])
    words += [w[:1].upper() + w[1:] for w in words]
    return list(dict.fromkeys(w for w in words if w))


def sample_image_ids(index: CocoIndex, params: CocoSampleParams) -> list[int]:
    """A seeded sample of image ids (sorted): the same seed and source give the same images."""
    ids = index.image_ids()
    if params.require_objects:
        ids = [i for i in ids if index.instances.getAnnIds(imgIds=[i])]
    if not ids:
        raise CocoFormatError("the COCO instances file has no image" + (" with annotations" if params.require_objects
                                                                        else ""))
    if params.images >= len(ids):
        if params.images > len(ids):
            logger.warning("coco sample: %d images asked, %d available; using all of them", params.images, len(ids))
        return ids
    chosen = np.random.default_rng(params.seed).choice(len(ids), size=params.images, replace=False)
    return sorted(ids[k] for k in chosen)


def _annotation(ann_id: int, image_id: int, category_id: int, rle: dict, **extra) -> dict:
    return {"id": int(ann_id), "image_id": int(image_id), "category_id": int(category_id),
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0,
            **extra}


def merged_annotations(index: CocoIndex, image_id: int) -> list[dict]:
    """One annotation per category present in `image_id`: the union of its instance masks (crowd regions
    included), the tight box of that union, the id of its first instance and the ids it merges."""
    anns = index.instances.loadAnns(index.instances.getAnnIds(imgIds=[image_id], iscrowd=None))
    by_category: dict[int, list[dict]] = defaultdict(list)
    for a in sorted(anns, key=lambda a: a["id"]):
        by_category[a["category_id"]].append(a)
    merged = []
    for category_id in sorted(by_category):
        group = by_category[category_id]
        rle = mask_utils.merge([index.instances.annToRLE(a) for a in group], intersect=False)
        merged.append(_annotation(group[0]["id"], image_id, category_id, rle,
                                  instance_ids=[int(a["id"]) for a in group]))
    return merged


def coco_eval_split(instances: dict, captions: dict | None, images: Mapping[str, Any],
                    params: CocoSampleParams, source: str = "coco") -> tuple[dict[str, Any], dict, dict]:
    """The seeded evaluation split of a COCO-format dataset.

    `images` maps each file stem to its file (``core.images.SourceImage``, as ``CocoFolder.images`` lists them).
    Returns the sampled images keyed by file stem, as given: the split copies their bytes and decodes them only
    when an item is reached, so an unreadable image is named and skipped there instead of stopping the run; the
    instances dictionary of the sampled images (merged per category when ``merge_instances``; each category with
    its ``words``) and their captions dictionary.
    """
    index = CocoIndex(instances, captions, source=f"{source} instances")
    ids = sample_image_ids(index, params)
    missing = [index.image_info(i)["file_name"] for i in ids
               if index.image_info(i)["file_name"].rsplit(".", 1)[0] not in images]
    if missing:
        raise CocoFormatError(f"{source}: {len(missing)} sampled image file(s) are not in the images folder, e.g. "
                              f"{', '.join(missing[:3])}: the images folder does not match the annotation file")
    chosen = set(ids)
    split_images, loaders = [], {}
    for i in ids:
        info = dict(index.image_info(i))
        stem = info["file_name"].rsplit(".", 1)[0]
        info["source_file_name"] = info["file_name"]
        info["file_name"] = split_file_name(stem, images[stem])
        split_images.append(info)
        loaders[stem] = images[stem]
    if params.merge_instances:
        annotations = [a for i in ids for a in merged_annotations(index, i)]
    else:
        annotations = [a for a in instances["annotations"] if a["image_id"] in chosen]
    categories = [{**c, "words": category_words(c["name"], params)} for c in instances["categories"]]
    info = {**instances.get("info", {}), "sample": {"source": source, **params.model_dump()}}
    split = {"info": info, "licenses": instances.get("licenses", []), "images": split_images,
             "annotations": annotations, "categories": categories}
    caption_anns = [] if captions is None else [a for a in captions.get("annotations", [])
                                                if a["image_id"] in chosen]
    split_captions = {"info": info, "licenses": split["licenses"], "images": split_images,
                      "annotations": caption_anns}
    logger.info("%s sample: %d images, %d objects (seed %d)", source, len(ids), len(annotations), params.seed)
    return loaders, split, split_captions

