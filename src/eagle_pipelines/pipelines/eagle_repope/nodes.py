"""Nodes of the eagle_repope pipeline: yes/no questions, the model's answers, EAGLE on the wrong ones (counter
token), regeneration with the lowest-ranked regions removed, metrics, figures and the report."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from eagle_pipelines.api import explain
from eagle_pipelines.core import hallucination as hal
from eagle_pipelines.core.evaluate import object_at, random_order, region_curves
from eagle_pipelines.core.metrics import Curves, highest_confidence, insertion_auc
from eagle_pipelines.core.regions import RegionMap, params_hash, slico
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.data.shapes import category_names, generate_image, generate_images
from eagle_pipelines.io.partitions import Skipped
from eagle_pipelines.models.base import Answer
from eagle_pipelines.parameters import parse

logger = logging.getLogger(__name__)
SPLIT = "repope"
QUESTION_COLUMNS = ["question_id", "image_id", "file_name", "text", "prompt", "label", "object", "kind", "cause",
                    "cause_annotation_id"]


# --- questions ----------------------------------------------------------------------------------------------------
def prepare_question_split(eagle_repope: dict, shapes: dict, repope_source) -> tuple[dict, dict, str]:
    """The question set from the source `eagle_repope.source` names: ``shapes`` generates the embedded one;
    ``repope`` takes the RePOPE list and the instances and images of the COCO val2014 images it asks about
    (`repope_source`, lazy: read only here). Returns images keyed by file stem, the COCO instances of those
    images and the question list in the POPE format."""
    params = parse("eagle_repope", eagle_repope)
    if params.source == "shapes":
        return generate_question_split(shapes, eagle_repope)
    records = repope_source.records()
    if params.max_questions:
        records = records[: params.max_questions]
    instances = repope_source.instances()
    wanted = {r["image"] for r in records}
    images_info = [i for i in instances["images"] if i["file_name"] in wanted]
    missing = sorted(wanted - {i["file_name"] for i in images_info})
    if missing:
        raise CocoFormatError(f"{len(missing)} images of the question list are not in {repope_source.name}'s "
                              f"instances (e.g. {missing[:3]}); RePOPE asks about COCO val2014 images")
    ids = {i["id"] for i in images_info}
    subset = {**instances, "images": images_info,
              "annotations": [a for a in instances["annotations"] if a["image_id"] in ids]}
    source_images = repope_source.images()
    stems = {i["file_name"].rsplit(".", 1)[0] for i in images_info}
    absent = sorted(stems - set(source_images))
    if absent:
        raise CocoFormatError(f"{len(absent)} images of the question list are missing from {repope_source.name}'s "
                              f"images folder (e.g. {absent[:3]})")
    logger.info("eagle_repope: %d RePOPE questions on %d COCO val2014 images", len(records), len(stems))
    return ({s: source_images[s] for s in sorted(stems)}, subset, hal.write_pope_questions(records))


def generate_question_split(shapes: dict, eagle_repope: dict) -> tuple[dict[str, Image.Image], dict, str]:
    """The embedded question set: images of the dedicated ``repope`` shapes split (unbiased) that show the
    co-occurrence anchor X without its companion Y (biased questions) plus control images, as COCO instances and
    a POPE-format question list (JSON lines) with the known cause of each biased question."""
    shapes_p, params = parse("shapes", shapes), parse("eagle_repope", eagle_repope)
    if shapes_p.cooccurrence is None:
        raise ValueError("eagle_repope on the embedded data needs shapes.cooccurrence (the training bias whose "
                         "anchor is the known cause); set it in conf/base/parameters_data_preparation.yml")
    anchor, companion = shapes_p.cooccurrence.anchor, shapes_p.cooccurrence.companion
    q = params.questions
    picked, n_biased, n_other = [], 0, 0
    for i in range(q.scan_limit):
        _, objects = generate_image(shapes_p, SPLIT, i)
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
    data = generate_images(shapes_p, SPLIT, [i for i, _ in picked])
    files = [f"{SPLIT}_{i:06d}.png" for i, _ in picked]
    records = hal.shapes_questions(list(zip(files, [n for _, n in picked])), category_names(shapes_p), anchor,
                                   companion, q.controls, np.random.default_rng(q.seed), params.question_template)
    logger.info("eagle_repope questions: %d biased ('Is there a %s?' beside a %s), %d controls, from %d images",
                n_biased, companion, anchor, len(records) - n_biased, len(picked))
    images = {name.rsplit(".", 1)[0]: Image.fromarray(px) for name, px in data.images.items()}
    return images, data.instances, hal.write_pope_questions(records)


def confounded(objects, anchor: str, companion: str) -> bool:
    """Whether an object other than the anchor shares the companion's colour or shape (a blue circle or a red
    square beside "Is there a blue square?"): such an object may trigger a "Yes" by itself."""
    colour, shape = companion.split(" ")
    return any(o.name != anchor and (o.colour == colour or o.shape == shape) for o in objects)


def build_question_list(repope_questions: str, repope_instances: dict, eagle_repope: dict) -> pd.DataFrame:
    """The questions to answer, resolved against the COCO instances: image id, prompt, label, the object asked
    about, and (where known) the true cause object's annotation id. Reads the POPE/RePOPE format."""
    params = parse("eagle_repope", eagle_repope)
    records = hal.read_pope_questions(repope_questions, source="repope_questions")
    if params.max_questions:
        records = records[: params.max_questions]
    index = CocoIndex(repope_instances, source="repope instances")
    by_file = {index.image_info(i)["file_name"]: i for i in index.image_ids()}
    rows = []
    for r in records:
        if r["image"] not in by_file:
            raise CocoFormatError(f"question {r['question_id']}: image '{r['image']}' is not in the instances file "
                                  f"({len(by_file)} images); point repope_instances at the annotations of the "
                                  f"question list's images (COCO val2014 for RePOPE)")
        image_id = by_file[r["image"]]
        cause, cause_ann = r.get("cause"), None
        if cause:
            objs = [o for o in index.objects(image_id) if o.category == cause]
            if not objs:
                raise CocoFormatError(f"question {r['question_id']}: the cause '{cause}' is not annotated in "
                                      f"image {image_id}")
            cause_ann = max(objs, key=lambda o: int(o.mask.sum())).annotation_id
        rows.append({"question_id": r["question_id"], "image_id": image_id, "file_name": r["image"],
                     "text": r["text"], "prompt": r["text"] + params.prompt_suffix, "label": r["label"],
                     "object": r["object"], "kind": r.get("kind", "repope"), "cause": cause or "",
                     "cause_annotation_id": cause_ann})
    return pd.DataFrame(rows, columns=QUESTION_COLUMNS)


