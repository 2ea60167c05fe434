"""eagle_coco's loader: the evaluation split from its configured source."""

from __future__ import annotations

import logging

from PIL import Image

from eagle_pipelines.data.coco_sample import EvalDataParams, coco_eval_split
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.reference_list import reference_eval_split
from eagle_pipelines.data.shapes import generate_split

logger = logging.getLogger(__name__)


def prepare_eval_split(eval_data: EvalDataParams, shapes: ShapesParams, coco_val2017,
                       reference_list, word_reference_list=None) -> tuple[dict, dict, dict]:
    """The evaluation split, from the source `eval_data.source` names: ``shapes`` generates the embedded eval
    split; ``coco`` draws the seeded sample of the COCO-format dataset `coco_val2017` (a lazy ``CocoFolder``,
    read only here); ``reference_list`` takes the images, answers and targets of a reference evaluation list (a
    lazy ``ReferenceList``) with `coco_val2017`'s images. All return images keyed by file stem, instances and
    captions. With ``eval_data.coco.reference_lists`` (a folder of the authors' lists), the word level takes the
    images, answers and tokens of its ``coco_single_target_once`` list (`word_reference_list`) beside the caption
    sample."""
    if eval_data.source == "reference_list":
        return reference_eval_split(reference_list.entries(), coco_val2017.images(), coco_val2017.instances(),
                                    source=reference_list.name)
    if eval_data.source == "shapes":
        data = generate_split(shapes, "eval")
        logger.info("shapes eval split: %d images, %d objects", len(data.images), len(data.instances["annotations"]))
        images = {name.rsplit(".", 1)[0]: Image.fromarray(pixels) for name, pixels in data.images.items()}
        return images, data.instances, data.captions
    word_list = None
    if eval_data.coco.reference_lists is not None:
        word_list = (word_reference_list.entries(), word_reference_list.name)
    return coco_eval_split(coco_val2017.instances(), coco_val2017.captions(), coco_val2017.images(), eval_data.coco,
                           source=coco_val2017.name, word_list=word_list)
