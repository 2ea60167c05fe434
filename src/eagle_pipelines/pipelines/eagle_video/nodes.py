"""Nodes of eagle_video: clips with a known cause -> answers -> EAGLE over each clip's spatio-temporal grid ->
EAGLE and the random floor under one protocol -> tables -> report. Thin: the search is ``api_video.explain_video``,
the metrics ``core/video_metrics.py``; per-clip results go through item stores (``io/items.py``), filed under the
fingerprint of everything that made them, so a rerun makes only what is missing.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from eagle_pipelines.console import progress_bar
from eagle_pipelines.api_video import explain_video
from eagle_pipelines.core.evaluate import random_order
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.video_metrics import order_rows
from eagle_pipelines.data.clips import ClipFormatError, generate_clip_split
from eagle_pipelines.io.clip_dataset import ClipSplit
from eagle_pipelines.io.executors import PendingItems
from eagle_pipelines.io.items import Job, Manifest, Skipped, fingerprint
from eagle_pipelines.models.base import Answer
from eagle_pipelines.parameters import EagleVideoParams, parse

logger = logging.getLogger(__name__)
METHODS = ("EAGLE", "random")


# --- data ---------------------------------------------------------------------------------------------------------
def prepare_eval_clips(shapes: dict, clips: dict) -> tuple[dict, dict]:
    """The evaluation clips (``clips.splits.eval`` of them): frames keyed ``<clip>/frame_00`` and YouTube-VIS
    annotations, for the split dataset (written whole, and not at all when unchanged)."""
    return generate_clip_split(parse("shapes", shapes), parse("clips", clips), "eval")


def _records(eval_split: ClipSplit, params: EagleVideoParams):
    records = eval_split.records
    return records if params.max_clips is None else records[: params.max_clips]


# --- answers ------------------------------------------------------------------------------------------------------
def answer_clips(vlm, eval_split: ClipSplit, eagle_video: EagleVideoParams) -> dict:
    """The greedy answer to each clip's question, with the hash of the frames it was made from. A clip that
    cannot be read is listed under ``errors`` with its reason; the rest finish."""
    answers, errors = [], []
    for rec in progress_bar(_records(eval_split, eagle_video), desc="answering clips", unit="clip"):
        try:
            loaded = eval_split.clip(rec.name)
        except ClipFormatError as exc:
            logger.error("clip %s skipped: %s", rec.name, exc)
            errors.append({"item": rec.name, "error": str(exc)})
            continue
        answer = vlm.generate_video(vlm.model_clip(loaded.frames), rec.prompt,
                                    max_new_tokens=eagle_video.max_new_tokens)
        answers.append({"item": rec.name, "clip_id": rec.clip_id, "clip_sha": loaded.sha, "reference": rec.answer,
                        "exact_match": answer.text == rec.answer and answer.finished, **answer.to_dict()})
    exact = sum(a["exact_match"] for a in answers) / max(1, len(answers))
    logger.info("answered %d clips (%d skipped); %.1f%% match the reference", len(answers), len(errors), 100 * exact)
    return {"model": vlm.name, "model_fingerprint": vlm.fingerprint, "answers": answers, "errors": errors,
            "summary": {"items": len(answers), "skipped": len(errors), "exact_match": exact}}


# --- explanation --------------------------------------------------------------------------------------------------
def _search_settings(params: EagleVideoParams) -> dict:
    return {"targets": params.targets, "strategy": params.strategy, "search_params": params.search_params(defaults=False),
            "rows": params.rows, "cols": params.cols, "lambda1": params.lambda1, "lambda2": params.lambda2}


def explain_clips(vlm, eval_split: ClipSplit, answers: dict, eagle_video: EagleVideoParams) -> PendingItems:
    """EAGLE on every answer that names the clip's event, over the clip's rows × cols grid per frame; what is
    explained is ``targets``: the words naming the event object ("red circle" of "a red circle"; the article is
    said whatever the clip shows) or every answer token. An answer that differs from the reference has no known
    cause and is skipped with that reason."""
    settings = _search_settings(eagle_video)
    jobs = []
    for a in answers["answers"]:
        fp = fingerprint("eagle_video", a["clip_sha"], a["token_ids"], answers["model_fingerprint"], settings)

        def compute(a=a):
            if not a["exact_match"]:
                return Skipped(f"the answer {a['text']!r} is not the clip's event {a['reference']!r}: its cause is "
                               f"not known")
            frames = eval_split.frames(a["item"], a["clip_sha"])
            tokens = [eval_split.record(a["item"]).event_category] if eagle_video.targets == "event" else None
            return explain_video(vlm, frames, a["prompt"], tokens=tokens, answer=Answer.from_dict(a),
                                 params=eagle_video, rows=eagle_video.rows, cols=eagle_video.cols,
                                 meta={"item": a["item"], "clip_id": a["clip_id"]})

        jobs.append(Job(a["item"], fp, compute, {"clip_id": a["clip_id"], "clip_sha": a["clip_sha"]}))
    return PendingItems(jobs, "EAGLE on clips", {"eagle_video": settings, "model": answers["model"],
                                                    "model_fingerprint": answers["model_fingerprint"]})


# --- evaluation ---------------------------------------------------------------------------------------------------
def evaluate_clips(vlm, eval_split: ClipSplit, answers: dict, attributions: Manifest,
                   eagle_video: EagleVideoParams) -> PendingItems:
    """EAGLE's order and a seeded random order of the same regions, under one protocol: insertion and deletion
    curves at ``curve_steps`` prefix lengths, the temporal hit (first region in the event frame) and the
    spatio-temporal Point Game (first region on the event object in that frame)."""
    by_item = {a["item"]: a for a in answers["answers"]}
    protocol = {"curve_steps": eagle_video.curve_steps, "random_seed": eagle_video.random_seed}
    jobs = []
    for key in attributions:
        info = attributions.info(key)
        a = by_item[key]
        fp = fingerprint("eagle_video.evaluation", info["fp"], a["clip_sha"], answers["model_fingerprint"], protocol)

        def compute(key=key, a=a):
            attribution = attributions.load(key)
            frames = eval_split.frames(key, a["clip_sha"])
            record = eval_split.record(key)
            regions = RegionMap(attribution.labels, {})
            scorer = vlm.video_scorer(vlm.model_clip(frames), a["prompt"], a["token_ids"],
                                      attribution.target_positions, batch_size=eagle_video.batch_size)
            orders = {"EAGLE": np.asarray(attribution.order),
                      "random": random_order(regions.n_regions, eagle_video.random_seed, int(a["clip_id"]))}
            rows = order_rows(scorer, regions, orders, record.event_frame, record.event_masks(),
                              eagle_video.curve_steps)
            rows[0].update({"forward_passes": int(attribution.forward_passes),  # EAGLE's row: its search's cost
                            "seconds": float(attribution.seconds)})
            return {"item": key, "clip_id": int(a["clip_id"]), "event_frame": record.event_frame,
                    "event": record.event_category, "n_regions": int(regions.n_regions), "rows": rows}

        jobs.append(Job(key, fp, compute, {"clip_id": a["clip_id"]}))
    return PendingItems(jobs, "evaluating clips", {"evaluation": protocol, **attributions.params})


METRIC_COLUMNS = ["insertion_auc", "deletion_auc", "temporal_hit", "st_point_game"]


def aggregate_metrics(evaluation: Manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per clip and method (``metrics_per_sample``) and their means per method (``metrics``), with EAGLE's forward
    passes and seconds per clip."""
    rows = []
    for key in evaluation:
        record = evaluation.load(key)
        for row in record["rows"]:
            rows.append({"item": key, "clip_id": record["clip_id"], "event": record["event"],
                         "event_frame": record["event_frame"], "n_regions": record["n_regions"],
                         **{k: v for k, v in row.items() if k != "curve"}})
    columns = ["item", "clip_id", "event", "event_frame", "n_regions", "method", *METRIC_COLUMNS,
               "highest_confidence", "forward_passes", "seconds", "eval_seconds", "first_region"]
    per_sample = pd.DataFrame(rows).reindex(columns=columns)
    table = []
    for method in METHODS:
        part = per_sample[per_sample["method"] == method]
        if part.empty:
            continue
        table.append({"method": method, "n_samples": len(part),
                      **{c: float(part[c].mean()) for c in METRIC_COLUMNS},
                      "forward_passes": float(part["forward_passes"].mean()) if method == "EAGLE" else np.nan,
                      "seconds": float(part["seconds"].mean()) if method == "EAGLE" else np.nan})
    metrics = pd.DataFrame(table, columns=["method", "n_samples", *METRIC_COLUMNS, "forward_passes", "seconds"])
    logger.info("eagle_video metrics:\n%s", metrics.to_string(index=False))
    return metrics, per_sample
