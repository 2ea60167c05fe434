"""Nodes of the eagle_repope pipeline: yes/no questions, the model's answers, EAGLE on the wrong ones (counter
token), regeneration with the lowest-ranked regions removed, metrics (``report.py``: figures and the report).

Per-item results go through item stores (``io/items.py``): each is filed under the fingerprint of everything that
made it (the image's bytes, the question and its label, the label map, the model, the settings), and each producer
returns a manifest that its consumers read. Parameters arrive as the pydantic models of
``eagle_pipelines.parameters``; the nodes before the tables take the fields of ``params:eagle_repope`` they use
(``params:eagle_repope.batch_size``...), so changing a field that only the tables read (``csr_threshold``,
``figure_samples``) reruns only the tables and the report under ``--only-missing-outputs``.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from eagle_pipelines.console import progress_bar
from eagle_pipelines.core import hallucination as hal
from eagle_pipelines.core.hallucination import pixel_units, region_ranking  # noqa: F401 (re-exported)
from eagle_pipelines.core.joint import image_view, units_fingerprint
from eagle_pipelines.core.evaluate import object_at, random_order, region_curves
from eagle_pipelines.core.geometry import photo_grid, working_image
from eagle_pipelines.core.metrics import Curves, highest_confidence, insertion_auc
from eagle_pipelines.core.regions import RegionMap, params_hash
from eagle_pipelines.data.coco import CocoFormatError, split_file_name
from eagle_pipelines.data.reference_list import listed_answer
from eagle_pipelines.data.params import ShapesParams
from eagle_pipelines.data.questions import confounded, generate_question_split  # noqa: F401 (re-exported)
from eagle_pipelines.io.executors import PendingItems
from eagle_pipelines.io.items import Job, Manifest, compose_of, fingerprint
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.models.base import Answer
from eagle_pipelines.pipelines.experiment.nodes import explain_job, search_fingerprint
from eagle_pipelines.parameters import (
    AttributionParams,
    BaselinesParams,
    EagleRepopeParams,
    RepopeQuestionParams,
)

logger = logging.getLogger(__name__)
QUESTION_COLUMNS = ["question_id", "image_id", "file_name", "text", "prompt", "label", "object", "kind", "cause",
                    "cause_annotation_id"]
#: what a question is, as every record after the question list carries it
FACTS = ["question_id", "image_id", "question", "prompt", "label", "object", "kind", "cause", "cause_annotation_id"]


# --- questions ----------------------------------------------------------------------------------------------------
def prepare_question_split(shapes: ShapesParams, repope_source, source: str, questions: RepopeQuestionParams,
                           question_template: str, max_questions: int | None) -> tuple[tuple, str]:
    """The question images (a COCO-format split: images keyed by file stem, their instances, no captions) and the
    question list in the POPE format, from the source `source` names: ``shapes`` generates the embedded set;
    ``repope`` takes the RePOPE list and the COCO val2014 images it asks about (`repope_source`, lazy: read only
    here)."""
    if source == "shapes":
        images, instances, text = generate_question_split(shapes, questions, question_template)
    else:
        images, instances, text = repope_question_split(repope_source, max_questions)
    return (images, instances, None), text


def repope_question_split(repope_source, max_questions: int | None) -> tuple[dict, dict, str]:
    """The images of the RePOPE list (the first `max_questions`), their COCO instances and the list itself."""
    records = repope_source.records()
    if max_questions:
        records = records[:max_questions]
    instances = repope_source.instances()
    wanted = {r["image"] for r in records}
    images_info = [i for i in instances["images"] if i["file_name"] in wanted]
    missing = sorted(wanted - {i["file_name"] for i in images_info})
    if missing:
        raise CocoFormatError(f"{len(missing)} images of the question list are not in {repope_source.name}'s "
                              f"instances (e.g. {missing[:3]}); RePOPE asks about COCO val2014 images")
    ids = {i["id"] for i in images_info}
    stems = {i["file_name"].rsplit(".", 1)[0] for i in images_info}
    source_images = repope_source.images()
    absent = sorted(stems - set(source_images))
    if absent:
        raise CocoFormatError(f"{len(absent)} images of the question list are missing from {repope_source.name}'s "
                              f"images folder (e.g. {absent[:3]})")
    # the split keeps each source file as it is (copied, decoded when its question is reached: an unreadable
    # image is named and skipped there); source_file_name is the file the list names
    subset = {**instances, "images": [
        {**i, "file_name": split_file_name(stem, source_images[stem]), "source_file_name": i["file_name"]}
        for i, stem in ((i, i["file_name"].rsplit(".", 1)[0]) for i in images_info)],
              "annotations": [a for a in instances["annotations"] if a["image_id"] in ids]}
    logger.info("eagle_repope: %d RePOPE questions on %d COCO val2014 images", len(records), len(stems))
    return {s: source_images[s] for s in sorted(stems)}, subset, hal.write_pope_questions(records)


def build_question_list(pope_questions: str, question_split: CocoSplit, max_questions: int | None,
                        prompt_template: str, prompt_suffix: str) -> pd.DataFrame:
    """The questions to answer, resolved against the split's instances: image id, prompt (the question inside
    `prompt_template`, then `prompt_suffix`), label, the object asked about, and (where known) the true cause
    object's annotation id. Reads the POPE/RePOPE format."""
    records = hal.read_pope_questions(pope_questions, source="eagle_repope.pope_questions")
    if max_questions:
        records = records[:max_questions]
    index = question_split.index
    by_file = {}  # the image file a question names (source_file_name: the list's name) -> image id
    for image_id in index.image_ids():
        info = index.image_info(image_id)
        by_file[info.get("source_file_name", info["file_name"])] = image_id
    rows = []
    for r in records:
        if r["image"] not in by_file:
            raise CocoFormatError(f"question {r['question_id']}: image '{r['image']}' is not in the question "
                                  f"images' instances ({len(by_file)} images); RePOPE asks about COCO val2014")
        image_id = by_file[r["image"]]
        cause, cause_ann = r.get("cause"), None
        if cause:
            objs = [o for o in index.objects(image_id) if o.category == cause]
            if not objs:
                raise CocoFormatError(f"question {r['question_id']}: the cause '{cause}' is not annotated in "
                                      f"image {image_id}")
            cause_ann = max(objs, key=lambda o: int(o.mask.sum())).annotation_id
        rows.append({"question_id": r["question_id"], "image_id": image_id, "file_name": r["image"],
                     "text": r["text"], "prompt": hal.question_prompt(prompt_template, r["text"], prompt_suffix),
                     "label": r["label"],
                     "object": r["object"], "kind": r.get("kind", "repope"), "cause": cause or "",
                     "cause_annotation_id": cause_ann,
                     **({"listed": json.dumps(r["listed"])} if r.get("listed") else {})})
    listed = any("listed" in row for row in rows)  # the reference's own list: its answers, teacher-forced
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS + (["listed"] if listed else []))


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def question_facts(questions: pd.DataFrame) -> list[dict]:
    """Each question as plain JSON values, the same whether the list comes from the node that built it or from its
    CSV file (where an empty cause turns into NaN and an annotation id into a float)."""
    out = []
    for r in questions.to_dict("records"):
        ann = r["cause_annotation_id"]
        cause = r["cause"]
        out.append({"question_id": _plain(r["question_id"]), "image_id": int(r["image_id"]),
                    "question": str(r["text"]), "prompt": str(r["prompt"]), "label": str(r["label"]),
                    "object": str(r["object"]), "kind": str(r["kind"]),
                    "cause": "" if cause is None or pd.isna(cause) else str(cause),
                    "cause_annotation_id": None if ann is None or pd.isna(ann) else int(ann),
                    **({"listed": json.loads(r["listed"])} if isinstance(r.get("listed"), str) else {})})
    return out


