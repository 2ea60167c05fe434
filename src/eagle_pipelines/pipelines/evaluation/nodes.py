"""Nodes of the evaluation pipeline: per-sample metric rows (resumable), then the tables."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd

from eagle_pipelines.core.evaluate import object_at, order_saliency, random_order, region_curves, score_methods
from eagle_pipelines.core.metrics import Curves
from eagle_pipelines.core.regions import RegionMap, params_hash
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.io.partitions import Skipped
from eagle_pipelines.models.base import Answer
from eagle_pipelines.parameters import parse
from eagle_pipelines.pipelines.attribution.nodes import attribution_prefix, the_prompt
from eagle_pipelines.pipelines.baselines.nodes import current_baseline_folders
from eagle_pipelines.pipelines.superpixels.nodes import superpixel_prefix

logger = logging.getLogger(__name__)
METRICS = ["insertion_auc", "deletion_auc", "highest_confidence", "insertion_auc_sensitive",
           "deletion_auc_sensitive", "highest_confidence_sensitive", "point_game_box", "point_game_mask"]
COLUMNS = ["method", "level", "protocol", "n_samples", "insertion_auc", "deletion_auc", "ahc",
           "insertion_auc_sensitive", "deletion_auc_sensitive", "ahc_sensitive", "point_game_box",
           "point_game_mask", "seconds_per_sample", "peak_memory_mb"]


def current_folders(vlm, eval_list: pd.DataFrame, superpixels: dict, attribution: dict) -> dict[str, str]:
    """The attribution folder of each level for the current parameters."""
    params = parse("attribution", attribution)
    sp = superpixel_prefix(vlm, parse("superpixels", superpixels))
    prompt = the_prompt(eval_list)
    return {level: attribution_prefix(level, vlm, sp, params, prompt) for level in params.levels}


def folder_items(store: dict, folder: str) -> list[tuple[str, Callable]]:
    """(item, loader) of the partitions of one folder of a partition store, in key order."""
    return [(key.split("/", 1)[1], store[key]) for key in sorted(store) if key.split("/", 1)[0] == folder]


def evaluation_prefix(level: str, folder: str, params) -> str:
    """Folder of the per-sample rows of one level's attribution folder under these evaluation parameters."""
    return f"{level}/{folder}-{params_hash(params.model_dump())}"


def baseline_evaluation_prefix(level: str, folder: str, params) -> str:
    """Folder of the per-sample rows of one baseline folder (``<method>/<level>-<hash>``) under these evaluation
    parameters: ``<level>/baselines/<method>-<hash>-<evaluation hash>``."""
    method, rest = folder.split("/", 1)
    return f"{level}/baselines/{method}-{rest.split('-', 1)[1]}-{params_hash(params.model_dump())}"


def current_prefixes(vlm, eval_list: pd.DataFrame, superpixels: dict, attribution: dict, evaluation: dict,
                     baselines: dict | None) -> set[str]:
    """The evaluation folders of the current configuration: EAGLE's (and the random floor's) per level, and one
    per configured baseline and level."""
    params = parse("evaluation", evaluation)
    prefixes = {evaluation_prefix(level, folder, params)
                for level, folder in current_folders(vlm, eval_list, superpixels, attribution).items()}
    if baselines is not None:
        prefixes |= {baseline_evaluation_prefix(level, folder, params) for (_m, level), folder in
                     current_baseline_folders(vlm, eval_list, superpixels, attribution, baselines).items()}
    return prefixes


def evaluate_samples(vlm, eagle_coco_eval_list: pd.DataFrame, eval_images: dict, eval_instances: dict,
                     eagle_coco_answers: dict, eagle_coco_sentence_attributions: dict,
                     eagle_coco_word_attributions: dict, superpixels: dict, attribution: dict,
                     evaluation: dict, eagle_coco_baselines: dict | None = None,
                     baselines: dict | None = None) -> dict[str, Callable]:
    """Lazy metric rows of every attribution of the current configuration: EAGLE (its own curves and the pixel
    protocol) beside the seeded random floor over the same regions, keyed
    ``<level>/<attribution folder>-<evaluation hash>/<item>``; and the pixel protocol of every baseline map of
    the current configuration, keyed ``<level>/baselines/<method>-<hash>-<evaluation hash>/<item>`` (one
    partition per method and item, so adding a method scores only its maps)."""
    params = parse("evaluation", evaluation)
    folders = current_folders(vlm, eagle_coco_eval_list, superpixels, attribution)
    index = CocoIndex(eval_instances, source="eval instances")
    answers = {a["image_id"]: Answer.from_dict(a) for a in eagle_coco_answers["answers"]}
    stores = {"sentence": eagle_coco_sentence_attributions, "word": eagle_coco_word_attributions}
    jobs = {}
    for level, folder in folders.items():
        prefix = evaluation_prefix(level, folder, params)
        for item, load in folder_items(stores[level], folder):
            jobs[f"{prefix}/{item}"] = _job(vlm, index, eval_images, answers, load, level, params)
    if baselines is not None and eagle_coco_baselines is not None:
        for (_method, level), folder in current_baseline_folders(vlm, eagle_coco_eval_list, superpixels,
                                                                  attribution, baselines).items():
            prefix = baseline_evaluation_prefix(level, folder, params)
            for key in sorted(k for k in eagle_coco_baselines if k.rsplit("/", 1)[0] == folder):
                item = key.rsplit("/", 1)[1]
                jobs[f"{prefix}/{item}"] = _baseline_job(vlm, index, eval_images, answers,
                                                         eagle_coco_baselines[key], params)
    return jobs


