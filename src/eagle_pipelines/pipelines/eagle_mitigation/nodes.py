"""Nodes of eagle_mitigation: the task set (eagle_repope's question set, plus a caption per image), the answers of
every guidance setting of the sweep, the diagnostics of a few answers, the table and the report.

Per-item work goes through item stores (``io/items.py``): each setting's answers are one item, filed under the
fingerprint of the setting, the tasks, the images' bytes and the model, so widening the sweep makes only the new
settings; each diagnosed answer is one item likewise. The arithmetic is in ``core/diagnostics.py``, decoding in
``models/guidance.py``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from functools import partial

import pandas as pd
import torch

from eagle_pipelines.api import explain
from eagle_pipelines.core import hallucination as hal
from eagle_pipelines.core.diagnostics import best_setting, diagnose, setting_metrics
from eagle_pipelines.core.regions import superpixels as make_regions
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.questions import SPLIT, generate_question_split
from eagle_pipelines.data.shapes import category_names, generate_images
from eagle_pipelines.engine import explain_image
from eagle_pipelines.io.executors import PendingItems
from eagle_pipelines.io.items import Job, Manifest, fingerprint
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.models.base import Answer
from eagle_pipelines.models.guidance import EvidenceCache, GuidedDecoder, LogitLens
from eagle_pipelines.parameters import (
    EagleMitigationParams,
    GuidanceParams,
    MitigationDiagnosticsParams,
    RepopeQuestionParams,
)

logger = logging.getLogger(__name__)
TASK_COLUMNS = ["task_id", "image_id", "file_name", "kind", "prompt", "label", "object", "objects",
                "max_new_tokens"]
KINDS = ("biased_question", "control_question", "biased_caption", "unbiased_caption")


# --- tasks --------------------------------------------------------------------------------------------------------
def prepare_task_split(shapes: ShapesParams, questions: RepopeQuestionParams, question_template: str
                       ) -> tuple[tuple, str]:
    """eagle_repope's embedded question set (the same selection: images with the anchor X and without the
    companion Y asked "Is there a Y?", plus controls) as a split with the images' reference captions (images,
    instances, captions) and the question list (POPE format)."""
    images, _, text = generate_question_split(shapes, questions, question_template)
    indices = sorted(int(re.search(r"(\d+)$", stem).group(1)) for stem in images)
    split = generate_images(shapes, SPLIT, indices)  # the same images, with their reference captions
    return (images, split.instances, split.captions), text


def build_tasks(eval_split: CocoSplit, pope_questions: str, caption_prompt: str, question_max_new_tokens: int,
                caption_max_new_tokens: int) -> pd.DataFrame:
    """The task list: every question of the list, and a caption task per image (the biased images' captions
    measure the companion's hallucination, the controls' the unbiased caption exact match)."""
    records = hal.read_pope_questions(pope_questions, source="eagle_mitigation questions")
    instances, captions = eval_split.instances, eval_split.captions
    ids = {i["file_name"]: i["id"] for i in instances["images"]}
    names = {c["id"]: c["name"] for c in instances["categories"]}
    present: dict[int, set] = {}
    for a in instances["annotations"]:
        present.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    reference = {c["image_id"]: c["caption"] for c in captions["annotations"]}
    rows, kind_of_image = [], {}
    for r in records:
        image_id = ids[r["image"]]
        kind = "biased_question" if r.get("kind") == "biased" else "control_question"
        kind_of_image[image_id] = "biased_caption" if kind == "biased_question" else "unbiased_caption"
        rows.append({"image_id": image_id, "file_name": r["image"], "kind": kind, "prompt": r["text"],
                     "label": r["label"], "object": r["object"], "max_new_tokens": question_max_new_tokens})
    for file_name, image_id in ids.items():
        rows.append({"image_id": image_id, "file_name": file_name, "kind": kind_of_image[image_id],
                     "prompt": caption_prompt, "label": reference[image_id], "object": "",
                     "max_new_tokens": caption_max_new_tokens})
    for i, row in enumerate(rows):
        row["task_id"] = i + 1
        row["objects"] = ";".join(sorted(present.get(row["image_id"], set())))
    tasks = pd.DataFrame(rows, columns=TASK_COLUMNS)
    logger.info("eagle_mitigation tasks: %s", tasks["kind"].value_counts().to_dict())
    return tasks


def prepare_tasks(shapes: ShapesParams, questions: RepopeQuestionParams, question_template: str,
                  caption_prompt: str, question_max_new_tokens: int, caption_max_new_tokens: int
                  ) -> tuple[tuple, pd.DataFrame]:
    """``prepare_task_split`` then ``build_tasks`` in one call (for code that needs the tasks without the
    catalog): the split (images, instances, captions) and the task list."""
    from eagle_pipelines.io.split_dataset import CocoSplit as Split

    split, text = prepare_task_split(shapes, questions, question_template)
    return split, build_tasks(Split("", split[1], split[2]), text, caption_prompt, question_max_new_tokens,
                              caption_max_new_tokens)


def _task_records(tasks: pd.DataFrame) -> list[dict]:
    out = []
    for r in tasks.to_dict("records"):
        out.append({"task_id": int(r["task_id"]), "image_id": int(r["image_id"]), "kind": str(r["kind"]),
                    "prompt": str(r["prompt"]), "label": str(r["label"]),
                    "objects": "" if pd.isna(r["objects"]) else str(r["objects"]),
                    "max_new_tokens": int(r["max_new_tokens"])})
    return out


@contextlib.contextmanager
def torch_threads(n: int | None):
    """torch on `n` threads for the duration (None: unchanged): on a shared CPU, more threads than free cores
    slow these many small passes down by an order of magnitude."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- decoding -----------------------------------------------------------------------------------------------------