# --- answers ------------------------------------------------------------------------------------------------------
def answer_questions(vlm, question_split: CocoSplit, questions: pd.DataFrame, answering: Answering) -> dict:
    """Greedy answers to every question (batched per prompt); each is read as yes/no (`answering.answer_reading`:
    ``hallucination.READINGS``), compared with the label, marked ``wrong`` when it is to be explained, and records
    the hash of the image bytes it was made from. Wrong: any answer that is not correct (``ours``), or an answer
    read as the opposite of the label (``reference``: the reference explains a "Yes" on a no-question and a "No"
    on a yes-question, never an answer that reads as neither). Unreadable images are recorded under ``errors``
    with the reason."""
    batch_size, max_new_tokens = answering.batch_size, answering.max_new_tokens
    answer_reading = answering.answer_reading
    rows = question_facts(questions)
    answers, errors = [], []
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt"], []).append(row)
    with progress_bar(total=len(rows), desc="answering questions", unit="question") as bar:
        for prompt, group in by_prompt.items():
            for lo in range(0, len(group), batch_size):
                chunk, images = [], []
                for row in group[lo:lo + batch_size]:
                    try:
                        loaded = question_split.image(row["image_id"])
                        if "listed" in row:  # the reference's list: its answer teacher-forced, not regenerated
                            answer = _listed_repope_answer(vlm, loaded.pixels, row)
                            parsed = hal.read_answer(answer.text, answer_reading)
                            wrong = (parsed != row["label"] if answer_reading == "ours"
                                     else parsed is not None and parsed != row["label"])
                            facts = {k: v for k, v in row.items() if k != "listed"}
                            answers.append({**facts, "image_sha": loaded.sha, "parsed": parsed,
                                            "correct": parsed == row["label"], "wrong": wrong,
                                            **answer.to_dict(), "listed": True})
                            continue
                        images.append(loaded)
                        chunk.append(row)
                    except (CocoFormatError, OSError, ValueError) as exc:
                        logger.error("question %s skipped: %s", row["question_id"], exc)
                        errors.append({"question_id": row["question_id"], "image_id": row["image_id"],
                                       "error": str(exc)})
                outs = (vlm.generate_batch([i.pixels for i in images], prompt, max_new_tokens=max_new_tokens)
                        if images else [])
                for row, loaded, answer in zip(chunk, images, outs):
                    parsed = hal.read_answer(answer.text, answer_reading)
                    wrong = (parsed != row["label"] if answer_reading == "ours"
                             else parsed is not None and parsed != row["label"])
                    answers.append({**row, "image_sha": loaded.sha, "parsed": parsed,
                                    "correct": parsed == row["label"], "wrong": wrong, **answer.to_dict()})
                bar.update(len(group[lo:lo + batch_size]))
    answers.sort(key=lambda a: str(a["question_id"]))
    summary = hal.answer_summary(answers)
    logger.info("eagle_repope: %d questions, accuracy %.3f, %d wrong; biased questions: %d of %d answered yes",
                summary["questions"], summary["accuracy"], summary["wrong"], summary["biased_yes"],
                summary["biased"])
    return {"model": vlm.name, "model_fingerprint": vlm.fingerprint, "answers": answers, "errors": errors,
            "summary": summary, "settings": {"batch_size": batch_size, "max_new_tokens": max_new_tokens,
                                             "answer_reading": answer_reading}}


