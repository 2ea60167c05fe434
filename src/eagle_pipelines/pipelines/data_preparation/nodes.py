"""Nodes of the data preparation pipeline (thin wrappers over ``eagle_pipelines.data``)."""

from __future__ import annotations

import logging

import pandas as pd
from PIL import Image

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


def prepare_mmvp(mmvp_questions: pd.DataFrame, mmvp_images: dict, mmvp: dict) -> pd.DataFrame:
    """MMVP's questions as an evaluation list (image_id, file_name, prompt, reference, answer, options, pair)."""
    frame = mmvp_eval_list(mmvp_questions, mmvp_images, parse("mmvp", mmvp))
    logger.info("mmvp: %d questions on %d image pairs", len(frame), frame["pair"].nunique())
    return frame
