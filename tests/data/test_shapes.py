"""The embedded shapes benchmark: masks, boxes, captions, determinism, bias, and the COCO loader."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from eagle_pipelines.data.coco import CocoIndex
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.shapes import generate_image, generate_split
from eagle_pipelines.pipelines.data_preparation.nodes import generate_shapes_split
from tests.conftest import COLOURS


def _anns_by_image(split):
    out = {im["id"]: [] for im in split.instances["images"]}
    for a in split.instances["annotations"]:
        out[a["image_id"]].append(a)
    return out


def test_masks_are_exactly_the_painted_pixels(eval_split, shapes_params):
    cats = {c["id"]: c for c in eval_split.instances["categories"]}
    by_image = _anns_by_image(eval_split)
    for im in eval_split.instances["images"]:
        pixels = eval_split.images[im["file_name"]].astype(int)
        painted = np.zeros(pixels.shape[:2], bool)
        for colour, rgb in shapes_params.colours.items():
            near = np.all(np.abs(pixels - np.array(rgb)) <= shapes_params.object_noise, axis=2)
            masks = [mask_utils.decode(a["segmentation"]).astype(bool) for a in by_image[im["id"]]
                     if cats[a["category_id"]]["colour"] == colour]
            union = np.logical_or.reduce(masks) if masks else np.zeros_like(near)
            np.testing.assert_array_equal(near, union, err_msg=f"{im['file_name']} colour {colour}")
            painted |= union
        lo, hi = shapes_params.background_range
        background = pixels[~painted]
        assert background.min() >= lo and background.max() <= hi


def test_boxes_are_the_tight_boxes_of_their_masks(eval_split):
    for a in eval_split.instances["annotations"]:
        mask = mask_utils.decode(a["segmentation"]).astype(bool)
        rows, cols = np.nonzero(mask)
        x, y, w, h = a["bbox"]
        assert (x, y) == (cols.min(), rows.min())
        assert (x + w, y + h) == (cols.max() + 1, rows.max() + 1)
        assert a["area"] == mask.sum() > 0


def test_objects_do_not_overlap_and_counts_follow_the_parameters(eval_split, shapes_params):
    for anns in _anns_by_image(eval_split).values():
        lo, hi = shapes_params.objects_per_image
        assert lo <= len(anns) <= hi
        masks = [mask_utils.decode(a["segmentation"]).astype(int) for a in anns]
        assert np.sum(masks, axis=0).max() == 1


def test_captions_name_the_objects_left_to_right(eval_split):
    cats = {c["id"]: c["name"] for c in eval_split.instances["categories"]}
    captions = {c["image_id"]: c["caption"] for c in eval_split.captions["annotations"]}
    for image_id, anns in _anns_by_image(eval_split).items():
        names = [f"a {cats[a['category_id']]}" for a in sorted(anns, key=lambda a: a["bbox"][0] + a["bbox"][2] / 2)]
        expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        assert captions[image_id] == expected


def test_same_seed_same_bytes_other_seed_other_bytes(shapes_params):
    small = shapes_params.model_dump()
    small["splits"] = {"train": 10, "val": 5, "eval": 5}

    def encoded(params):
        images, instances, captions = generate_shapes_split(params, "train")
        pngs = {}
        for key, image in images.items():
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            pngs[key] = buf.getvalue()
        return pngs, json.dumps(instances, sort_keys=True), json.dumps(captions, sort_keys=True)

    first, second = encoded(small), encoded(small)
    assert first == second
    other = encoded({**small, "seed": 1})
    assert other[0] != first[0]
    # a larger split keeps the images it shares with a smaller one
    bigger = {**small, "splits": {"train": 12, "val": 5, "eval": 5}}
    assert all(encoded(bigger)[0][k] == v for k, v in first[0].items())


def test_cooccurrence_bias_only_in_the_training_split():
    params = ShapesParams(colours=COLOURS, splits={"train": 1500, "val": 10, "eval": 1500},
                          cooccurrence={"anchor": "red circle", "companion": "blue square", "rate": 0.8})

    def rates(split):
        data = generate_split(params, split)
        cats = {c["id"]: c["name"] for c in data.instances["categories"]}
        with_x = [{cats[a["category_id"]] for a in anns} for anns in _anns_by_image(data).values()
                  if any(cats[a["category_id"]] == "red circle" for a in anns)]
        alone = sum(len(s) == 1 for s in with_x)
        return sum("blue square" in s for s in with_x) / len(with_x), alone, len(with_x)

    train_rate, train_alone, n_train = rates("train")
    eval_rate, eval_alone, n_eval = rates("eval")
    assert n_train > 150 and n_eval > 150
    assert abs(train_rate - 0.8) < 0.06
    assert train_alone == 0
    assert eval_rate < 0.3 and eval_alone > 0


def test_light_background_variant():
    params = ShapesParams(colours=COLOURS, background="light", splits={"train": 1, "val": 1, "eval": 1})
    image, objects = generate_image(params, "eval", 0)
    painted = np.logical_or.reduce([o.mask for o in objects])
    assert image[~painted].min() >= 150


def test_coco_loader_reads_back_masks_captions_and_images(eval_split):
    index = CocoIndex(eval_split.instances, eval_split.captions)
    images = {name.rsplit(".", 1)[0]: Image.fromarray(px) for name, px in eval_split.images.items()}
    first = index.image_ids()[0]
    info = index.image_info(first)
    np.testing.assert_array_equal(index.load_image(first, images), eval_split.images[info["file_name"]])
    objects = index.objects(first)
    assert objects and all(o.mask.shape == (info["height"], info["width"]) for o in objects)
    assert index.captions_of(first)[0].startswith("a ")
    assert len(index.category_names()) == 12


def test_coco_loader_names_a_missing_image(eval_split):
    from eagle_pipelines.data.coco import CocoFormatError

    index = CocoIndex(eval_split.instances)
    with pytest.raises(CocoFormatError, match="eval_000000.png"):
        index.load_image(index.image_ids()[0], {})
