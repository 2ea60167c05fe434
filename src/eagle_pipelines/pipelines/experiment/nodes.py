"""Nodes of the experiment template (answers -> superpixels -> targets -> EAGLE -> baselines -> evaluation ->
tables -> figures and report). Thin: the work is in ``core/`` and ``models/``; what flows between nodes is what
the catalog holds (manifests name exactly the items a producer made, with the fingerprints of their inputs).

Parameters arrive validated, as the pydantic models of ``eagle_pipelines.parameters`` (``hooks.TypedParameters``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Protocol

import numpy as np
import pandas as pd

from eagle_pipelines.console import progress_bar
from eagle_pipelines.api import explain
from eagle_pipelines.core.baselines import BASELINES, run_baseline
from eagle_pipelines.core.evaluate import (
    MaskBank,
    ScorerSetup,
    know_record,
    object_at,
    order_saliency,
    random_order,
    region_curves,
    score_methods,
)
from eagle_pipelines.core.memory import PeakMemory
from eagle_pipelines.core.metrics import Curves
from eagle_pipelines.core.geometry import PhotoGrid, photo_grid, working_image
from eagle_pipelines.core.hallucination import wrong_answers
from eagle_pipelines.core.joint import image_view, is_joint, joint_row, pipeline_units, units_fingerprint
from eagle_pipelines.core.regions import RegionMap, superpixels as make_regions
from eagle_pipelines.core.targets import literal_position, per_category_selection, phrase_positions
from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.data.reference_list import listed_answer
from eagle_pipelines.errors import UserError
from eagle_pipelines.io import executors
from eagle_pipelines.io.executors import PendingItems
from eagle_pipelines.io.items import ItemStore, Job, Manifest, Skipped, compose_of, fingerprint
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.models.base import Answer, ModelInternals
from eagle_pipelines.parameters import (
    AttributionParams,
    BaselinesParams,
    EvaluationParams,
    ExperimentParams,
    SuperpixelParams,
)

logger = logging.getLogger(__name__)
EVAL_LIST_COLUMNS = ["item", "image_id", "file_name", "prompt", "reference"]


class AnswerSettings(Protocol):
    """What ``generate_answers`` reads of an experiment's parameter group. A protocol, not ``ExperimentParams``:
    Kedro validates a ``params:`` input against its annotation when that is a pydantic model, and each experiment's
    group has its own model (``eagle_coco``: ExperimentParams, ``eagle_mmvp``: EagleMmvpParams), which
    ``hooks.ParameterValidationHook`` hands the node."""

    max_new_tokens: int
    batch_size: int


# --- the evaluation list and the answers --------------------------------------------------------------------------
def build_eval_list(eval_split: CocoSplit, experiment: ExperimentParams) -> pd.DataFrame:
    """One row per item to explain, in image id order: ``item`` (its key), image id, file name, prompt and the
    first reference caption. Every image gets the experiment's prompt (a list with a prompt per question comes
    from the dataset's own loader, e.g. MMVP)."""
    index = eval_split.index
    ids = index.image_ids()[: experiment.max_images]
    rows = [{"item": str(i), "image_id": i, "file_name": index.image_info(i)["file_name"],
             "prompt": experiment.prompt, "reference": (index.captions_of(i) or [""])[0]} for i in ids]
    return pd.DataFrame(rows, columns=EVAL_LIST_COLUMNS)


