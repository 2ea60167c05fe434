"""Nodes of the data preparation pipeline (thin wrappers over ``eagle_pipelines.data``)."""

from __future__ import annotations

import logging

import pandas as pd
from PIL import Image

from eagle_pipelines.data.coco_sample import coco_eval_split
from eagle_pipelines.data.mmvp import mmvp_eval_list
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.parameters import parse

logger = logging.getLogger(__name__)


def generate_shapes_split(shapes: dict, split: str) -> tuple[dict[str, Image.Image], dict, dict]:
    """Generates one split of the shapes benchmark.

    Returns the images keyed by file stem (a partitioned PNG dataset), the COCO instances dictionary and the
    COCO captions dictionary.
    """
    params = parse("shapes", shapes)
    data = generate_split(params, split)
    logger.info("shapes %s split: %d images, %d objects", split, len(data.images),
                len(data.instances["annotations"]))
    images = {name.rsplit(".", 1)[0]: Image.fromarray(pixels) for name, pixels in data.images.items()}
    return images, data.instances, data.captions


def prepare_eval_split(eval_data: dict, shapes: dict, coco_val2017) -> tuple[dict, dict, dict]:
    """eagle_coco's evaluation split, from the source `eval_data.source` names: ``shapes`` generates the embedded
    eval split; ``coco`` draws the seeded sample of the COCO-format dataset `coco_val2017` (a lazy
    ``CocoFolder``, read only here). Both return images keyed by file stem, instances and captions."""
    params = parse("eval_data", eval_data)
    if params.source == "shapes":
        return generate_shapes_split(shapes, "eval")
    return coco_eval_split(coco_val2017.instances(), coco_val2017.captions(), coco_val2017.images(), params.coco,
                           source=coco_val2017.name)


def prepare_mmvp(mmvp_questions: pd.DataFrame, mmvp_images: dict, mmvp: dict) -> pd.DataFrame:
    """MMVP's questions as an evaluation list (image_id, file_name, prompt, reference, answer, options, pair)."""
    frame = mmvp_eval_list(mmvp_questions, mmvp_images, parse("mmvp", mmvp))
    logger.info("mmvp: %d questions on %d image pairs", len(frame), frame["pair"].nunique())
    return frame
