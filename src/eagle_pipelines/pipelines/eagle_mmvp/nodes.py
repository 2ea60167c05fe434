"""eagle_mmvp's loader: MMVP-style questions (a prompt per question) from the configured source, as the evaluation
split and the evaluation list of the experiment template.

- ``mmvp``: the local MMVP copy (``mmvp_source``): question ``Index`` asks about image ``<Index>.jpg``; the prompt
  is the question, one line per option and the instruction (``data/mmvp.py``), the reference ``(a) Open``.
- ``embedded``: pairs of shapes images (the dedicated split ``mmvp``) that differ in one visual detail, MMVP's
  idea: the second image of a pair is the first with one object recoloured (a red circle becomes a green circle).
  Each image carries two yes/no questions in the words the embedded model was trained on ("Is there a red circle
  in the image?", then the same about the green circle), so each question is asked of both images of its pair
  and gets a different answer on each: four questions per pair, two per image.

The split carries no instance annotations (MMVP has none; for the embedded set, yes/no answers name no object),
so the word level (``attribution.word_targets: objects``) has no target and the tables hold the sentence level:
the explanation of the whole answer. Each image entry lists its objects by name (``objects``) and its ``pair``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from PIL import Image

from eagle_pipelines.data.mmvp import MmvpParams, mmvp_eval_list
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.reference_list import mmvp_reference_questions
from eagle_pipelines.data.shapes import DrawnObject, generate_image
from eagle_pipelines.parameters import EagleMmvpParams

logger = logging.getLogger(__name__)
SPLIT = "mmvp"
EVAL_LIST_COLUMNS = ["item", "image_id", "file_name", "prompt", "reference", "pair"]


def prepare_questions(eagle_mmvp: EagleMmvpParams, shapes: ShapesParams, mmvp_source,
                      reference_list) -> tuple[tuple, pd.DataFrame]:
    """The evaluation split (images keyed by file stem, COCO instances without annotations, no captions) and the
    evaluation list (item = the question's index, image_id, file_name, prompt, reference, pair) of the source
    `eagle_mmvp.source` names. `mmvp_source` and `reference_list` are lazy: read only when the source needs them
    (``reference_list``: the reference's MMVP list, answers and targets as listed, images from `mmvp_source`)."""
    if eagle_mmvp.source == "reference_list":
        images, info, rows = mmvp_reference_questions(reference_list.entries(), mmvp_source.images(),
                                                      source=reference_list.name)
        description = f"the reference list {reference_list.name} on MMVP images ({mmvp_source.name})"
    elif eagle_mmvp.source == "mmvp":
        images, info, rows = _mmvp_questions(eagle_mmvp, mmvp_source)
        description = f"MMVP questions' images ({mmvp_source.name})"
    else:
        images, info, rows = embedded_questions(shapes, eagle_mmvp)
        description = "eagle_mmvp embedded question set (shapes split mmvp)"
    if eagle_mmvp.max_questions:
        rows = rows[: eagle_mmvp.max_questions]
    used = {r["image_id"] for r in rows}
    info = [i for i in info if i["id"] in used]
    images = {k: v for k, v in images.items() if int(k) in used}
    instances = {"info": {"description": description, "source": eagle_mmvp.source}, "licenses": [], "images": info,
                 "annotations": [], "categories": []}
    frame = pd.DataFrame(rows, columns=EVAL_LIST_COLUMNS)
    logger.info("eagle_mmvp (%s): %d questions on %d images (%d pairs)", eagle_mmvp.source, len(frame), len(info),
                frame["pair"].nunique())
    return (images, instances, None), frame


def _mmvp_questions(params: EagleMmvpParams, source) -> tuple[dict, list[dict], list[dict]]:
    listed = mmvp_eval_list(source.questions(), source.images(),
                            MmvpParams(instruction=params.instruction, prompt_format=params.prompt_format,
                                       max_questions=params.max_questions),
                            source=f"{source.name}/Questions.csv")
    loaders = source.images()
    images, info, rows = {}, [], []
    for row in listed.itertuples(index=False):
        stem = str(row.image_id)
        if stem not in images:
            image = loaders[stem]()
            images[stem] = image.convert("RGB")
            info.append({"id": int(row.image_id), "file_name": f"{stem}.png", "width": image.width,
                         "height": image.height, "mmvp_file": row.file_name, "pair": int(row.pair)})
        rows.append({"item": stem, "image_id": int(row.image_id), "file_name": f"{stem}.png", "prompt": row.prompt,
                     "reference": row.reference, "pair": int(row.pair)})
    return images, info, rows


def embedded_questions(shapes: ShapesParams, params: EagleMmvpParams) -> tuple[dict, list[dict], list[dict]]:
    """The embedded question set: `params.embedded.pairs` pairs of images, 1 and 2, 3 and 4..., each the same
    shapes image with and without one object recoloured; questions 4k+1..4k+4 ask pair k about the original
    object (image a, then image b) and about the recoloured one (image a, then b). Returns images keyed by file
    stem, the COCO image entries and the question rows."""
    embedded = params.embedded
    drawing = shapes.model_copy(update={"seed": embedded.seed})
    images, info, rows = {}, [], []
    for k in range(embedded.pairs):
        pixels, objects = generate_image(drawing, SPLIT, k)
        rng = np.random.default_rng([embedded.seed, k])
        changed, colour = _detail(rng, shapes, objects)
        other = _recolour(rng, shapes, pixels, changed, colour)
        names = [o.name for o in objects]
        variants = [(pixels, names), (other, [f"{colour} {o.shape}" if o is changed else o.name for o in objects])]
        if rng.random() < 0.5:  # the recoloured image comes first in half of the pairs
            variants.reverse()
        ids = [2 * k + 1, 2 * k + 2]
        for image_id, (image, present) in zip(ids, variants):
            images[str(image_id)] = Image.fromarray(image)
            info.append({"id": image_id, "file_name": f"{image_id}.png", "width": shapes.image_size,
                         "height": shapes.image_size, "objects": present, "pair": k})
        for name in (changed.name, f"{colour} {changed.shape}"):
            prompt = embedded.question_template.format(name=name) + embedded.prompt_suffix
            for image_id, (_, present) in zip(ids, variants):
                rows.append({"item": str(len(rows) + 1), "image_id": image_id, "file_name": f"{image_id}.png",
                             "prompt": prompt, "reference": "Yes" if name in present else "No", "pair": k})
    return images, info, rows


def _detail(rng: np.random.Generator, shapes: ShapesParams, objects: list[DrawnObject]) -> tuple[DrawnObject, str]:
    """The object a pair recolours and its new colour: one no object of the image has with that shape, so the
    two images differ in exactly that object's name."""
    names = {o.name for o in objects}
    options = [(o, c) for o in objects for c in shapes.colours if f"{c} {o.shape}" not in names]
    return options[int(rng.integers(len(options)))]


def _recolour(rng: np.random.Generator, shapes: ShapesParams, pixels: np.ndarray, obj: DrawnObject,
              colour: str) -> np.ndarray:
    """`pixels` with `obj` painted in `colour` (the benchmark's colour noise), everything else unchanged."""
    out = pixels.astype(np.int16)
    noise = rng.integers(-shapes.object_noise, shapes.object_noise + 1, size=(int(obj.mask.sum()), 3))
    out[obj.mask] = np.asarray(shapes.colours[colour], dtype=np.int16) + noise
    return np.clip(out, 0, 255).astype(np.uint8)