def generate_answers(vlm, eval_split: CocoSplit, eval_list: pd.DataFrame, experiment: AnswerSettings) -> dict:
    """Greedy answers for every listed item (batched per prompt). An image that cannot be read is logged and
    recorded under ``errors`` with its reason; the rest finish, and so are the entries the split's source refused
    (``info.skipped`` of its instances: a reference list's wrong entries). Each answer records the hash of the
    image bytes it was made from."""
    answers, errors = [], []
    # entries the split's source refused (a reference list's wrong entries): each one a skipped.csv row
    for refused in (eval_split.instances.get("info") or {}).get("skipped") or []:
        errors.append({"item": str(refused["item"]), "image_id": None, "error": str(refused["reason"])})
    rows = list(eval_list.astype({"item": str}).itertuples(index=False))
    with progress_bar(total=len(rows), desc="answering", unit="item") as bar:
        for lo in range(0, len(rows), experiment.batch_size):
            chunk, images = [], []
            for row in rows[lo:lo + experiment.batch_size]:
                try:
                    loaded = eval_split.image(int(row.image_id))
                except CocoFormatError as exc:
                    logger.error("item %s skipped: %s", row.item, exc)
                    errors.append({"item": row.item, "image_id": int(row.image_id), "error": str(exc)})
                    continue
                record = eval_split.index.image_info(int(row.image_id)).get("reference")
                if record is not None:  # a reference list's answer: teacher-forced as listed, not regenerated
                    try:
                        answer, listed = listed_answer(vlm, loaded.pixels, row.prompt, str(row.item), record)
                        extra = {"listed": {"format": record["format"], "entry": record["index"],
                                            "targets": listed}}
                    except ValueError as exc:
                        logger.error("item %s skipped: %s", row.item, exc)
                        errors.append({"item": row.item, "image_id": int(row.image_id), "error": str(exc)})
                        continue
                    reference = "" if pd.isna(row.reference) else str(row.reference)
                    answers.append({"item": row.item, "image_id": int(row.image_id), "image_sha": loaded.sha,
                                    "reference": reference, "exact_match": answer.text == reference,
                                    **answer.to_dict(), **extra})
                    continue
                images.append(loaded)
                chunk.append(row)
            for prompt in dict.fromkeys(r.prompt for r in chunk):
                sel = [k for k, r in enumerate(chunk) if r.prompt == prompt]
                outs = vlm.generate_batch([images[k].pixels for k in sel], prompt,
                                          max_new_tokens=experiment.max_new_tokens)
                for k, answer in zip(sel, outs):
                    row = chunk[k]
                    reference = "" if pd.isna(row.reference) else str(row.reference)
                    answers.append({"item": row.item, "image_id": int(row.image_id), "image_sha": images[k].sha,
                                    "reference": reference, "exact_match": answer.text == reference,
                                    **answer.to_dict()})
            bar.update(len(rows[lo:lo + experiment.batch_size]))
    order = {r.item: k for k, r in enumerate(rows)}
    answers.sort(key=lambda a: order[a["item"]])
    exact = sum(a["exact_match"] for a in answers) / max(1, len(answers))
    logger.info("answered %d items (%d skipped); %.1f%% match the reference", len(answers), len(errors),
                100 * exact)
    return {"model": vlm.name, "model_fingerprint": vlm.fingerprint, "answers": answers, "errors": errors,
            "summary": {"items": len(answers), "skipped": len(errors), "exact_match": exact}}


# --- superpixels --------------------------------------------------------------------------------------------------
#: which answers' images get superpixels (``compute_superpixels(select=...)``): a name, so that a node's identity
#: (provenance stamps it) is the same in every run
ANSWER_SELECTIONS: dict[str, Callable[[dict], list[dict]]] = {
    "all": lambda answers: answers["answers"],
    "wrong": wrong_answers,  # eagle_repope: the answers it explains
}


def compute_superpixels(vlm, eval_split: CocoSplit, answers: dict, superpixels: SuperpixelParams,
                        select: str = "all") -> PendingItems:
    """SLICO label maps of the images of the answers `select` names (``ANSWER_SELECTIONS``; key: image id) on the
    working image (the model's resolution, or the photo with ``compose: processor``), filed under the hash of the
    image's bytes, the model's resolution and the region settings."""
    spec = vlm.resolution_spec()
    jobs = {}
    for a in ANSWER_SELECTIONS[select](answers):
        image_id = int(a["image_id"])
        if str(image_id) in jobs:
            continue
        fp = fingerprint("slico", a["image_sha"], spec, superpixels)

        def compute(image_id=image_id, sha=a["image_sha"]):
            loaded = eval_split.pixels(image_id, sha)
            return make_regions(working_image(vlm, loaded, superpixels.compose), **superpixels.region_params())

        jobs[str(image_id)] = Job(str(image_id), fp, compute, {"image_id": image_id, "image_sha": a["image_sha"]})
    return PendingItems(list(jobs.values()), "superpixels", {"superpixels": superpixels.model_dump(mode="json")})