def _listed_repope_answer(vlm, pixels: np.ndarray, row: dict) -> Answer:
    """The answer the reference's RePOPE list gives for a question (``data/reference_list.py``): its generated ids
    after this model's prompt for the image (which must be the list's own prompt tokens), and a check that the
    list's counter token is the one eagle_repope explains for the label."""
    record = row["listed"]
    item = str(row["question_id"])
    answer, _ = listed_answer(vlm, pixels, row["prompt"], item, record)
    counter = list(counter_answer(vlm, row["prompt"], row["label"]).token_ids)
    if record.get("counter_ids") and record["counter_ids"] != counter:
        raise ValueError(f"question {item}: the list's counter_word_id {record['counter_ids']} is not this model's "
                         f"token(s) {counter} for {hal.counter_word(row['label'])!r}: the list was made with another "
                         "model")
    return answer


# --- EAGLE on the counter token -----------------------------------------------------------------------------------
def counter_answer(vlm, prompt: str, label: str) -> Answer:
    """The correct answer ("Yes"/"No") as an Answer to teacher-force: its tokens are the explained targets."""
    tok = vlm.processor.tokenizer
    word = hal.counter_word(label)
    ids = tuple(int(t) for t in tok(word, add_special_tokens=False)["input_ids"])
    return Answer(prompt=prompt, token_ids=ids, tokens=tuple(tok.convert_ids_to_tokens(list(ids))), text=word,
                  token_probs=tuple(float("nan") for _ in ids), finished=True)


