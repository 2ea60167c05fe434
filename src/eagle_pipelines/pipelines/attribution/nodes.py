"""Nodes of the attribution pipeline."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd
from tqdm.auto import tqdm

from eagle_pipelines.api import explain
from eagle_pipelines.core.regions import params_hash
from eagle_pipelines.core.targets import phrase_positions
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.io.partitions import Skipped
from eagle_pipelines.models.base import Answer, VisionLanguageModel
from eagle_pipelines.parameters import AttributionParams, parse

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


def the_prompt(eval_list: pd.DataFrame) -> str:
    """The one prompt of an eagle_coco evaluation list. The evaluation, the baselines and the report find each
    level's results by the prompt's folder, so a list with several prompts is refused rather than half read."""
    prompts = list(dict.fromkeys(eval_list["prompt"])) if len(eval_list) else [""]
    if len(prompts) > 1:
        raise ValueError(f"the evaluation list holds {len(prompts)} different prompts (e.g. {prompts[0]!r}, "
                         f"{prompts[1]!r}); eagle_coco explains one prompt per run (eagle_coco.prompt). Explain "
                         f"per-image prompts with the Python API (docs/paper.md#mmvp)")
    return prompts[0]


def attribution_prefix(level: str, vlm, superpixel_prefix: str, params: AttributionParams, prompt: str) -> str:
    """Folder of one configuration's attributions: changing any of these recomputes them (not the superpixels)."""
    return f"{params.strategy}-" + params_hash({
        "level": level, "model": vlm.fingerprint, "prompt": prompt, "superpixels": superpixel_prefix,
        "lambda1": params.lambda1, "lambda2": params.lambda2, "search": params.search_params(),
        "targets": params.word_targets if level == "word" else None,
    })


def _targets(level: str, params: AttributionParams, index: CocoIndex, image_id: int, answer: Answer,
             decode) -> list[tuple[str, list[int] | None, dict]]:
    """(key suffix, positions, meta) of each attribution of one image at `level`."""
    if level == "sentence":
        return [("", None, {})]
    jobs = []
    if params.word_targets == "objects":
        for obj in index.objects(image_id):
            # the first of the object's words (category name, then its plural and synonyms when the annotation
            # file lists them: data/coco_sample.py) that the answer contains
            found = ((w, phrase_positions(decode, answer.token_ids, w)) for w in obj.names)
            word, positions = next(((w, p) for w, p in found if p), (obj.category, []))
            meta = {"annotation_id": obj.annotation_id, "category": obj.category, "bbox": list(obj.bbox)}
            if word != obj.category:
                meta["word"] = word
            jobs.append((f"_{obj.annotation_id}", positions, meta))
        return jobs
    for target in params.word_targets:
        if isinstance(target, int):
            positions = [target] if 0 <= target < len(answer.token_ids) else []
        else:
            positions = phrase_positions(decode, answer.token_ids, target)
        jobs.append((f"_{target}", positions, {"word": target}))
    return jobs


def explain_answers(level: str, vlm, eval_list: pd.DataFrame, eval_images: dict, eval_instances: dict,
                    answers: dict, superpixel_maps: dict, superpixels: dict, attribution: dict) -> dict:
    """Lazy EAGLE attributions of every listed image at `level` (``sentence``: all answer tokens; ``word``:
    each target's tokens), keyed ``<strategy-hash>/<image id>[_<target>]``. The partitioned output computes
    only the missing ones; an unreadable image or a target the answer does not mention is recorded as skipped
    with its reason."""
    from eagle_pipelines.pipelines.superpixels.nodes import superpixel_prefix

    params = parse("attribution", attribution)
    if level not in params.levels:
        return {}
    sp_prefix = superpixel_prefix(vlm, parse("superpixels", superpixels))
    index = CocoIndex(eval_instances, source="eval instances")
    return target_jobs(
        level, params, eval_list, answers, index, vlm.processor.tokenizer.decode,
        folder=lambda prompt: attribution_prefix(level, vlm, sp_prefix, params, prompt),
        make_job=lambda image_id, answer, positions, meta: _job(
            vlm, index, eval_images, superpixel_maps, f"{sp_prefix}/{image_id}", image_id, answer, positions,
            params, {"image_id": image_id, "level": level, **meta}))


def target_jobs(level: str, params: AttributionParams, eval_list: pd.DataFrame, answers: dict, index: CocoIndex,
                decode, folder: Callable[[str], str], make_job: Callable) -> dict:
    """``{<folder(prompt)>/<image id>[_<target>]: make_job(image_id, answer, positions, meta)}`` over every
    listed image's targets at `level` (positions None: all answer tokens). An image without an answer, or a
    target its answer does not mention, gets a Skipped with the reason instead. EAGLE and the baselines share
    this, so they explain exactly the same targets."""
    by_id = {a["image_id"]: Answer.from_dict(a) for a in answers["answers"]}
    errors = {e["image_id"]: e["error"] for e in answers.get("errors", [])}
    jobs: dict = {}
    for row in eval_list.itertuples(index=False):
        image_id = int(row.image_id)
        prefix = folder(row.prompt)
        answer = by_id.get(image_id)
        if answer is None:
            jobs[f"{prefix}/{image_id}"] = Skipped(f"image {image_id} has no answer: "
                                                   f"{errors.get(image_id, 'it is not in answers.json')}")
            continue
        for suffix, positions, meta in _targets(level, params, index, image_id, answer, decode):
            key = f"{prefix}/{image_id}{suffix}"
            if positions == []:
                jobs[key] = Skipped(f"image {image_id}: the answer {answer.text!r} does not mention "
                                    f"{meta.get('category', meta.get('word'))!r}")
                continue
            jobs[key] = make_job(image_id, answer, positions, meta)
    return jobs


def _job(vlm, index, images, superpixel_maps, sp_key, image_id, answer, positions, params, meta):
    def compute():
        if sp_key not in superpixel_maps:
            return Skipped(f"image {image_id} has no superpixels (see the superpixels' skipped markers)")
        try:
            image = index.load_image(image_id, images)
        except CocoFormatError as exc:
            return Skipped(str(exc))
        return explain(vlm, image, answer.prompt, tokens=positions, strategy=params.strategy,
                       lambda1=params.lambda1, lambda2=params.lambda2, batch_size=params.batch_size,
                       memory_budget_mb=params.memory_budget_mb, answer=answer, regions=superpixel_maps[sp_key](),
                       search_params=params.search_params(), meta=meta)

    return compute


def explain_sentences(vlm, eagle_coco_eval_list, eval_images, eval_instances, eagle_coco_answers,
                      eagle_coco_superpixels, superpixels, attribution) -> dict:
    """Sentence level: every answer token of each image."""
    return explain_answers("sentence", vlm, eagle_coco_eval_list, eval_images, eval_instances, eagle_coco_answers,
                           eagle_coco_superpixels, superpixels, attribution)


def explain_words(vlm, eagle_coco_eval_list, eval_images, eval_instances, eagle_coco_answers,
                  eagle_coco_superpixels, superpixels, attribution) -> dict:
    """Word level: one attribution per target (each annotated object's words, or the configured words)."""
    return explain_answers("word", vlm, eagle_coco_eval_list, eval_images, eval_instances, eagle_coco_answers,
                           eagle_coco_superpixels, superpixels, attribution)
