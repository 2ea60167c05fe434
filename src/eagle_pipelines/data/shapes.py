"""Seeded generator of the embedded shapes benchmark, written in COCO format.

Every image holds 1-3 non-overlapping coloured shapes on a noisy background. The generator returns the images
as uint8 arrays and two COCO dictionaries (instances with RLE masks, captions), so that the same pycocotools
loader reads it and real COCO val2017.

Determinism: image ``i`` of split ``s`` is drawn from ``numpy.random.default_rng([seed, SPLIT_CODES[s], i])``,
so the same seed gives the same bytes, and changing a split's size does not change the images it shares with a
smaller run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from skimage import draw

from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.extras import LazyModule

#: pycocotools (the `pipelines` extra), imported on first use: the parameter models import without it
mask_utils = LazyModule("pycocotools.mask", "COCO masks (pycocotools)")

SPLIT_CODES = {"train": 1, "val": 2, "eval": 3, "repope": 4,  # repope: the yes/no question images (eagle_repope)
               "mmvp": 5}  # mmvp: the image pairs of eagle_mmvp's embedded question set


@dataclass(frozen=True)
class DrawnObject:
    colour: str
    shape: str
    centre: tuple[float, float]  # (row, col)
    radius: int
    mask: np.ndarray = field(repr=False)  # (H, W) bool, exactly the painted pixels

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class ShapesSplit:
    """One generated split: images keyed by file name and the two COCO dictionaries."""

    images: dict[str, np.ndarray]
    instances: dict
    captions: dict


def category_names(params: ShapesParams) -> list[str]:
    """All (colour, shape) categories in a fixed order: colours outer, shapes inner."""
    return [f"{c} {s}" for c in params.colours for s in params.shapes]


def shape_mask(shape: str, centre: tuple[float, float], radius: int, size: int) -> np.ndarray:
    """Boolean mask of the pixels a shape covers (scikit-image rasterisation, clipped to the image)."""
    r0, c0 = centre
    mask = np.zeros((size, size), dtype=bool)
    if shape == "circle":
        rr, cc = draw.disk((r0, c0), radius, shape=(size, size))
    elif shape == "square":
        rr, cc = draw.rectangle(
            (round(r0 - radius), round(c0 - radius)), (round(r0 + radius), round(c0 + radius)), shape=(size, size)
        )
    elif shape == "triangle":  # upright isosceles triangle inscribed in the square of half-side `radius`
        rows = np.array([r0 - radius, r0 + radius, r0 + radius])
        cols = np.array([c0, c0 - radius, c0 + radius])
        rr, cc = draw.polygon(rows, cols, shape=(size, size))
    else:  # pragma: no cover - guarded by ShapesParams
        raise ValueError(f"unknown shape {shape!r}")
    mask[rr, cc] = True
    return mask


def caption_for(objects: list[DrawnObject]) -> str:
    """Names the objects left to right: 'a red circle', 'a red circle and a blue square',
    'a red circle, a blue square and a green triangle'."""
    names = [f"a {o.name}" for o in sorted(objects, key=lambda o: o.centre[1])]
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def _sample_categories(rng: np.random.Generator, params: ShapesParams, biased: bool) -> list[tuple[str, str]]:
    cats = [(c, s) for c in params.colours for s in params.shapes]
    lo, hi = params.objects_per_image
    count = int(rng.integers(lo, hi + 1))
    idx = rng.choice(len(cats), size=count, replace=False)
    chosen = [cats[i] for i in idx]
    bias = params.cooccurrence
    if not (biased and bias is not None):
        return chosen
    anchor, companion = bias.anchor_pair, bias.companion_pair
    if anchor not in chosen:
        return chosen
    others = [c for c in chosen if c != anchor]
    if rng.random() < bias.rate:  # X with Y
        if companion not in others:
            others = ([companion] + others)[: max(1, count - 1)]
    else:  # X without Y, and never alone
        others = [c for c in others if c != companion]
        if not others:
            pool = [c for c in cats if c not in (anchor, companion)]
            others = [pool[int(rng.integers(len(pool)))]]
    result = [anchor] + others
    rng.shuffle(result)
    return result


def _place(rng: np.random.Generator, params: ShapesParams, n: int) -> list[tuple[tuple[float, float], int]] | None:
    """Rejection-samples n centres and radii: shapes keep `min_gap` pixels apart (their bounding circles
    do) and their centres differ horizontally by `min_dx`, so the left-to-right order is unambiguous."""
    size = params.image_size
    rmin, rmax = params.radius
    placed: list[tuple[tuple[float, float], int]] = []
    for _ in range(200):
        if len(placed) == n:
            return placed
        r = int(rng.integers(rmin, rmax + 1))
        margin = r + 1
        centre = (float(rng.uniform(margin, size - margin)), float(rng.uniform(margin, size - margin)))
        ok = True
        for (pr, pc), pr_ in placed:
            # bounding circle of a square is r*sqrt(2)
            dist = np.hypot(centre[0] - pr, centre[1] - pc)
            if dist < (r + pr_) * 1.42 + params.min_gap or abs(centre[1] - pc) < params.min_dx:
                ok = False
                break
        if ok:
            placed.append((centre, r))
    return placed if len(placed) == n else None


def generate_image(params: ShapesParams, split: str, index: int) -> tuple[np.ndarray, list[DrawnObject]]:
    """Draws image `index` of `split`: returns the (H, W, 3) uint8 image and its objects."""
    rng = np.random.default_rng([params.seed, SPLIT_CODES[split], index])
    size = params.image_size
    lo, hi = params.background_range
    image = rng.integers(lo, hi + 1, size=(size, size, 3)).astype(np.int16)
    while True:
        cats = _sample_categories(rng, params, biased=(split == "train"))
        placement = _place(rng, params, len(cats))
        if placement is not None:
            break
    objects = []
    for (colour, shape), (centre, radius) in zip(cats, placement):
        mask = shape_mask(shape, centre, radius, size)
        rgb = np.asarray(params.colours[colour], dtype=np.int16)
        noise = rng.integers(-params.object_noise, params.object_noise + 1, size=(int(mask.sum()), 3))
        image[mask] = rgb + noise
        objects.append(DrawnObject(colour, shape, centre, radius, mask))
    return np.clip(image, 0, 255).astype(np.uint8), objects


def generate_split(params: ShapesParams, split: str) -> ShapesSplit:
    """Generates a whole split as COCO dictionaries plus images keyed by file name."""
    return generate_images(params, split, range(getattr(params.splits, split)))


def generate_images(params: ShapesParams, split: str, indices) -> ShapesSplit:
    """Images `indices` of `split` (the same bytes as in a whole split) as COCO dictionaries plus images."""
    names = category_names(params)
    categories = [
        {"id": i + 1, "name": name, "supercategory": name.split(" ")[1], "colour": name.split(" ")[0]}
        for i, name in enumerate(names)
    ]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, coco_images, annotations, captions = {}, [], [], []
    ann_id = 1
    for i in indices:
        image_id = SPLIT_CODES[split] * 1_000_000 + i
        file_name = f"{split}_{i:06d}.png"
        pixels, objects = generate_image(params, split, i)
        images[file_name] = pixels
        coco_images.append({"id": image_id, "file_name": file_name, "height": params.image_size,
                            "width": params.image_size})
        for obj in sorted(objects, key=lambda o: o.centre[1]):
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": cat_id[obj.name],
                "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": bbox, "iscrowd": 0,
            })
            ann_id += 1
        captions.append({"id": image_id, "image_id": image_id, "caption": caption_for(objects)})
    info = {"description": f"eagle_pipelines embedded shapes benchmark, split {split}",
            "seed": params.seed, "split": split, "background": params.background,
            "cooccurrence": (params.cooccurrence.model_dump() if params.cooccurrence and split == "train" else None)}
    instances = {"info": info, "licenses": [], "images": coco_images, "annotations": annotations,
                 "categories": categories}
    return ShapesSplit(images=images, instances=instances,
                       captions={"info": info, "licenses": [], "images": coco_images, "annotations": captions})