def explain_wrong_answers(vlm, question_split: CocoSplit, answers: dict, superpixels: Manifest,
                          attribution: AttributionParams, prompt_units: str = "none") -> PendingItems:
    """EAGLE's attribution of the counter token ("No" for a false yes, "Yes" for a false no) of every wrong answer
    (key: question id), over the image's superpixels (`prompt_units` ``words``: and the question's words, one
    joint order, docs/joint.md). Each is filed under the hash of the image's bytes, the prompt, the counter
    tokens, the question's facts (its meta), the label map, the model and the search settings (with the joint
    option when it is on)."""
    search = {**search_fingerprint(attribution), **units_fingerprint(prompt_units)}
    jobs = []
    for a in hal.wrong_answers(answers):
        counter = counter_answer(vlm, a["prompt"], a["label"])
        sp_key = str(a["image_id"])
        sp_fp = superpixels.info(sp_key)["fp"] if sp_key in superpixels else None
        info = {**{k: a[k] for k in FACTS}, "image_sha": a["image_sha"], "answer": a["text"]}
        # the attribution stores the question's facts in its meta: they are part of what made it
        fp = fingerprint("eagle-counter", {"image_sha": a["image_sha"], "prompt": a["prompt"],
                                           "counter": list(counter.token_ids), "meta": _meta(info)},
                         sp_fp, vlm.fingerprint, search)
        jobs.append(Job(str(a["question_id"]), fp, explain_job(vlm, question_split, superpixels, info, counter,
                                                               attribution, _meta(info), not_made="not made",
                                                               prompt_units=prompt_units),
                        {**info, **units_fingerprint(prompt_units)}))
    return PendingItems(jobs, "EAGLE (counter token)", {
        "attribution": attribution.model_dump(mode="json"), "model": vlm.name, "model_fingerprint": vlm.fingerprint,
        **units_fingerprint(prompt_units), **superpixels.params})


def _meta(q: dict) -> dict:
    return {k: q[k] for k in ("question_id", "image_id", "label", "object", "kind", "cause")}


# --- correction by removal ----------------------------------------------------------------------------------------
Answering = EagleRepopeParams.Answering
Correction = EagleRepopeParams.Correction


def baseline_map(method: str, attribution, vlm, image: np.ndarray, prompt: str, regions: RegionMap,
                 settings: dict, invert: bool = False, compose: str = "pixel_values") -> tuple[np.ndarray, dict]:
    """A baseline's pixel map of the counter token (``core/baselines`` with its `settings`) on the working
    `image`, upside down when `invert` (``hallucination.inverted``), and its seconds and peak memory. The
    gradient and activation methods run on what the model sees; under ``compose: processor`` their map is carried
    to the photo (the reference resizes its maps to the photo too)."""
    from eagle_pipelines.core.baselines import BASELINES, run_baseline

    if method not in BASELINES:
        raise ValueError(f"eagle_repope.methods lists {method!r}; known: eagle, random, {', '.join(BASELINES)}")
    on_photo = compose == "processor"
    if on_photo and BASELINES[method].needs_labels:
        raise ValueError(f"{method} works over superpixels of the model image; these are of the photo "
                         f"(superpixels.compose: processor): drop {method} from eagle_repope.methods or use "
                         f"compose: pixel_values")
    seen = vlm.model_image(image) if on_photo else image
    tf = vlm.teacher_forced(seen, prompt, list(attribution.target_token_ids))
    result = run_baseline(method, tf, list(range(len(attribution.target_token_ids))), regions.labels, **settings)
    saliency = np.asarray(result.map, dtype=np.float64)
    if on_photo:
        saliency = vlm.photo_grid(*image.shape[:2]).to_photo(saliency)
    return (hal.inverted(saliency) if invert else saliency), result.info()