# --- targets ------------------------------------------------------------------------------------------------------
def select_targets(vlm, eval_split: CocoSplit, answers: dict, attribution: AttributionParams) -> dict:
    """What every method explains, per level: ``sentence`` (all answer tokens of each item) and ``word`` (the
    tokens of each annotated object's words the answer contains, or of the configured words). EAGLE and the
    baselines read this one list, so they explain exactly the same targets. A target the answer does not name is
    listed under ``skipped`` with the reason."""
    decode = vlm.processor.tokenizer.decode
    index = eval_split.index
    targets, skipped = [], []
    by_rule = attribution.word_selection == "reference" and "word" in attribution.levels
    # a split whose images serve one level each (the paper's caption sample and word candidates) says so per image
    per_level = any("samples" in im for im in (getattr(eval_split, "instances", None) or {}).get("images", []))
    for a in answers["answers"]:
        answer = Answer.from_dict(a)
        token_ids = [int(t) for t in answer.token_ids]
        listed = a.get("listed")
        if (attribution.end_token or listed) and answer.end_token_id is not None:
            token_ids.append(int(answer.end_token_id))  # teacher-forced too: causal, earlier tokens unchanged
        base = {"item": a["item"], "image_id": int(a["image_id"]), "image_sha": a["image_sha"],
                "prompt": answer.prompt, "token_ids": token_ids, "answer": answer.text}
        samples = index.image_info(int(a["image_id"])).get("samples") if per_level else None
        levels = [lv for lv in attribution.levels  # an image drawn for one level only is explained at that level
                  if samples is None or ("caption" if lv == "sentence" else "word") in samples]
        if listed:  # a reference list's own targets
            targets.extend(_listed_targets(listed, base, levels, index, int(a["image_id"]), skipped))
            continue
        for level in levels:
            if level == "word" and by_rule:
                continue  # chosen across the images, below
            if level == "sentence":
                if attribution.end_token and answer.end_token_id is None:
                    skipped.append({"key": f"sentence/{a['item']}", "level": level, **base, "meta": {},
                                    "reason": "the answer did not end by itself (max_new_tokens reached): it has "
                                              "no end-of-turn token to explain"})
                    continue
                targets.append({"key": f"sentence/{a['item']}", "level": level, **base,
                                "positions": list(range(len(token_ids))), "meta": {}})
                continue
            words = _word_targets(attribution, index, int(a["image_id"]), answer, decode)
            if attribution.word_selection == "once":
                words = _first_named(words)
            for suffix, positions, meta in words:
                key = f"word/{a['item']}_{suffix}"
                if not positions:
                    skipped.append({"key": key, "level": level, **base, "meta": meta,
                                    "reason": f"the answer {answer.text!r} does not mention "
                                              f"{meta.get('category', meta.get('word'))!r}"})
                    continue
                targets.append({"key": key, "level": level, **base, "positions": positions, "meta": meta})
    if by_rule:
        _rule_targets(attribution, eval_split, answers, decode, targets, skipped)
    logger.info("targets: %s; %d not in their answer", ", ".join(
        f"{sum(t['level'] == lv for t in targets)} {lv}" for lv in attribution.levels), len(skipped))
    return {"levels": list(attribution.levels), "targets": targets, "skipped": skipped,
            "answer_errors": answers.get("errors", [])}


def _word_targets(params: AttributionParams, index, image_id: int, answer: Answer, decode):
    """(key suffix, positions, meta) of each word-level target of one image."""
    if params.word_targets == "objects":
        for obj in index.objects(image_id):
            # the first of the object's words (category name, then plural and synonyms where the annotation file
            # lists them) that the answer contains
            found = ((w, phrase_positions(decode, answer.token_ids, w)) for w in obj.names)
            word, positions = next(((w, p) for w, p in found if p), (obj.category, []))
            meta = {"annotation_id": obj.annotation_id, "category": obj.category, "bbox": list(obj.bbox)}
            if word != obj.category:
                meta["word"] = word
            yield str(obj.annotation_id), list(positions), meta
        return
    for target in params.word_targets:
        if isinstance(target, int):
            positions = [target] if 0 <= target < len(answer.token_ids) else []
        else:
            positions = list(phrase_positions(decode, answer.token_ids, target))
        yield str(target), positions, {"word": target}