# --- answers ------------------------------------------------------------------------------------------------------
def answer_questions(vlm, eagle_repope_questions: pd.DataFrame, repope_images: dict, repope_instances: dict,
                     eagle_repope: dict) -> dict:
    """Greedy answers to every question; each is parsed to yes/no and compared with the label. Unreadable
    images are recorded under ``errors``."""
    params = parse("eagle_repope", eagle_repope)
    index = CocoIndex(repope_instances, source="repope instances")
    rows = list(eagle_repope_questions.itertuples(index=False))
    answers, errors = [], []
    by_prompt: dict[str, list] = {}
    for row in rows:
        by_prompt.setdefault(row.prompt, []).append(row)
    with tqdm(total=len(rows), desc="answering questions", unit="question") as bar:
        for prompt, group in by_prompt.items():
            for lo in range(0, len(group), params.batch_size):
                chunk, images = [], []
                for row in group[lo:lo + params.batch_size]:
                    try:
                        images.append(index.load_image(int(row.image_id), repope_images))
                        chunk.append(row)
                    except (CocoFormatError, OSError, ValueError) as exc:
                        logger.error("question %s skipped: %s", row.question_id, exc)
                        errors.append({"question_id": row.question_id, "error": str(exc)})
                outs = vlm.generate_batch(images, prompt, max_new_tokens=params.max_new_tokens) if images else []
                for row, answer in zip(chunk, outs):
                    parsed = hal.parse_yes_no(answer.text)
                    answers.append({"question_id": row.question_id, "label": row.label, "kind": row.kind,
                                    "parsed": parsed, "correct": parsed == row.label, **answer.to_dict()})
                bar.update(len(group[lo:lo + params.batch_size]))
    answers.sort(key=lambda a: str(a["question_id"]))
    summary = answer_summary(answers)
    logger.info("eagle_repope: %d questions, accuracy %.3f, %d wrong; biased questions: %d of %d answered yes",
                summary["questions"], summary["accuracy"], summary["wrong"], summary["biased_yes"],
                summary["biased"])
    return {"model": vlm.name, "answers": answers, "errors": errors, "summary": summary}