def method_order(method: str, attribution, vlm, image: np.ndarray, prompt: str, regions: RegionMap,
                 seed: int, question_id, settings: dict, invert: bool = False,
                 compose: str = "pixel_values") -> tuple[np.ndarray, dict]:
    """The region order a method gives the counter token, and facts about it (a baseline's seconds and peak
    memory): EAGLE's own order, a seeded random one, or a baseline's pixel map (`baseline_map`, upside down when
    `invert`) ranked per region (mean saliency, highest first)."""
    if method == "eagle":
        return np.asarray(attribution.order), {"seconds": attribution.seconds}
    if method == "random":
        qid = int(question_id) if str(question_id).lstrip("-").isdigit() else int(params_hash({"q": question_id}), 16)
        return random_order(regions.n_regions, seed, qid), {}
    saliency, facts = baseline_map(method, attribution, vlm, image, prompt, regions, settings, invert, compose)
    return hal.region_ranking(saliency, regions), facts


def _method_settings(method: str, correction: Correction, baselines: BaselinesParams) -> dict:
    if method == "eagle":
        return {}
    if method == "random":
        return {"seed": correction.random_seed}
    return baselines.settings(method)


def _cause_annotation(question_split: CocoSplit, q: dict) -> dict | None:
    ann = q.get("cause_annotation_id")
    return None if ann is None else question_split.index.instances.anns.get(int(ann))


def correct_wrong_answers(vlm, question_split: CocoSplit, attributions: Manifest, answering: Answering,
                          correction: Correction, baselines: BaselinesParams) -> PendingItems:
    """For each explained wrong answer and each method of `correction` (key ``<method>/<question id>``): the
    answers regenerated (`answering`) with the method's k lowest-ranked units removed (superpixels; a baseline's
    saliency bands under the pixel protocol) until the answer reads as correct, AMCR, the cause hit, and the
    counter token's insertion AUC and highest confidence under that order. Each is filed under the hash of its
    attribution, the method's settings, the removal settings (the reading and removal protocol where it is not
    ours), the cause object and the model."""
    scorer_batch = int(attributions.params.get("attribution", {}).get("batch_size", 64))
    regeneration = {"max_new_tokens": answering.max_new_tokens, "batch_size": answering.batch_size,
                    "stop_at_first": correction.stop_at_first}
    jobs = []
    for qid in sorted(attributions.keys()):
        q = attributions.info(qid)
        cause = {"annotation": _cause_annotation(question_split, q), "min_overlap": correction.cause_min_overlap}
        for method in correction.methods:
            settings = _method_settings(method, correction, baselines)
            fp = fingerprint("correction", q["fp"], method, settings,
                             {**regeneration, **correction.protocol_facts(method, answering.answer_reading)}, cause,
                             vlm.fingerprint, None if method == "eagle" else scorer_batch)
            info = {"method": method, **{k: q[k] for k in FACTS}}
            jobs.append(Job(f"{method}/{qid}", fp, _correction_job(vlm, question_split, attributions, qid, method,
                                                                   settings, answering, correction, scorer_batch),
                            info))
    return PendingItems(jobs, "correction by removal", {
        "removal": {"methods": list(correction.methods), "random_seed": correction.random_seed, **regeneration,
                    "cause_min_overlap": correction.cause_min_overlap, "answer_reading": answering.answer_reading,
                    "correction": correction.protocol()},
        "baselines": {m: baselines.settings(m) for m in correction.methods if m not in ("eagle", "random")}})