def _rule_targets(attribution: AttributionParams, eval_split: CocoSplit, answers: dict, decode, targets: list,
                  skipped: list) -> None:
    """Word level by the reference's rule (``core/targets.py: per_category_selection``): per category, its
    candidate images in order (the split's ``word_candidates``; without them, the images that have the category,
    in split order), the first ``word_quota`` whose answer contains the category name kept, each image once; the
    target is the token where the name begins, the object the image's annotation of that category."""
    index = eval_split.index
    split_info = eval_split.instances.get("info", {})
    candidates = split_info.get("word_candidates")
    quota = int(split_info.get("sample", {}).get("word_quota", 4))
    rows = {int(a["image_id"]): a for a in answers["answers"] if not a.get("listed")}
    rows = {i: a for i, a in rows.items() if "word" in (index.image_info(i).get("samples") or ["word"])}
    if candidates is None:
        order = [c["name"] for c in eval_split.instances.get("categories", [])]
        has = {i: {o.category for o in index.objects(i)} for i in rows}
        candidates = [{"category": name, "image_ids": [i for i in sorted(rows) if name in has[i]]} for name in order]
    sentences = {i: Answer.from_dict(a).text for i, a in rows.items()}
    chosen = per_category_selection([(c["category"], c["image_ids"]) for c in candidates], sentences, quota)
    picked = dict(chosen)
    for image_id, a in sorted(rows.items()):
        answer = Answer.from_dict(a)
        token_ids = [int(t) for t in answer.token_ids]
        base = {"item": a["item"], "image_id": image_id, "image_sha": a["image_sha"], "prompt": answer.prompt,
                "token_ids": token_ids, "answer": answer.text}
        category = picked.get(image_id)
        obj = next((o for o in index.objects(image_id) if o.category == category), None)
        key = f"word/{a['item']}_{obj.annotation_id if obj is not None else 'rule'}"
        if category is None or obj is None:
            skipped.append({"key": key, "level": "word", **base, "meta": {"selection": "reference"},
                            "reason": "not chosen by the reference's rule: its answer names none of its candidate "
                                      "categories, or their quotas were filled first"})
            continue
        position = literal_position(decode, token_ids, category)
        targets.append({"key": key, "level": "word", **base, "positions": [position],
                        "meta": {"annotation_id": obj.annotation_id, "category": category, "bbox": list(obj.bbox),
                                 "selection": "reference"}})


def _listed_targets(listed: dict, base: dict, levels, index, image_id: int, skipped: list) -> list[dict]:
    """The targets a reference list names for one image: its sentence positions (caption lists) or its one word
    position with the list's object (object lists); a level the list does not cover is recorded as skipped."""
    out = []
    for level in levels:
        found = listed["targets"].get(level)
        key = f"{level}/{base['item']}" if level == "sentence" else f"word/{base['item']}_listed"
        if found is None:
            skipped.append({"key": key, "level": level, **base, "meta": {},
                            "reason": f"a {listed['format']} reference list has no {level}-level target"})
        elif level == "sentence":
            out.append({"key": key, "level": level, **base, "positions": list(found), "meta": {"listed": True}})
        else:
            obj = index.objects(image_id)[0]
            out.append({"key": key, "level": level, **base, "positions": [found["position"]],
                        "meta": {"annotation_id": obj.annotation_id, "category": obj.category,
                                 "bbox": list(obj.bbox), "listed": True}})
    return out


def _first_named(words):
    """One target per image: the first of the image's objects, in their annotation order (category id), whose
    words the answer contains, explained by the first token of its word; not the object the answer names first.
    (The reference's own rule is ``word_selection: reference``.)"""
    for suffix, positions, meta in words:
        if positions:
            yield suffix, list(positions)[:1], {**meta, "selection": "once"}
            return


def _target_info(t: dict) -> dict:
    return {k: t[k] for k in ("level", "item", "image_id", "image_sha", "prompt", "token_ids", "answer", "positions",
                              "meta")}


def _labels_of(superpixels: Manifest, image_id: int) -> tuple[str, RegionMap] | None:
    key = str(image_id)
    if key not in superpixels:
        return None
    return superpixels.info(key)["fp"], superpixels.load(key)


# --- EAGLE --------------------------------------------------------------------------------------------------------
def search_fingerprint(attribution: AttributionParams) -> dict:
    """What of the search settings goes into an attribution's fingerprint (every experiment files its items
    under it)."""
    return {"strategy": attribution.strategy, "lambda1": attribution.lambda1, "lambda2": attribution.lambda2,
            "search": attribution.search_params()}