def answer_summary(answers: list[dict]) -> dict:
    """Counts: questions, accuracy, wrong answers, and per kind (biased / absent / present / repope)."""
    n = len(answers)
    out = {"questions": n, "accuracy": float(np.mean([a["correct"] for a in answers])) if n else float("nan"),
           "wrong": sum(not a["correct"] for a in answers),
           "false_positives": sum(a["label"] == "no" and a["parsed"] == "yes" for a in answers),
           "false_negatives": sum(a["label"] == "yes" and a["parsed"] == "no" for a in answers),
           "unparsed": sum(a["parsed"] is None for a in answers)}
    for kind in ("biased", "absent", "present", "repope"):
        sel = [a for a in answers if a["kind"] == kind]
        out[kind] = len(sel)
        out[f"{kind}_accuracy"] = float(np.mean([a["correct"] for a in sel])) if sel else None
        out[f"{kind}_yes"] = sum(a["parsed"] == "yes" for a in sel)
    out["hallucination_rate_biased"] = out["biased_yes"] / out["biased"] if out["biased"] else None
    return out


# --- EAGLE on the counter token -----------------------------------------------------------------------------------
def counter_answer(vlm, prompt: str, label: str) -> Answer:
    """The correct answer ("Yes"/"No") as an Answer to teacher-force: its tokens are the explained targets."""
    tok = vlm.processor.tokenizer
    word = hal.counter_word(label)
    ids = tuple(int(t) for t in tok(word, add_special_tokens=False)["input_ids"])
    return Answer(prompt=prompt, token_ids=ids, tokens=tuple(tok.convert_ids_to_tokens(list(ids))), text=word,
                  token_probs=tuple(float("nan") for _ in ids), finished=True)


def question_list_hash(questions: pd.DataFrame) -> str:
    """A hash of what each question is (id, image, prompt, label): the same whether the list comes from the node
    that built it or from its CSV file (where empty cells turn into NaN)."""
    rows = [[str(r.question_id), str(r.file_name), str(r.prompt), str(r.label)]
            for r in questions.itertuples(index=False)]
    return params_hash({"rows": rows})


def repope_prefix(vlm, questions: pd.DataFrame, superpixels: dict, attribution: dict) -> str:
    """Folder of one configuration's attributions: model, question list, superpixels and search parameters."""
    sp, at = parse("superpixels", superpixels), parse("attribution", attribution)
    return f"{at.strategy}-" + params_hash({
        "model": vlm.fingerprint, "questions": question_list_hash(questions),
        "superpixels": sp.model_dump(), "lambda1": at.lambda1, "lambda2": at.lambda2,
        "search": at.search_params()})


def _regions(vlm, image: np.ndarray, superpixels: dict) -> tuple[np.ndarray, RegionMap]:
    image = vlm.model_image(image)
    return image, slico(image, **parse("superpixels", superpixels).model_dump())


def explain_wrong_answers(vlm, eagle_repope_questions: pd.DataFrame, eagle_repope_answers: dict,
                          repope_images: dict, repope_instances: dict, superpixels: dict,
                          attribution: dict) -> dict[str, Callable]:
    """Lazy EAGLE attributions of the counter token ("No" for a false yes, "Yes" for a false no) of every wrong
    answer, keyed ``<strategy-hash>/<question id>``. Only missing ones are computed."""
    params = parse("attribution", attribution)
    index = CocoIndex(repope_instances, source="repope instances")
    prefix = repope_prefix(vlm, eagle_repope_questions, superpixels, attribution)
    wrong = {str(a["question_id"]) for a in eagle_repope_answers["answers"] if not a["correct"]}
    jobs = {}
    for row in eagle_repope_questions.itertuples(index=False):
        if str(row.question_id) not in wrong:
            continue
        meta = {"question_id": row.question_id, "image_id": int(row.image_id), "label": row.label,
                "object": row.object, "kind": row.kind, "cause": row.cause}

        def compute(row=row, meta=meta):
            try:
                image = index.load_image(int(row.image_id), repope_images)
            except CocoFormatError as exc:
                return Skipped(str(exc))
            image, regions = _regions(vlm, image, superpixels)
            return explain(vlm, image, row.prompt, tokens=None, strategy=params.strategy, lambda1=params.lambda1,
                           lambda2=params.lambda2, batch_size=params.batch_size,
                           answer=counter_answer(vlm, row.prompt, row.label), regions=regions,
                           search_params=params.search_params(), meta=meta)

        jobs[f"{prefix}/{row.question_id}"] = compute
    return jobs