def _baseline_job(vlm, index: CocoIndex, images: dict, answers: dict, load, params):
    def compute():
        saliency, info = load()
        image_id = int(info["image_id"])
        try:
            image = vlm.model_image(index.load_image(image_id, images))
        except CocoFormatError as exc:
            return Skipped(str(exc))
        answer = answers[image_id]
        scorer = vlm.scorer(image, answer.prompt, answer.token_ids, info["positions"], batch_size=params.batch_size)
        target_id = int(info.get("annotation_id", 0))
        obj = None
        if "annotation_id" in info:
            found = [o for o in index.objects(image_id) if o.annotation_id == target_id]
            if found:
                obj = object_at(saliency.shape, found[0].mask, found[0].bbox)
        rows = score_methods(scorer, {info["method"]: (saliency, None)}, params.pixel_steps, obj)
        for row in rows:
            row.update({"image_id": image_id, "level": info["level"], "target": info.get("category", ""),
                        "annotation_id": target_id, "seconds": info.get("seconds"),
                        "peak_memory_mb": info.get("peak_memory_mb")})
        return {"rows": rows}

    return compute


def _job(vlm, index: CocoIndex, images: dict, answers: dict, load, level: str, params):
    def compute():
        a = load()
        image_id = int(a.meta["image_id"])
        try:
            image = vlm.model_image(index.load_image(image_id, images))
        except CocoFormatError as exc:
            return Skipped(str(exc))
        answer = answers[image_id]
        scorer = vlm.scorer(image, answer.prompt, answer.token_ids, a.target_positions,
                            batch_size=params.batch_size)
        regions = RegionMap(a.labels, a.meta.get("regions", {}))
        target_id = int(a.meta.get("annotation_id", 0))
        order = random_order(regions.n_regions, params.random_seed, image_id, target_id)
        random_curves = region_curves(scorer, regions, order)
        # EAGLE's pixel map is its order (first region brightest): the pixel protocol scores the order itself
        maps = {"eagle": (order_saliency(a.order, a.labels), Curves(a.area, a.insertion, a.deletion)),
                "random": (order_saliency(order, a.labels), random_curves)}
        obj = None
        if "annotation_id" in a.meta:
            found = [o for o in index.objects(image_id) if o.annotation_id == target_id]
            if found:
                obj = object_at(a.labels.shape, found[0].mask, found[0].bbox)
        rows = score_methods(scorer, maps, params.pixel_steps, obj)
        for row in rows:
            row.update({"image_id": image_id, "level": level, "target": a.meta.get("category", ""),
                        "annotation_id": target_id,
                        "seconds": a.seconds if row["method"] == "eagle" else None,
                        "peak_memory_mb": a.peak_memory_mb if row["method"] == "eagle" else None})
        return {"rows": rows}

    return compute


def current_rows(evaluation_store: dict, wanted: set[str]) -> list[dict]:
    """Every per-sample row under the evaluation folders `wanted` (``current_prefixes``)."""
    rows = []
    for key, load in evaluation_store.items():
        if key.rsplit("/", 1)[0] in wanted:
            rows.extend(load()["rows"])
    return rows


def aggregate_metrics(vlm, eagle_coco_eval_list: pd.DataFrame, eagle_coco_evaluation: dict, superpixels: dict,
                      attribution: dict, evaluation: dict, baselines: dict | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The paper-style table (returned twice: the latest copy and the versioned history) and the per-sample
    rows of the current configuration. One table row per method, level and protocol: means over samples
    (sensitive-token means over the samples that have sensitive tokens); seconds per sample and the peak memory
    of the explanation (EAGLE's search, a baseline's map; none for the random floor)."""
    wanted = current_prefixes(vlm, eagle_coco_eval_list, superpixels, attribution, evaluation, baselines)
    per_sample = pd.DataFrame(current_rows(eagle_coco_evaluation, wanted))
    if per_sample.empty:
        raise ValueError("no evaluated sample for the current parameters: did the attribution produce any?")
    per_sample = per_sample.sort_values(["level", "method", "protocol", "image_id", "annotation_id"])
    table = []
    for (method, level, protocol), group in per_sample.groupby(["method", "level", "protocol"], sort=True):
        row = {"method": method, "level": level, "protocol": protocol, "n_samples": len(group)}
        for col in METRICS:
            # point_game_* exist only at word level; means and maxima skip missing values (all missing: NaN)
            row[col.replace("highest_confidence", "ahc")] = group[col].mean() if col in group else np.nan
        row["seconds_per_sample"] = group["seconds"].mean()
        row["peak_memory_mb"] = group["peak_memory_mb"].max()
        table.append(row)
    metrics = pd.DataFrame(table, columns=COLUMNS)
    logger.info("metrics:\n%s", metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return metrics, metrics, per_sample.drop(columns=["eval_seconds", "curve"])
