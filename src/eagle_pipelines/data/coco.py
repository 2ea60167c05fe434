"""COCO-format reading with pycocotools, shared by the embedded shapes data and real COCO.

``CocoIndex`` wraps a ``pycocotools.coco.COCO`` built from already-loaded dictionaries (the catalog reads the
JSON files), and resolves each image in a mapping of images keyed by file stem (a ``PartitionedDataset``, or the
``core.images.SourceImage`` files of ``CocoFolder.images``) by its file name, decoded by ``core.images.as_rgb``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from eagle_pipelines.core.images import SourceImage, as_rgb, upright_size
from eagle_pipelines.errors import UserError
from eagle_pipelines.extras import require


class CocoFormatError(UserError, ValueError):
    """An annotation file or image does not follow the COCO format; the message names the item."""


@dataclass(frozen=True)
class CocoObject:
    annotation_id: int
    category: str
    bbox: tuple[float, float, float, float]  # x, y, w, h
    mask: np.ndarray  # (H, W) uint8
    words: tuple[str, ...] = ()  # how an answer may name it: the category's "words" when the file has them
                                 # (see coco_sample.category_words), else just the category name

    @property
    def names(self) -> tuple[str, ...]:
        """The words to look for in an answer, the category name first."""
        return self.words or (self.category,)


def split_file_name(stem: str, image) -> str:
    """The file name an image of `stem` gets in a split (``io/split_dataset.py``): a source file
    (``core.images.SourceImage``) keeps its own, its bytes copied as they are; a generated image (an array or a
    PIL image) is written as ``<stem>.png``."""
    return image.name if isinstance(image, SourceImage) else f"{stem}.png"


def image_size(image) -> tuple[int, int]:
    """(width, height) of an image as the split will decode it (EXIF orientation applied), without decoding a
    source file (its header only); (0, 0) when it cannot be read: the item is named and skipped when reached."""
    if isinstance(image, SourceImage):
        try:
            return image.size()
        except ValueError:
            return 0, 0
    image = image() if callable(image) else image
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return upright_size(*image.size, image.getexif().get(0x0112))


def _coco_from_dict(dataset: dict):
    coco = require("pycocotools.coco", "COCO-format data").COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoIndex:
    def __init__(self, instances: dict, captions: dict | None = None, source: str = "instances"):
        for key in ("images", "annotations", "categories"):
            if key not in instances:
                raise CocoFormatError(f"{source}: missing the '{key}' list of a COCO instances file")
        self.instances = _coco_from_dict(instances)
        self.captions = _coco_from_dict(captions) if captions is not None else None

    def image_ids(self) -> list[int]:
        return sorted(self.instances.getImgIds())

    def image_info(self, image_id: int) -> dict:
        return self.instances.imgs[image_id]

    def category_names(self) -> list[str]:
        return [c["name"] for c in self.instances.loadCats(self.instances.getCatIds())]

    def objects(self, image_id: int) -> list[CocoObject]:
        anns = self.instances.loadAnns(self.instances.getAnnIds(imgIds=[image_id], iscrowd=None))
        cats = self.instances.cats
        return [
            CocoObject(a["id"], cats[a["category_id"]]["name"], tuple(a["bbox"]), self.instances.annToMask(a),
                       tuple(cats[a["category_id"]].get("words", ())))
            for a in anns
        ]

    def captions_of(self, image_id: int) -> list[str]:
        if self.captions is None:
            return []
        return [a["caption"] for a in self.captions.loadAnns(self.captions.getAnnIds(imgIds=[image_id]))]

    def load_image(self, image_id: int, images: Mapping[str, Callable[[], Any]]) -> np.ndarray:
        """The (H, W, 3) uint8 RGB image of `image_id` from a partitioned image dataset keyed by file stem (loaders of
        PIL images, arrays or ``SourceImage`` files), decoded by ``core.images.as_rgb``."""
        file_name = self.image_info(image_id)["file_name"]
        key = str(PurePosixPath(file_name).with_suffix(""))
        if key not in images:
            raise CocoFormatError(f"image {image_id}: file '{file_name}' is not among the {len(images)} images")
        loaded = images[key]
        try:  # the decoder of every path (core/images.py): 16-bit scaled, EXIF orientation, non-finite refused
            return as_rgb(loaded() if callable(loaded) else loaded)
        except Exception as exc:  # noqa: BLE001 - any loader failure (PIL, fsspec, Kedro's DatasetError) means unreadable
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise CocoFormatError(f"image {image_id} ('{file_name}') cannot be read: {reason}") from None
