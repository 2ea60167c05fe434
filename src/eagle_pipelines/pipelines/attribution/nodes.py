"""Nodes of the attribution pipeline."""

from __future__ import annotations

import logging

import pandas as pd
from tqdm.auto import tqdm

from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.models.base import VisionLanguageModel
from eagle_pipelines.parameters import parse

logger = logging.getLogger(__name__)


def build_eval_list(eval_instances: dict, eval_captions: dict, eagle_coco: dict) -> pd.DataFrame:
    """The images to explain, in id order: image_id, file_name, prompt and the first reference caption."""
    params = parse("eagle_coco", eagle_coco)
    index = CocoIndex(eval_instances, eval_captions, source="eval instances")
    ids = index.image_ids()[: params.max_images]
    rows = [{
        "image_id": i,
        "file_name": index.image_info(i)["file_name"],
        "prompt": params.prompt,
        "reference": (index.captions_of(i) or [""])[0],
    } for i in ids]
    return pd.DataFrame(rows, columns=["image_id", "file_name", "prompt", "reference"])


def generate_answers(vlm: VisionLanguageModel, eval_list: pd.DataFrame, eval_images: dict,
                     eval_instances: dict, eagle_coco: dict) -> dict:
    """Greedy answers for every listed image. An image that cannot be read is logged with its id and reason
    and recorded under ``errors``; the rest finish."""
    params = parse("eagle_coco", eagle_coco)
    index = CocoIndex(eval_instances, source="eval instances")
    answers, errors = [], []
    rows = list(eval_list.itertuples(index=False))
    with tqdm(total=len(rows), desc="answering", unit="image") as bar:
        for lo in range(0, len(rows), params.batch_size):
            chunk, images = [], []
            for row in rows[lo:lo + params.batch_size]:
                try:
                    images.append(index.load_image(int(row.image_id), eval_images))
                    chunk.append(row)
                except (CocoFormatError, OSError, ValueError) as exc:
                    logger.error("image %s skipped: %s", row.image_id, exc)
                    errors.append({"image_id": int(row.image_id), "error": str(exc)})
            prompts = {r.prompt for r in chunk}
            for prompt in prompts:
                sel = [k for k, r in enumerate(chunk) if r.prompt == prompt]
                outs = vlm.generate_batch([images[k] for k in sel], prompt, max_new_tokens=params.max_new_tokens)
                for k, answer in zip(sel, outs):
                    row = chunk[k]
                    answers.append({"image_id": int(row.image_id), "reference": row.reference,
                                    "exact_match": answer.text == row.reference, **answer.to_dict()})
            bar.update(len(rows[lo:lo + params.batch_size]))
    answers.sort(key=lambda a: a["image_id"])
    exact = sum(a["exact_match"] for a in answers) / max(1, len(answers))
    logger.info("answered %d images (%d skipped); %.1f%% match the reference caption", len(answers),
                len(errors), 100 * exact)
    return {"model": vlm.name, "answers": answers, "errors": errors,
            "summary": {"images": len(answers), "skipped": len(errors), "exact_match": exact}}