# --- correction by removal ----------------------------------------------------------------------------------------
def method_order(method: str, attribution, vlm, image: np.ndarray, prompt: str, regions: RegionMap,
                 seed: int, question_id, baselines=None) -> tuple[np.ndarray, dict]:
    """The region order a method gives the counter token, and facts about it (a baseline's seconds and peak
    memory): EAGLE's own order, a seeded random one, or a baseline's pixel map ranked per region (mean saliency,
    highest first; the baselines of ``core/baselines`` with their settings from `baselines`)."""
    if method == "eagle":
        return np.asarray(attribution.order), {"seconds": attribution.seconds}
    if method == "random":
        qid = int(question_id) if str(question_id).lstrip("-").isdigit() else int(params_hash({"q": question_id}), 16)
        return random_order(regions.n_regions, seed, qid), {}
    from eagle_pipelines.core.baselines import BASELINES, run_baseline

    if method not in BASELINES:
        raise ValueError(f"eagle_repope.methods lists {method!r}; known: eagle, random, {', '.join(BASELINES)}")
    tf = vlm.teacher_forced(image, prompt, list(attribution.target_token_ids))
    result = run_baseline(method, tf, list(range(len(attribution.target_token_ids))), regions.labels,
                          **baselines.settings(method))
    return region_ranking(np.asarray(result.map, dtype=np.float64), regions), result.info()


def region_ranking(saliency: np.ndarray, regions: RegionMap) -> np.ndarray:
    """Regions by mean saliency, highest first (ties to the lower region id)."""
    labels = regions.labels.ravel()
    total = np.bincount(labels, weights=saliency.ravel(), minlength=regions.n_regions)
    mean = total / np.maximum(np.bincount(labels, minlength=regions.n_regions), 1)
    return np.argsort(-mean, kind="stable")


def correction_prefix(attribution_folder: str, params, baselines: dict | None = None) -> str:
    """Folder of the correction records: the attribution folder plus the removal settings and, for the
    baselines among the methods, their settings."""
    settings = parse("baselines", baselines or {})
    return f"{attribution_folder}-" + params_hash({
        "methods": params.methods, "seed": params.random_seed, "max_new_tokens": params.max_new_tokens,
        "overlap": params.cause_min_overlap, "stop": params.stop_at_first,
        "baselines": {m: settings.settings(m) for m in params.methods if m not in ("eagle", "random")}})


def correct_wrong_answers(vlm, eagle_repope_questions: pd.DataFrame, eagle_repope_attributions: dict,
                          repope_images: dict, repope_instances: dict, superpixels: dict, attribution: dict,
                          eagle_repope: dict, baselines: dict) -> dict[str, Callable]:
    """Lazy per-question records: for each method, the answers regenerated with the k lowest-ranked regions
    removed until the answer is correct, AMCR, the cause hit, and the counter token's insertion AUC and highest
    confidence under that method's order. Keyed ``<attribution folder>-<hash>/<question id>``."""
    params = parse("eagle_repope", eagle_repope)
    at = parse("attribution", attribution)
    index = CocoIndex(repope_instances, source="repope instances")
    folder = repope_prefix(vlm, eagle_repope_questions, superpixels, attribution)
    prefix = correction_prefix(folder, params, baselines)
    baseline_params = parse("baselines", baselines)
    rows = {str(r.question_id): r for r in eagle_repope_questions.itertuples(index=False)}
    jobs = {}
    for key in sorted(eagle_repope_attributions):
        head, qid = key.split("/", 1)
        if head != folder or qid not in rows:
            continue
        row = rows[qid]

        def compute(row=row, load=eagle_repope_attributions[key]):
            attr = load()
            try:
                image = vlm.model_image(index.load_image(int(row.image_id), repope_images))
            except CocoFormatError as exc:
                return Skipped(str(exc))
            regions = RegionMap(attr.labels, attr.meta.get("regions", {}))
            cause_mask = None
            if row.cause_annotation_id is not None and not pd.isna(row.cause_annotation_id):
                obj = next(o for o in index.objects(int(row.image_id))
                           if o.annotation_id == int(row.cause_annotation_id))
                cause_mask, _ = object_at(image.shape[:2], obj.mask, obj.bbox)
            scorer = vlm.scorer(image, row.prompt, list(attr.target_token_ids),
                                list(range(len(attr.target_token_ids))), batch_size=at.batch_size)

            def answer(keep: np.ndarray) -> list[str]:
                masks = regions.masks(keep)
                outs = vlm.generate_batch([image * m[..., None].astype(image.dtype) for m in masks], row.prompt,
                                          max_new_tokens=params.max_new_tokens)
                return [o.text for o in outs]

            record = {"question_id": row.question_id, "image_id": int(row.image_id), "label": row.label,
                      "kind": row.kind, "object": row.object, "cause": row.cause, "n_regions": regions.n_regions,
                      "methods": {}}
            for method in params.methods:
                order, facts = method_order(method, attr, vlm, image, row.prompt, regions, params.random_seed,
                                            row.question_id, baseline_params)
                if method == "eagle":
                    curves = Curves(np.asarray(attr.area), np.asarray(attr.insertion), np.asarray(attr.deletion))
                else:
                    curves = region_curves(scorer, regions, order)
                fix = hal.correct_by_removal(answer, order, regions.areas(), row.label,
                                             batch_size=params.batch_size, stop_at_first=params.stop_at_first)
                record["methods"][method] = {
                    "order": [int(r) for r in order], **fix.to_dict(), "corrected": fix.corrected,
                    "cause_hit": hal.cause_hit(regions.labels, fix, cause_mask, params.cause_min_overlap),
                    "cause_removed_fraction": hal.removed_cause_fraction(regions.labels, fix, cause_mask),
                    "insertion_auc": insertion_auc(curves), "highest_confidence": highest_confidence(curves),
                    "p_counter_full": float(curves.full_score.mean()), **facts,
                }
            return record

        jobs[f"{prefix}/{qid}"] = compute
    return jobs