def explain_targets(vlm, eval_split: CocoSplit, targets: dict, superpixels: Manifest,
                    attribution: AttributionParams, prompt_units: str = "none") -> PendingItems:
    """EAGLE's attribution of every target (the search runs here, one target at a time, each written as soon
    as it is done). Each is filed under the hash of its image, answer, target tokens, label map, model and
    search settings. `prompt_units` ``words`` (eagle_mmvp's option): one joint order over the regions and the
    words of the target's prompt, a ``core/joint.py: JointAttribution`` (its fingerprint holds the option)."""
    search = {**search_fingerprint(attribution), **units_fingerprint(prompt_units)}
    jobs = []
    for t in targets["targets"]:
        sp_fp = superpixels.info(str(t["image_id"]))["fp"] if str(t["image_id"]) in superpixels else None
        fp = fingerprint("eagle", _target_info(t), sp_fp, vlm.fingerprint, search)
        answer = Answer(prompt=t["prompt"], token_ids=tuple(t["token_ids"]), tokens=(), text=t["answer"],
                        token_probs=(), finished=True)
        meta = {"compose": compose_of(superpixels), "image_id": t["image_id"], "level": t["level"], "item": t["item"],
                **t["meta"]}
        jobs.append(Job(t["key"], fp, explain_job(vlm, eval_split, superpixels, t, answer, attribution, meta,
                                                  tokens=None if t["level"] == "sentence" else t["positions"],
                                                  prompt_units=prompt_units),
                        {**_target_info(t), "compose": compose_of(superpixels), **units_fingerprint(prompt_units)}))
    return PendingItems(jobs, "EAGLE", {"attribution": attribution.model_dump(mode="json"), "model": vlm.name,
                                           "model_fingerprint": vlm.fingerprint, **units_fingerprint(prompt_units),
                                           **superpixels.params})


def explain_job(vlm, split, superpixels: Manifest, t: dict, answer: Answer, params: AttributionParams, meta: dict,
                tokens=None, not_made: str = "not answered", prompt_units: str = "none"):
    """The job of one EAGLE item (every experiment's explanation stage files its items through it): the answer
    `answer` to `t`'s prompt about its image (``image_id``, ``image_sha`` in `split`) explained over the image's
    superpixels (composed as the superpixel manifest says), the answer tokens `tokens` (None: all), with `meta`
    in the record. An image without superpixels is skipped, with the reason its superpixels were not made
    (`not_made` when none is recorded). `prompt_units` (``none`` or ``words``): with ``words``, one joint order
    over the regions and the prompt's words (core/joint.py; docs/joint.md)."""

    def compute():
        found = _labels_of(superpixels, t["image_id"])
        if found is None:
            return Skipped(f"image {t['image_id']} has no superpixels: "
                           f"{superpixels.not_made().get(str(t['image_id']), not_made)}")
        image = split.pixels(t["image_id"], t["image_sha"])
        # explain() brings the photo to the model's resolution itself (pixel_values) or masks the photo (processor)
        return explain(vlm, image, t["prompt"], tokens=tokens, params=params, answer=answer, regions=found[1],
                       compose=compose_of(superpixels), meta=meta, prompt_units=pipeline_units(prompt_units))

    return compute


# --- baselines ----------------------------------------------------------------------------------------------------
def run_baselines(vlm, eval_split: CocoSplit, targets: dict, superpixels: Manifest,
                  baselines: BaselinesParams) -> PendingItems:
    """The (H, W) map of every configured baseline for every target (key ``<method>/<target key>``), with its
    seconds and peak memory, filed under the hash of the target, the method's settings, the model and (for
    methods over superpixels) the label map."""
    if baselines.methods and not isinstance(vlm, ModelInternals):
        raise TypeError(f"the model '{vlm.name}' ({type(vlm).__name__}) does not expose its internals "
                        "(models/base.py: ModelInternals), which the baselines need; set baselines.methods: [] in "
                        "conf/<env>/parameters_baselines.yml to run without them")
    jobs = []
    for method in baselines.methods:
        needs_labels = BASELINES[method].needs_labels
        for t in targets["targets"]:
            sp = str(t["image_id"])
            sp_fp = superpixels.info(sp)["fp"] if needs_labels and sp in superpixels else None
            compose = compose_of(superpixels)
            fp = fingerprint("baseline", method, baselines.settings(method), _target_info(t), sp_fp,
                             vlm.fingerprint, *([compose] if compose != "pixel_values" else []))
            jobs.append(Job(f"{method}/{t['key']}", fp,
                            _baseline_job(vlm, eval_split, superpixels, method, baselines.settings(method), t),
                            {"method": method, **_target_info(t), "compose": compose}))
    return PendingItems(jobs, "baselines", {"baselines": baselines.model_dump(mode="json"),
                                               "superpixels": superpixels.params.get("superpixels", {})})


