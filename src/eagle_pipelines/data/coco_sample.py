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
from pydantic import BaseModel, ConfigDict, Field

from eagle_pipelines.data.coco import CocoFormatError, CocoIndex, split_file_name
from eagle_pipelines.data.params import IRREGULAR_PLURALS, CocoSampleParams, category_words, plural  # noqa: F401
from eagle_pipelines.data.reference_list import reference_eval_split
from eagle_pipelines.extras import LazyModule

#: pycocotools (the `pipelines` extra), imported on first use: the parameter models import without it
mask_utils = LazyModule("pycocotools.mask", "COCO masks (pycocotools)")

logger = logging.getLogger(__name__)

class EvalDataParams(BaseModel):
    """Where eagle_coco's evaluation split comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["shapes", "coco", "reference_list"] = Field(
        default="shapes", description="shapes: the embedded generator; coco: a sample of the `coco_val2017` dataset; "
                                      "reference_list: the images, answers and targets of a reference evaluation "
                                      "list (`reference_list` dataset) with `coco_val2017`'s images")
    coco: CocoSampleParams = CocoSampleParams()


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


def word_candidates(index: CocoIndex, params: CocoSampleParams) -> list[dict]:
    """Per category (in the instances file's order), its first ``word_candidates`` images in the order
    ``COCO.getImgIds(catIds=[id])`` returns them, which is the order the reference's lists follow: their four
    person images 385029, 254016, 32861, 213086 (and the 7B list's 385029, 32861, 213086, 229553) come in the
    iteration order of Python's set of the category's image ids, not sorted."""
    out = []
    for category in index.instances.dataset.get("categories", []):
        ids = index.instances.getImgIds(catIds=[category["id"]])
        out.append({"category": category["name"], "category_id": int(category["id"]),
                    "image_ids": [int(i) for i in ids[: params.word_candidates]]})
    return out


def coco_eval_split(instances: dict, captions: dict | None, images: Mapping[str, Any],
                    params: CocoSampleParams, source: str = "coco",
                    word_list: tuple[list, str] | None = None) -> tuple[dict[str, Any], dict, dict]:
    """The seeded evaluation split of a COCO-format dataset.

    `images` maps each file stem to its file (``core.images.SourceImage``, as ``CocoFolder.images`` lists them).
    Returns the sampled images keyed by file stem, as given: the split copies their bytes and decodes them only
    when an item is reached, so an unreadable image is named and skipped there instead of stopping the run; the
    instances dictionary of the sampled images (merged per category when ``merge_instances``; each category with
    its ``words``) and their captions dictionary.

    The word level may take other images (each image entry then says which level it serves, ``samples``):
    `word_list` (the entries and name of the authors' ``coco_single_target_once`` list) adds the list's images
    with its record (answers teacher-forced as listed, the list's object and token); ``word_sample:
    per_category`` adds each category's candidates (``word_candidates``), listed in ``info.word_candidates``.
    """
    index = CocoIndex(instances, captions, source=f"{source} instances")
    caption_ids = sample_image_ids(index, params)
    if word_list is not None:
        return _with_word_list(instances, captions, images, params, source, caption_ids, word_list)
    candidates = word_candidates(index, params) if params.word_sample == "per_category" else None
    samples = {i: ["caption"] for i in caption_ids}
    for c in candidates or []:
        for i in c["image_ids"]:
            samples.setdefault(i, [])
            if "word" not in samples[i]:
                samples[i].append("word")
    ids = sorted(samples)
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
        if candidates is not None:
            info["samples"] = samples[i]
        split_images.append(info)
        loaders[stem] = images[stem]
    if params.merge_instances:
        annotations = [a for i in ids for a in merged_annotations(index, i)]
    else:
        annotations = [a for a in instances["annotations"] if a["image_id"] in chosen]
    categories = [{**c, "words": category_words(c["name"], params)} for c in instances["categories"]]
    info = {**instances.get("info", {}), "sample": {"source": source, **params.model_dump()}}
    if candidates is not None:
        info["word_candidates"] = candidates
    split = {"info": info, "licenses": instances.get("licenses", []), "images": split_images,
             "annotations": annotations, "categories": categories}
    caption_anns = [] if captions is None else [a for a in captions.get("annotations", [])
                                                if a["image_id"] in chosen]
    split_captions = {"info": info, "licenses": split["licenses"], "images": split_images,
                      "annotations": caption_anns}
    logger.info("%s sample: %d images, %d objects (seed %d)", source, len(ids), len(annotations), params.seed)
    return loaders, split, split_captions


def _with_word_list(instances: dict, captions: dict | None, images, params: CocoSampleParams, source: str,
                    caption_ids: list[int], word_list: tuple[list, str]) -> tuple[dict, dict, dict]:
    """The caption sample plus the images of the authors' word-level list, each entry with its record; an image in
    both keeps the list's record and object only (its answer is the list's)."""
    entries, list_name = word_list
    loaders, split, split_captions = reference_eval_split(entries, images, instances, source=list_name)
    if split["info"]["sample"]["format"] != "object":
        raise CocoFormatError(f"{list_name}: eval_data.coco.reference_lists needs the word-level list "
                              f"(coco_single_target_once_*.json), this is a {split['info']['sample']['format']} "
                              f"list; fix the file name in conf/paper/globals.yml (word_list)")
    listed = {int(im["id"]) for im in split["images"]}
    for im in split["images"]:
        im["samples"] = ["word"] + (["caption"] if int(im["id"]) in listed & set(caption_ids) else [])
    only_caption = [i for i in caption_ids if i not in listed]
    if only_caption:
        sample_loaders, sample_split, sample_captions = coco_eval_split(
            {**instances, "images": [im for im in instances["images"] if im["id"] in set(only_caption)]}, captions,
            images, params.model_copy(update={"images": len(only_caption), "require_objects": False}),
            source=source)
    else:  # every sampled caption image is in the list (a small sample): the list's images are the whole split
        sample_loaders, sample_captions = {}, {**split_captions, "annotations": []}
        sample_split = {**split, "images": [], "annotations": [], "categories": []}
    for im in sample_split["images"]:
        im["samples"] = ["caption"]
    known = {c["id"] for c in split["categories"]}
    categories = split["categories"] + [c for c in sample_split["categories"] if c["id"] not in known]
    merged = {"info": {**sample_split["info"], "word_list": list_name,
                       "skipped": split["info"].get("skipped", [])}, "licenses": sample_split["licenses"],
              "images": sorted(sample_split["images"] + split["images"], key=lambda im: im["id"]),
              "annotations": sample_split["annotations"] + split["annotations"], "categories": categories}
    merged_captions = {**sample_captions, "images": merged["images"],
                       "annotations": sample_captions["annotations"] + split_captions["annotations"]}
    logger.info("%s: %d caption images and %d images of the word-level list %s", source, len(only_caption),
                len(listed), list_name)
    return {**sample_loaders, **loaders}, merged, merged_captions