# --- metrics ------------------------------------------------------------------------------------------------------
METRIC_COLUMNS = ["method", "n_questions", "n_wrong", "n_biased", "hallucinations_biased",
                  "hallucination_rate_biased", "n_explained", "insertion_auc", "ahc", "amcr", "csr",
                  "csr_threshold", "corrected_rate", "cause_hit_rate", "n_with_cause", "seconds_per_sample"]


def current_records(vlm, questions: pd.DataFrame, corrections: dict, superpixels: dict, attribution: dict,
                    params, baselines: dict) -> list[dict]:
    folder = repope_prefix(vlm, questions, superpixels, attribution)
    prefix = correction_prefix(folder, params, baselines)
    return [corrections[k]() for k in sorted(corrections) if k.split("/", 1)[0] == prefix]


def metric_rows(records: list[dict], summary: dict, methods: list[str], threshold: float) -> list[dict]:
    """One row per method: hallucination counts, the counter token's insertion AUC and AHC, AMCR, CSR@threshold
    over all wrong answers (never corrected = failure) and the cause-hit rate over those with a known cause."""
    rows = []
    for method in methods:
        per = [r["methods"][method] for r in records if method in r["methods"]]
        with_cause = [p for p, r in zip(per, records) if p["cause_hit"] is not None]
        amcrs = [p["amcr"] for p in per]
        rows.append({
            "method": method, "n_questions": summary["questions"], "n_wrong": summary["wrong"],
            "n_biased": summary["biased"], "hallucinations_biased": summary["biased_yes"],
            "hallucination_rate_biased": summary["hallucination_rate_biased"], "n_explained": len(per),
            "insertion_auc": float(np.mean([p["insertion_auc"] for p in per])) if per else None,
            "ahc": float(np.mean([p["highest_confidence"] for p in per])) if per else None,
            "amcr": hal.amcr_mean(amcrs) if per else None,
            "csr": hal.csr(amcrs, [p["corrected"] for p in per], threshold) if per else None,
            "csr_threshold": threshold,
            "corrected_rate": float(np.mean([p["corrected"] for p in per])) if per else None,
            "cause_hit_rate": float(np.mean([bool(p["cause_hit"]) for p in with_cause])) if with_cause else None,
            "n_with_cause": len(with_cause),
            "seconds_per_sample": (float(np.mean([p["seconds"] for p in per]))
                                   if per and all("seconds" in p for p in per) else None),
        })
    return rows


def answer_after(correction: dict) -> str:
    """The regenerated answer at the first correction (the last one regenerated when never corrected)."""
    if correction["corrected_k"] is not None:
        return correction["answers"][correction["ks"].index(correction["corrected_k"])]
    return correction["answers"][-1] if correction["answers"] else ""


