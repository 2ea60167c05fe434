"""The embedded yes/no question set (eagle_repope's, which eagle_mitigation reuses): images of the dedicated
``repope`` shapes split that show the co-occurrence anchor without its companion (the biased questions, whose known
cause is the anchor) and control images, as COCO instances and a POPE-format question list."""

from __future__ import annotations

import logging
import numpy as np
from PIL import Image

from eagle_pipelines.core import hallucination as hal
from eagle_pipelines.data.params import RepopeQuestionParams, ShapesParams
from eagle_pipelines.data.shapes import category_names, generate_image, generate_images

logger = logging.getLogger(__name__)
#: the shapes split the question images are drawn from
SPLIT = "repope"


def generate_question_split(shapes: ShapesParams, q: RepopeQuestionParams,
                            question_template: str) -> tuple[dict[str, Image.Image], dict, str]:
    """The embedded question set: images of the dedicated ``repope`` shapes split (unbiased) that show the
    co-occurrence anchor X without its companion Y (biased questions) plus control images, as COCO instances and
    a POPE-format question list (JSON lines) with the known cause of each biased question."""
    if shapes.cooccurrence is None:
        raise ValueError("eagle_repope on the embedded data needs shapes.cooccurrence (the training bias whose "
                         "anchor is the known cause); set it in conf/base/parameters_data_preparation.yml")
    anchor, companion = shapes.cooccurrence.anchor, shapes.cooccurrence.companion
    picked, n_biased, n_other = [], 0, 0
    for i in range(q.scan_limit):
        _, objects = generate_image(shapes, SPLIT, i)
        names = {o.name for o in objects}
        biased = anchor in names and companion not in names
        if biased and q.exclude_confounders and confounded(objects, anchor, companion):
            continue  # neither a biased case with a known cause nor a control
        if biased and n_biased < q.biased:
            picked.append((i, names))
            n_biased += 1
        elif not biased and n_other < q.controls:
            picked.append((i, names))
            n_other += 1
        if n_biased >= q.biased and n_other >= q.controls:
            break
    else:
        raise ValueError(f"eagle_repope.questions.scan_limit = {q.scan_limit} images held only {n_biased} biased "
                         f"cases of the {q.biased} asked for; raise the limit or lower questions.biased")
    data = generate_images(shapes, SPLIT, [i for i, _ in picked])
    files = [f"{SPLIT}_{i:06d}.png" for i, _ in picked]
    records = hal.shapes_questions(list(zip(files, [n for _, n in picked])), category_names(shapes), anchor,
                                   companion, q.controls, np.random.default_rng(q.seed), question_template)
    logger.info("eagle_repope questions: %d biased ('Is there a %s?' beside a %s), %d controls, from %d images",
                n_biased, companion, anchor, len(records) - n_biased, len(picked))
    images = {name.rsplit(".", 1)[0]: Image.fromarray(px) for name, px in data.images.items()}
    return images, data.instances, hal.write_pope_questions(records)


def confounded(objects, anchor: str, companion: str) -> bool:
    """Whether an object other than the anchor shares the companion's colour or shape (a blue circle or a red
    square beside "Is there a blue square?"): such an object may trigger a "Yes" by itself."""
    colour, shape = companion.split(" ")
    return any(o.name != anchor and (o.colour == colour or o.shape == shape) for o in objects)