def _baseline_job(vlm, eval_split, superpixels, method: str, settings: dict, t: dict):
    def compute():
        labels = None
        if BASELINES[method].needs_labels:
            found = _labels_of(superpixels, t["image_id"])
            if found is None:
                return Skipped(f"image {t['image_id']} has no superpixels")
            labels = found[1].labels
        compose = compose_of(superpixels)
        photo = eval_split.pixels(t["image_id"], t["image_sha"])
        image = vlm.model_image(photo)  # the gradient and activation methods work on what the model sees
        if labels is not None and labels.shape != image.shape[:2]:
            raise ValueError(f"{method} works over superpixels of the model image ({image.shape[1]}x"
                             f"{image.shape[0]}); these are of the photo (superpixels.compose: processor): drop "
                             f"{method} from baselines.methods or use compose: pixel_values")
        info = {"method": method, "image_id": t["image_id"], "level": t["level"], "positions": t["positions"],
                **t["meta"]}
        import time

        start = time.perf_counter()
        with PeakMemory(vlm.device) as peak:
            tf = vlm.teacher_forced(image, t["prompt"], t["token_ids"])
            result = run_baseline(method, tf, t["positions"], labels, **settings)
        saliency = result.map
        if compose == "processor" and saliency.shape != photo.shape[:2]:
            # the map goes where EAGLE's regions and the scorer's masks are: on the photo
            saliency = photo_grid(vlm, photo.shape[:2], "pixel_values").to_photo(saliency)
        return saliency, {**info, "seconds": time.perf_counter() - start, "peak_memory_mb": peak.mb,
                            "method_seconds": result.seconds}

    return compute


# --- evaluation ---------------------------------------------------------------------------------------------------
def evaluate(vlm, eval_split: CocoSplit, attributions: Manifest, baselines: Manifest,
             evaluation: EvaluationParams) -> PendingItems:
    """Metric rows of every attribution (EAGLE's own curves and the pixel protocol, beside the seeded random
    floor over the same regions; key ``eagle/<target key>``) and of every baseline map (pixel protocol; key
    ``<method>/<target key>``), each filed under the hash of what it scores and the evaluation settings.

    The items of one target share one scorer (``_TargetScores``): the masks of all its methods still to score
    are gathered and scored together, each distinct mask once, and EAGLE's recorded prefix sets cost no pass
    (core/evaluate.py: ``MaskBank``). Jobs on Ray workers each score their own masks."""
    pooled = executors.current().name == "sequential"
    groups: dict[tuple, _TargetScores] = {}
    setup = ScorerSetup()

    def group_of(info: dict) -> _TargetScores:
        shared = (info["image_id"], info["image_sha"], info["prompt"], tuple(info["token_ids"]),
                  tuple(info["positions"]), info.get("compose", "pixel_values"))
        if not pooled:
            return _TargetScores(vlm, eval_split, info, evaluation, setup=ScorerSetup())
        return groups.setdefault(shared, _TargetScores(vlm, eval_split, info, evaluation, setup=setup))

    jobs = []
    for key, info in attributions.items.items():
        fp = fingerprint("evaluate", info["fp"], evaluation, _annotation(eval_split, info))
        jobs.append(Job(f"eagle/{key}", fp, group_of(info).job(
            f"eagle/{key}", fp, _evaluate_rows(vlm, eval_split, attributions, key, evaluation, None)),
            {"method": "eagle", "target": key, "level": info["level"]}))
    for key, info in baselines.items.items():
        fp = fingerprint("evaluate", info["fp"], evaluation, _annotation(eval_split, info))
        target = key.split("/", 1)[1]
        jobs.append(Job(key, fp, group_of(info).job(
            key, fp, _evaluate_rows(vlm, eval_split, baselines, key, evaluation, info["method"])),
            {"method": info["method"], "target": target, "level": info["level"]}))

    def prepare(store: ItemStore) -> None:  # the store is known once the manifest's dataset runs the jobs
        for group in groups.values():
            group.store = store

    def finish() -> None:
        passes = sum(g.forward_passes for g in groups.values())
        if passes:
            logger.info("evaluation: %d forward passes for %d targets (%d masks served without a pass; memory "
                        "planned %d times, adopted %d times)", passes, len(groups),
                        sum(g.reused for g in groups.values()), setup.plans_measured, setup.plans_adopted)

    return PendingItems(jobs, "evaluation", {"evaluation": evaluation.model_dump(mode="json")}, prepare=prepare,
                        finish=finish)