def summarise(vlm, eagle_repope_questions: pd.DataFrame, eagle_repope_answers: dict,
              eagle_repope_corrections: dict, superpixels: dict, attribution: dict,
              eagle_repope: dict, baselines: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The metrics table (one row per method) and the per-sample rows."""
    params = parse("eagle_repope", eagle_repope)
    records = current_records(vlm, eagle_repope_questions, eagle_repope_corrections, superpixels, attribution,
                              params, baselines)
    table = pd.DataFrame(metric_rows(records, eagle_repope_answers["summary"], params.methods,
                                     params.csr_threshold), columns=METRIC_COLUMNS)
    per_sample = []
    for r in records:
        for method, m in r["methods"].items():
            per_sample.append({"question_id": r["question_id"], "image_id": r["image_id"], "kind": r["kind"],
                               "object": r["object"], "cause": r["cause"], "method": method,
                               "corrected_k": m["corrected_k"], "amcr": m["amcr"], "cause_hit": m["cause_hit"],
                               "cause_removed_fraction": m["cause_removed_fraction"],
                               "answer_after": answer_after(m),
                               "insertion_auc": m["insertion_auc"], "highest_confidence": m["highest_confidence"]})
    logger.info("eagle_repope metrics:\n%s", table.to_string(index=False))
    return table, pd.DataFrame(per_sample)


# --- figures and report -------------------------------------------------------------------------------------------
def build_report(vlm, eagle_repope_questions: pd.DataFrame, eagle_repope_answers: dict,
                 eagle_repope_attributions: dict, eagle_repope_corrections: dict, eagle_repope_metrics: pd.DataFrame,
                 repope_images: dict, repope_instances: dict, superpixels: dict, attribution: dict,
                 eagle_repope: dict, baselines: dict):
    """The corrections figure (paper style), the AMCR curve and one self-contained HTML page."""
    import base64
    import io

    from eagle_pipelines.pipelines.eagle_repope import report
    from eagle_pipelines.reporting.html_page import git_commit as _git_commit

    params = parse("eagle_repope", eagle_repope)
    records = current_records(vlm, eagle_repope_questions, eagle_repope_corrections, superpixels, attribution,
                              params, baselines)
    folder = repope_prefix(vlm, eagle_repope_questions, superpixels, attribution)
    index = CocoIndex(repope_instances, source="repope instances")
    questions = {str(r.question_id): r for r in eagle_repope_questions.itertuples(index=False)}
    answers = {str(a["question_id"]): a for a in eagle_repope_answers["answers"]}
    # biased questions first: those have a known cause
    chosen = sorted(records, key=lambda r: (r["kind"] != "biased", str(r["question_id"])))[: params.figure_samples]
    samples = []
    for r in chosen:
        key = f"{folder}/{r['question_id']}"
        q = questions.get(str(r["question_id"]))
        if key not in eagle_repope_attributions or q is None or "eagle" not in r["methods"]:
            continue
        try:
            image = vlm.model_image(index.load_image(int(q.image_id), repope_images))
        except CocoFormatError:
            continue
        cause_mask = None
        if q.cause_annotation_id is not None and not pd.isna(q.cause_annotation_id):
            obj = next(o for o in index.objects(int(q.image_id)) if o.annotation_id == int(q.cause_annotation_id))
            cause_mask, _ = object_at(image.shape[:2], obj.mask, obj.bbox)
        samples.append({"image": image, "attribution": eagle_repope_attributions[key](),
                        "correction": r["methods"]["eagle"], "question_id": q.question_id, "text": q.text,
                        "label": q.label, "answer": answers[str(q.question_id)]["text"], "cause_mask": cause_mask})
    figs = {"corrections": report.correction_figure(samples),
            "amcr": report.amcr_figure(records, params.methods, params.csr_threshold)}

    def png(fig) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return base64.b64encode(buf.getvalue()).decode("ascii")

    run = {"git commit": _git_commit(), "model": vlm.name, "model fingerprint": vlm.fingerprint,
           "attribution folder": folder}
    page = report.html_page(eagle_repope_metrics, eagle_repope_answers["summary"],
                            {name: png(fig) for name, fig in figs.items()}, run,
                            {"eagle_repope": eagle_repope, "superpixels": superpixels, "attribution": attribution,
                             "baselines": baselines})
    return figs["corrections"], figs["amcr"], page