def _correction_job(vlm, question_split: CocoSplit, attributions: Manifest, qid: str, method: str, settings: dict,
                    answering: Answering, correction: Correction, scorer_batch: int):
    q = attributions.info(qid)

    def compute():
        attr = image_view(attributions.load(qid))  # a joint record: its regions in their joint order
        joint = "joint" in attr.meta
        compose = compose_of(attributions)
        image = working_image(vlm, question_split.pixels(q["image_id"], q["image_sha"]), compose)
        regions = RegionMap(attr.labels, attr.meta.get("regions", {}))
        cause_mask = None
        if q["cause_annotation_id"] is not None:
            obj = next(o for o in question_split.index.objects(int(q["image_id"]))
                       if o.annotation_id == int(q["cause_annotation_id"]))
            cause_mask, _ = object_at(photo_grid(vlm, obj.mask.shape, compose), obj.mask, obj.bbox)
        invert = method in correction.invert_maps
        if correction.pixel_protocol(method):
            saliency, facts = baseline_map(method, attr, vlm, image, q["prompt"], regions, settings, invert, compose)
            units, order = hal.pixel_units(saliency, correction.pixel_steps)
        else:
            units = regions
            order, facts = method_order(method, attr, vlm, image, q["prompt"], regions, correction.random_seed,
                                        q["question_id"], settings, invert, compose)
        if method == "eagle" and not joint:
            curves = Curves(np.asarray(attr.area), np.asarray(attr.insertion), np.asarray(attr.deletion))
        else:
            scorer = vlm.scorer(image, q["prompt"], list(attr.target_token_ids),
                                list(range(len(attr.target_token_ids))), batch_size=scorer_batch,
                                **({"compose": compose} if compose != "pixel_values" else {}))
            curves = region_curves(scorer, units, order)

        def answer(keep: np.ndarray) -> list[str]:
            masks = units.masks(keep)
            outs = vlm.generate_batch([image * m[..., None].astype(image.dtype) for m in masks], q["prompt"],
                                      max_new_tokens=answering.max_new_tokens)
            return [o.text for o in outs]

        fix = hal.correct_by_removal(answer, order, units.areas(), q["label"], batch_size=answering.batch_size,
                                     stop_at_first=correction.stop_at_first, reading=answering.answer_reading,
                                     steps=correction.removal_steps)
        return {"method": method, **{k: q[k] for k in FACTS}, "n_regions": units.n_regions,
                "units": "pixel_bands" if correction.pixel_protocol(method) else "regions",
                "order": [int(r) for r in order], **fix.to_dict(), "corrected": fix.corrected,
                "cause_hit": hal.cause_hit(units.labels, fix, cause_mask, correction.cause_min_overlap),
                "cause_removed_fraction": hal.removed_cause_fraction(units.labels, fix, cause_mask),
                "insertion_auc": insertion_auc(curves), "highest_confidence": highest_confidence(curves),
                "p_counter_full": float(curves.full_score.mean()), **facts}

    return compute


# --- metrics ------------------------------------------------------------------------------------------------------
METRIC_COLUMNS = ["method", "n_questions", "n_wrong", "n_biased", "hallucinations_biased",
                  "hallucination_rate_biased", "n_explained", "insertion_auc", "ahc", "amcr", "csr",
                  "csr_threshold", "corrected_rate", "cause_hit_rate", "n_with_cause", "seconds_per_sample"]
PER_SAMPLE_COLUMNS = ["question_id", "image_id", "kind", "object", "cause", "method", "corrected_k", "amcr",
                      "cause_hit", "cause_removed_fraction", "answer_after", "insertion_auc", "highest_confidence"]


def question_records(corrections: Manifest) -> list[dict]:
    """The correction records of the manifest grouped per question (question id order, as text): the question's
    facts and ``methods`` (method -> its record)."""
    by_question: dict[str, dict] = {}
    for key, info in corrections.items.items():
        qid = key.split("/", 1)[1]
        record = by_question.setdefault(qid, {**{k: info[k] for k in FACTS}, "methods": {}})
        record["methods"][info["method"]] = corrections.load(key)
    return [by_question[q] for q in sorted(by_question)]


def summarise(answers: dict, corrections: Manifest,
              eagle_repope: EagleRepopeParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics table (one row per method of `eagle_repope.methods`, in that order) and the per-sample rows
    (question ids in text order, then methods by name), from exactly the correction records of the manifest."""
    records = question_records(corrections)
    table = pd.DataFrame(hal.metric_rows(records, answers["summary"], list(eagle_repope.methods),
                                     eagle_repope.csr_threshold), columns=METRIC_COLUMNS)
    per_sample = []
    for r in records:
        for method in sorted(set(r["methods"]) & set(eagle_repope.methods)):
            m = r["methods"][method]
            per_sample.append({"question_id": r["question_id"], "image_id": r["image_id"], "kind": r["kind"],
                               "object": r["object"], "cause": r["cause"], "method": method,
                               "corrected_k": m["corrected_k"], "amcr": m["amcr"], "cause_hit": m["cause_hit"],
                               "cause_removed_fraction": m["cause_removed_fraction"],
                               "answer_after": hal.answer_after(m),
                               "insertion_auc": m["insertion_auc"], "highest_confidence": m["highest_confidence"]})
    logger.info("eagle_repope metrics:\n%s", table.to_string(index=False))
    return table, pd.DataFrame(per_sample, columns=PER_SAMPLE_COLUMNS)