def decode_sweep(vlm, eval_split: CocoSplit, tasks: pd.DataFrame, guidance: GuidanceParams,
                 sweep: dict, threads: int | None = 1) -> PendingItems:
    """Every task answered under every setting (plain greedy decoding first, then the sweep's combinations over
    the base guidance; ``EagleMitigationParams.settings``): one item per setting. EAGLE evidence of an answer
    prefix is computed once and shared by the settings (it comes from the unguided model); each answer's cost is
    counted as if nothing were shared."""
    settings = EagleMitigationParams(guidance=guidance, sweep=sweep).settings()
    records = _task_records(tasks)
    loaded = {rid: eval_split.image(rid) for rid in sorted({r["image_id"] for r in records})}
    shas = {str(k): v.sha for k, v in loaded.items()}
    cache = EvidenceCache()
    jobs = []
    for i, setting in enumerate(settings):
        # keyed by the setting itself, so that a setting keeps its item when the sweep around it changes
        key = f"setting_{fingerprint(setting.model_dump(mode='json'))[:10]}"
        fp = fingerprint("eagle-mitigation-decode", setting.model_dump(mode="json"), records, shas, vlm.fingerprint)
        jobs.append(Job(key, fp, _decode_job(vlm, loaded, records, setting, cache),
                        {"index": i, "label": setting.label(), "guidance": setting.model_dump(mode="json")}))
    return PendingItems(jobs, "guided decoding (settings)", {
        "settings": [s.model_dump(mode="json") for s in settings], "model": vlm.name,
        "model_fingerprint": vlm.fingerprint}, context=partial(torch_threads, threads))


def _decode_job(vlm, loaded: dict, records: list[dict], setting: GuidanceParams, cache: EvidenceCache):
    def compute():
        decoder = GuidedDecoder(vlm, setting, cache, explain_image)
        answers = []
        for r in records:
            out = decoder.generate(loaded[r["image_id"]].pixels, r["prompt"], r["max_new_tokens"])
            answers.append({"task_id": r["task_id"], "text": out.answer.text,
                            "token_ids": list(out.answer.token_ids), "tokens": list(out.answer.tokens),
                            "decode_passes": out.decode_passes, "evidence_passes": out.evidence_passes,
                            "seconds": round(out.seconds, 5), "draft": out.draft})
        return {"label": setting.label(), "guidance": setting.model_dump(mode="json"), "answers": answers}

    return compute


# --- diagnostics --------------------------------------------------------------------------------------------------
def diagnose_answers(vlm, eval_split: CocoSplit, tasks: pd.DataFrame, decodings: Manifest,
                     params: MitigationDiagnosticsParams, threads: int | None = 1) -> PendingItems:
    """N_t and S_t per token and layer of the unguided answers of the first `params.answers` tasks of each kind
    (``core/diagnostics.py``), "part" being each token's top-k EAGLE regions over `params.n_regions` SLICO
    regions. One item per task."""
    base = _setting_answers(decodings)[0]
    answers = {a["task_id"]: a for a in base["answers"]}
    jobs = []
    for kind in KINDS:
        for r in [r for r in _task_records(tasks) if r["kind"] == kind][: params.answers]:
            a = answers[r["task_id"]]
            if not a["token_ids"]:
                continue
            sha = eval_split.image(r["image_id"]).sha
            fp = fingerprint("eagle-mitigation-diagnostics", r, a["token_ids"], sha, vlm.fingerprint,
                             params.model_dump(mode="json"))
            jobs.append(Job(f"task_{r['task_id']}", fp, _diagnose_job(vlm, eval_split, r, a, sha, params),
                            {"task_id": r["task_id"], "kind": kind, "answer": a["text"]}))
    return PendingItems(jobs, "diagnostics (N, S per token and layer)", {
        "diagnostics": params.model_dump(mode="json"), "model_fingerprint": vlm.fingerprint},
        context=partial(torch_threads, threads))


