"""Nodes of the baselines pipeline: lazy, resumable pixel maps of every baseline for every EAGLE target."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from eagle_pipelines.core.baselines import BASELINES, run_baseline
from eagle_pipelines.core.memory import PeakMemory
from eagle_pipelines.core.regions import params_hash
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.io.partitions import Skipped
from eagle_pipelines.models.base import Answer, ModelInternals
from eagle_pipelines.parameters import AttributionParams, BaselinesParams, parse
from eagle_pipelines.pipelines.attribution.nodes import target_jobs, the_prompt
from eagle_pipelines.pipelines.superpixels.nodes import superpixel_prefix


def baseline_folder(method: str, level: str, vlm, sp_prefix: str, attribution: AttributionParams,
                    baselines: BaselinesParams, prompt: str) -> str:
    """Folder of one method's maps at one level: ``<method>/<level>-<hash>``; the hash covers the method's
    settings, the model, the prompt, the targets and (Captum) the superpixels, so changing any of them computes
    a new set beside the old one."""
    _func, needs_labels = BASELINES[method]
    return f"{method}/{level}-" + params_hash({
        "method": method, "settings": baselines.settings(method), "level": level, "model": vlm.fingerprint,
        "prompt": prompt, "superpixels": sp_prefix if needs_labels else None,
        "targets": attribution.word_targets if level == "word" else None,
    })


def current_baseline_folders(vlm, eval_list: pd.DataFrame, superpixels: dict, attribution: dict,
                             baselines: dict) -> dict[tuple[str, str], str]:
    """``{(method, level): folder}`` of the configured methods and EAGLE's levels."""
    attr = parse("attribution", attribution)
    params = parse("baselines", baselines)
    sp = superpixel_prefix(vlm, parse("superpixels", superpixels))
    prompt = the_prompt(eval_list)
    return {(m, level): baseline_folder(m, level, vlm, sp, attr, params, prompt)
            for m in params.methods for level in attr.levels}


def compute_baselines(vlm, eagle_coco_eval_list: pd.DataFrame, eval_images: dict, eval_instances: dict,
                      eagle_coco_answers: dict, eagle_coco_superpixels: dict, superpixels: dict, attribution: dict,
                      baselines: dict) -> dict[str, Callable]:
    """Lazy (H, W) float32 maps of every configured baseline for every target EAGLE explains (sentence: all
    answer tokens; word: each target's tokens), keyed ``<method>/<level>-<hash>/<image id>[_<target>]`` like
    EAGLE's items. Each map is stored with its seconds, peak memory and the target's positions and meta."""
    attr = parse("attribution", attribution)
    params = parse("baselines", baselines)
    if params.methods and not isinstance(vlm, ModelInternals):
        raise TypeError(f"the model '{vlm.name}' ({type(vlm).__name__}) does not expose its internals "
                        "(models/base.py: ModelInternals), which the baselines need; set baselines.methods: [] in "
                        "conf/<env>/parameters_baselines.yml to run without them")
    sp_prefix = superpixel_prefix(vlm, parse("superpixels", superpixels))
    index = CocoIndex(eval_instances, source="eval instances")

    def job(method: str, level: str):
        def make(image_id: int, answer: Answer, positions: list[int] | None, meta: dict):
            positions = list(range(len(answer.token_ids))) if positions is None else list(positions)
            info = {"method": method, "image_id": image_id, "level": level, "positions": positions, **meta}
            return _job(vlm, index, eval_images, eagle_coco_superpixels, f"{sp_prefix}/{image_id}", method,
                        params.settings(method), answer, info)
        return make

    jobs: dict = {}
    for method in params.methods:
        for level in attr.levels:
            jobs.update(target_jobs(
                level, attr, eagle_coco_eval_list, eagle_coco_answers, index, vlm.processor.tokenizer.decode,
                folder=lambda prompt, m=method, lv=level: baseline_folder(m, lv, vlm, sp_prefix, attr, params,
                                                                          prompt),
                make_job=job(method, level)))
    return jobs


def _job(vlm, index: CocoIndex, images: dict, superpixel_maps: dict, sp_key: str, method: str, settings: dict,
         answer: Answer, info: dict):
    def compute():
        image_id = info["image_id"]
        labels = None
        if BASELINES[method][1]:
            if sp_key not in superpixel_maps:
                return Skipped(f"image {image_id} has no superpixels (see the superpixels' skipped markers)")
            labels = superpixel_maps[sp_key]().labels
        try:
            image = vlm.model_image(index.load_image(image_id, images))
        except CocoFormatError as exc:
            return Skipped(str(exc))
        start = time.perf_counter()
        with PeakMemory(vlm.device) as peak:
            tf = vlm.teacher_forced(image, answer.prompt, answer.token_ids)
            result = run_baseline(method, tf, info["positions"], labels, **settings)
        return result.map, {**info, "seconds": time.perf_counter() - start, "peak_memory_mb": peak.mb,
                            "method_seconds": result.seconds}

    return compute