class _TargetScores:
    """What the evaluation items of one target share: the image, and one ``MaskBank`` over one scorer (same
    image, prompt, answer, explained tokens and compose). At the first item to make, every item of the target
    that the store does not hold yet runs once in the bank's gathering mode, so the masks of all of them are
    scored in one batched call; each item then reads its probabilities. Released after the last of them."""

    def __init__(self, vlm, eval_split, info: dict, params: EvaluationParams, store: ItemStore | None = None,
                 setup: ScorerSetup | None = None):
        self.vlm, self.eval_split, self.info, self.params, self.store = vlm, eval_split, info, params, store
        self.setup = setup or ScorerSetup()
        self.members: dict[str, tuple[str, object]] = {}  # item key -> (fingerprint, rows function)
        self.pending: set[str] = set()
        self.bank = self.photo = self.image = None
        self.gathering = False
        self.forward_passes = self.reused = 0

    def job(self, key: str, fp: str, rows):
        self.members[key] = (fp, rows)
        return partial(self.compute, key)

    def _ready(self) -> None:
        if self.bank is not None:
            return
        info, compose = self.info, self.info.get("compose", "pixel_values")
        self.photo = self.eval_split.pixels(info["image_id"], info["image_sha"])
        self.image = working_image(self.vlm, self.photo, compose)
        self.bank = MaskBank(self.setup.prepare(self.vlm.scorer(
            self.image, info["prompt"], info["token_ids"], info["positions"], batch_size=self.params.batch_size,
            compose=compose)))
        todo = [k for k, (fp, _) in self.members.items()
                if len(self.members) == 1 or (self.store.skipped(k, fp) is None and not self.store.has(k, fp))]
        self.pending = set(todo)
        self.gathering = True
        with self.bank.gathering():
            for key in todo:
                try:
                    self.members[key][1](self)
                except Exception:  # noqa: BLE001 - the item's own run raises it again and records it
                    pass
        self.gathering = False
        self.bank.flush()
        self.setup.keep(self.bank.scorer)

    def compute(self, key: str) -> dict:
        try:
            self._ready()
            return self.members[key][1](self)
        finally:
            self.pending.discard(key)
            if not self.pending and self.bank is not None:  # the last item of the target: free the masks
                self.forward_passes += self.bank.forward_passes
                self.reused += self.bank.reused
                self.bank = self.photo = self.image = None


def _annotation(eval_split: CocoSplit, info: dict):
    ann_id = info["meta"].get("annotation_id")
    return None if ann_id is None else eval_split.instances and eval_split.index.instances.anns.get(int(ann_id))


def _object(eval_split: CocoSplit, image_id: int, annotation_id, grid: PhotoGrid):
    """The annotated object's mask and box on the working image (through the processor's own geometry)."""
    if annotation_id is None:
        return None
    found = [o for o in eval_split.index.objects(image_id) if o.annotation_id == int(annotation_id)]
    return object_at(grid, found[0].mask, found[0].bbox) if found else None


def _evaluate_rows(vlm, eval_split, manifest: Manifest, key: str, params: EvaluationParams, method: str | None):
    """The metric rows of one item, scored through its target's shared bank (``_TargetScores``)."""
    info = manifest.info(key)

    def rows_of(shared: _TargetScores) -> dict:
        compose = info.get("compose", "pixel_values")
        photo, image, scorer = shared.photo, shared.image, shared.bank
        ann_id = info["meta"].get("annotation_id")
        joint = None
        if method is None:  # EAGLE and the random floor over the same regions
            a = manifest.load(key)
            if is_joint(a):  # image-only protocols over its regions in their joint order, and its joint row
                joint, a = a, image_view(a)
            regions = RegionMap(a.labels, a.meta.get("regions", {}))
            if a.labels.shape == image.shape[:2] and joint is None:  # its search record: those masks cost no pass
                know_record(scorer, regions, a.order, a.insertion, a.deletion)
            order = random_order(regions.n_regions, params.random_seed, info["image_id"], int(ann_id or 0))
            own = region_curves(scorer, regions, a.order) if joint is not None else Curves(a.area, a.insertion,
                                                                                            a.deletion)
            maps = {"eagle": (order_saliency(a.order, a.labels), own),
                    "random": (order_saliency(order, a.labels), region_curves(scorer, regions, order))}
            facts = {"eagle": (a.seconds, getattr(joint or a, "peak_memory_mb", None)), "random": (None, None)}
            shape = a.labels.shape
        else:
            saliency, map_info = manifest.load(key)
            maps = {method: (saliency, None)}
            facts = {method: (map_info.get("seconds"), map_info.get("peak_memory_mb"))}
            shape = saliency.shape
        if shape != image.shape[:2]:
            raise ValueError(f"the map of {key} is {shape[1]}x{shape[0]}, the image it explains "
                             f"{image.shape[1]}x{image.shape[0]}")
        obj = None if ann_id is None else _object(eval_split, info["image_id"], ann_id,
                                                  photo_grid(vlm, photo.shape[:2], compose))
        if obj is not None and not obj[0].any() and not shared.gathering:
            logger.warning("%s: the object lies outside what the model sees (its processor crops it off): "
                           "Point Game left undefined", key)
        rows = score_methods(scorer, maps, params.pixel_steps, obj, params.pixel_ties)
        if joint is not None:  # its own curves over the joint steps; the point game of its region map
            rows.append({**joint_row(joint), **{k: v for k, v in rows[0].items() if k.startswith("point_game")}})
        for row in rows:
            row.update({"image_id": info["image_id"], "item": info["item"], "level": info["level"],
                        "target": info["meta"].get("category", info["meta"].get("word", "")),
                        "annotation_id": int(ann_id or 0), "seconds": facts[row["method"]][0],
                        "peak_memory_mb": facts[row["method"]][1]})
        return {"rows": rows}

    return rows_of