def _diagnose_job(vlm, eval_split: CocoSplit, task: dict, answer: dict, sha: str,
                  params: MitigationDiagnosticsParams):
    def compute():
        image = vlm.model_image(eval_split.pixels(task["image_id"], sha))
        ans = Answer(prompt=task["prompt"], token_ids=tuple(answer["token_ids"]), tokens=tuple(answer["tokens"]),
                     text=answer["text"], token_probs=tuple([1.0] * len(answer["token_ids"])), finished=True)
        regions = make_regions(image, n_segments=params.n_regions)
        diag = diagnose(LogitLens(vlm), image, task["prompt"], ans.token_ids, list(ans.tokens),
                        lambda t: explain(vlm, image, task["prompt"], tokens=[t], answer=ans, regions=regions),
                        top_k=params.top_k, eps=params.eps, prior_threshold=params.prior_threshold,
                        answer=ans.text, meta={"task_id": task["task_id"], "kind": task["kind"],
                                               "image_id": task["image_id"]})
        return diag.to_dict()

    return compute


# --- tables -------------------------------------------------------------------------------------------------------
def setting_keys(decodings: Manifest) -> list[str]:
    """The settings' item keys in sweep order (plain greedy decoding first)."""
    return sorted(decodings.keys(), key=lambda k: decodings.info(k)["index"])


def _setting_answers(decodings: Manifest) -> list[dict]:
    return [decodings.load(key) for key in setting_keys(decodings)]


def summarise(tasks: pd.DataFrame, decodings: Manifest, shapes: ShapesParams, max_drop: float
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per setting (``core/diagnostics.py: setting_metrics``; extra passes and seconds relative to plain
    decoding; ``best``: the setting ``best_setting`` picks) and one row per setting and task."""
    companion = shapes.cooccurrence.companion if shapes.cooccurrence else ""
    categories = category_names(shapes)
    by_task = {r["task_id"]: r for r in _task_records(tasks)}
    rows, per_sample = [], []
    for item in _setting_answers(decodings):
        answers = [{**by_task[a["task_id"]], **a} for a in item["answers"]]
        metrics = setting_metrics(answers, companion, categories)
        g = item["guidance"]
        rows.append({"setting": item["label"], "source": g["source"], "strength": g["strength"], "b": g["b"],
                     "layers": "half" if g["layers"] is None else f"{g['layers'][0]}-{g['layers'][1]}",
                     "draft": g["draft"], "weighting": g["weighting"], **metrics})
        per_sample += [{"setting": item["label"], "task_id": a["task_id"], "kind": a["kind"], "prompt": a["prompt"],
                        "label": a["label"], "answer": a["text"], "draft": a.get("draft"),
                        "decode_passes": a["decode_passes"], "evidence_passes": a["evidence_passes"],
                        "seconds": a["seconds"]} for a in answers]
    table = pd.DataFrame(rows)
    if len(table):
        base = table.iloc[0]
        table["extra_passes_per_answer"] = (table["decode_passes"] + table["evidence_passes"]
                                            - base["decode_passes"] - base["evidence_passes"])
        table["slowdown"] = table["seconds_per_answer"] / base["seconds_per_answer"]
        best = best_setting(table.to_dict("records"), max_drop)
        table["best"] = table["setting"] == (best["setting"] if best else None)
    return table, pd.DataFrame(per_sample)


def coverage(decodings: Manifest, diagnostics: Manifest) -> dict:
    """What was made and what was not (with the reason), for the report."""
    not_made = [{"stage": stage, "item": key, "reason": info.get("reason", "failed")}
                for stage, manifest in (("decoding", decodings), ("diagnostics", diagnostics))
                for key, info in {**manifest.skipped, **manifest.failed}.items()]
    return {"settings": len(decodings), "diagnosed": len(diagnostics), "not_made": not_made,
            "params": {"decoding": decodings.params, "diagnostics": diagnostics.params}}