# --- tables -------------------------------------------------------------------------------------------------------
METRICS = ["insertion_auc", "deletion_auc", "highest_confidence", "insertion_auc_sensitive",
           "deletion_auc_sensitive", "highest_confidence_sensitive", "point_game_box", "point_game_mask"]
COLUMNS = ["method", "level", "protocol", "n_samples", "insertion_auc", "deletion_auc", "ahc",
           "insertion_auc_sensitive", "deletion_auc_sensitive", "ahc_sensitive", "point_game_box",
           "point_game_mask", "seconds_per_sample", "peak_memory_mb"]


def common_targets(evaluation: Manifest) -> tuple[dict[str, set[str]], dict[str, dict[str, list[str]]]]:
    """Per level, the targets every method has a row for, and per level and method the targets left out of the
    table because another method lacks them."""
    by_level: dict[str, dict[str, set[str]]] = {}
    for info in evaluation.items.values():
        by_level.setdefault(info["level"], {}).setdefault(info["method"], set()).add(info["target"])
    common, left_out = {}, {}
    for level, methods in by_level.items():
        common[level] = set.intersection(*methods.values())
        left_out[level] = {m: sorted(t - common[level]) for m, t in methods.items() if t - common[level]}
    return common, left_out


class NothingEvaluatedError(UserError, ValueError):
    """Every target was skipped or failed: the table would be empty (the message gives the most common reason)."""


def aggregate_metrics(evaluation: Manifest) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The paper-style table and the per-sample rows. Every row of one level covers the same targets (those
    every method has; the others are logged and listed in the report), so ``n_samples`` is one number per
    level. One table row per method, level and protocol: means over samples (sensitive-token means over the
    samples that have sensitive tokens); seconds per sample and the peak memory of the explanation."""
    common, left_out = common_targets(evaluation)
    for level, methods in left_out.items():
        for method, keys in methods.items():
            logger.warning("%s level: %d targets of %s are left out of the table (other methods lack them): %s",
                           level, len(keys), method, ", ".join(keys[:5]))
    rows = []
    for key, info in evaluation.items.items():
        if info["target"] in common.get(info["level"], ()):
            rows.extend(evaluation.load(key)["rows"])
    per_sample = pd.DataFrame(rows)
    if per_sample.empty:
        from collections import Counter

        reasons = Counter(v["reason"] for v in evaluation.not_made().values()) if hasattr(evaluation, "not_made") \
            else Counter()
        common_reason = f"; the most common reason ({reasons.most_common(1)[0][1]} of {sum(reasons.values())}): " \
                        f"{reasons.most_common(1)[0][0]}" if reasons else ""
        raise NothingEvaluatedError(f"no evaluated sample: every target was skipped (see the manifests' 'skipped' "
                                    f"lists){common_reason}")
    per_sample = per_sample.sort_values(["level", "method", "protocol", "image_id", "annotation_id"])
    table = []
    for (method, level, protocol), group in per_sample.groupby(["method", "level", "protocol"], sort=True):
        row = {"method": method, "level": level, "protocol": protocol, "n_samples": len(group)}
        for col in METRICS:
            row[col.replace("highest_confidence", "ahc")] = group[col].mean() if col in group else np.nan
        row["seconds_per_sample"] = group["seconds"].mean()
        row["peak_memory_mb"] = group["peak_memory_mb"].max()
        if "prompt_share" in group:  # joint records (prompt_units: words): the prompt's share, joint rows only
            row["prompt_share"] = group["prompt_share"].mean()
        table.append(row)
    metrics = pd.DataFrame(table, columns=COLUMNS + (["prompt_share"] if "prompt_share" in per_sample else []))
    logger.info("metrics:\n%s", metrics.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return metrics, per_sample.drop(columns=["eval_seconds", "curve"]).reset_index(drop=True)
