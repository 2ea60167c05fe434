"""Hallucination diagnosis: which smallest visual region triggers a wrong yes/no answer, and does removing it
correct the answer? (No Kedro, no model class: the model is reached through an `answer` callable.)

For a wrong answer, EAGLE orders the regions for the correct answer's token (the counter token, teacher-forced).
The regions ranked last support the counter token least, so they are the candidates for the trigger: the answer
is regenerated with the k lowest-ranked regions removed (zero fill), k = 1..n, until it becomes correct.

- AMCR (average minimal correction ratio, per sample): the removed area fraction at the first correction; 1 when
  no removal corrects the answer.
- CSR@τ (correction success rate): the fraction of wrong answers with AMCR ≤ τ; samples never corrected count
  as failures (the reference leaves them out of the denominator).

Two settings follow either our rules or the reference's (evals/eval_hallucination_correction.py and the
RePOPE scripts of github.com/RuoyuChen10/EAGLE); docs/hallucination.md lists the differences:
- reading an answer (`read_answer`): ``ours`` takes the first word in any case; ``reference`` compares the first
  characters of the decoded text, case-sensitively ("Yes" / "No" prefixes);
- the removal steps (`correct_by_removal`, `REMOVAL_STEPS`): ``ours`` removes k = 1..n regions (the last step
  shows a black image); ``reference`` removes k = 0..n-1 (the first step is the intact image, a black image is
  never shown). A pixel map follows the same steps over its saliency bands (`pixel_bands`: the reference's
  "keep the top i/64 of the pixels").
- Cause hit (when the true cause is known, e.g. the co-occurring object X of the embedded data): the region whose
  removal corrected the answer (the k-th lowest-ranked one) overlaps the cause object's mask.

Yes/no question lists follow the POPE / RePOPE format: one JSON object per line (or a JSON array) with
``question_id``, ``image`` (file name), ``text`` ("Is there a <object> in the image?") and ``label`` (yes/no).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.errors import UserError

YES_NO = ("yes", "no")
QUESTION_PATTERN = re.compile(r"^\s*is there an? (?P<object>.+?) in the image\s*\?", re.IGNORECASE)


class QuestionFormatError(UserError, ValueError):
    """A question list does not follow the POPE/RePOPE format; the message names the file and line."""


def parse_yes_no(text: str) -> str | None:
    """'yes' or 'no' from a generated answer ("Yes", "No.", "yes, there is ..."); None for anything else."""
    words = re.findall(r"[a-z]+", text.lower())
    return words[0] if words and words[0] in YES_NO else None


def read_reference(text: str) -> str | None:
    """The reference's reading (evals/eval_hallucination_correction.py): 'yes' when the decoded answer starts with
    "Yes" (``text[:3] == "Yes"``), 'no' when it starts with "No" (``text[:2] == "No"``), None otherwise. It is
    case-sensitive and strips nothing: "yes", "YES", " Yes" and "**Yes**" are neither, while "Not sure" and
    "None" read as no (prefixes, not words)."""
    if text.startswith("Yes"):
        return "yes"
    if text.startswith("No"):
        return "no"
    return None


#: how a generated answer is read as yes / no: ``ours`` (first word, any case) or ``reference`` (the reference's
#: case-sensitive prefixes)
READINGS: dict[str, Callable[[str], str | None]] = {"ours": parse_yes_no, "reference": read_reference}


def read_answer(text: str, reading: str = "ours") -> str | None:
    """'yes', 'no' or None from a generated answer, by the rule `reading` names (``READINGS``)."""
    if reading not in READINGS:
        raise ValueError(f"unknown answer reading {reading!r}; choose one of {sorted(READINGS)}")
    return READINGS[reading](text)


def question_prompt(template: str, question: str, suffix: str = "") -> str:
    """The prompt for a question: `template` with the question in place of ``{question}`` (or of ``{}``, as the
    reference's template writes it), then `suffix`. Only the placeholder is replaced (no str.format), so other
    braces and quotes in the template stay as they are."""
    for placeholder in ("{question}", "{}"):
        if placeholder in template:
            return template.replace(placeholder, question) + suffix
    raise ValueError(f"prompt_template {template!r} has no '{{question}}' (or '{{}}') for the question")


def counter_word(label: str) -> str:
    """The answer word to teacher-force for a wrong answer: the correct label, capitalised ("Yes" / "No")."""
    if label not in YES_NO:
        raise ValueError(f"label must be 'yes' or 'no', got {label!r}")
    return label.capitalize()


def question_object(text: str) -> str | None:
    """The object a POPE question asks about ("Is there a dining table in the image?" -> "dining table")."""
    match = QUESTION_PATTERN.match(text)
    return match.group("object").strip() if match else None


# --- question lists (POPE / RePOPE format) ------------------------------------------------------------------------
REQUIRED_KEYS = ("question_id", "image", "text", "label")


def read_pope_questions(text: str, source: str = "question list") -> list[dict]:
    """Reads a POPE/RePOPE question list: JSON lines (the published files) or one JSON array.

    Each record keeps its keys; ``label`` is normalised to lower case and ``object`` is added from the question
    text when absent. Errors name `source` and the line (or array position) and what is wrong."""
    stripped = text.strip()
    if not stripped:
        raise QuestionFormatError(f"{source}: the file is empty; expected one JSON object per line with keys "
                                  f"{list(REQUIRED_KEYS)}")
    if stripped.startswith("["):
        try:
            items = [(i + 1, r) for i, r in enumerate(json.loads(stripped))]
        except json.JSONDecodeError as exc:
            raise QuestionFormatError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        where = "item"
    else:
        items = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise QuestionFormatError(f"{source}, line {n}: not valid JSON ({exc.msg})") from None
        where = "line"
    records, seen = [], set()
    for n, record in items:
        if not isinstance(record, dict):
            raise QuestionFormatError(f"{source}, {where} {n}: expected a JSON object, got {type(record).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing:
            raise QuestionFormatError(f"{source}, {where} {n}: missing {missing}; a POPE/RePOPE record has "
                                      f"{list(REQUIRED_KEYS)}")
        label = str(record["label"]).strip().lower()
        if label not in YES_NO:
            raise QuestionFormatError(f"{source}, {where} {n}: label {record['label']!r} is not yes/no")
        if record["question_id"] in seen:
            raise QuestionFormatError(f"{source}, {where} {n}: question_id {record['question_id']!r} repeats")
        seen.add(record["question_id"])
        obj = record.get("object") or question_object(str(record["text"]))
        if obj is None:
            raise QuestionFormatError(f"{source}, {where} {n}: cannot find the object in {record['text']!r}; "
                                      f"expected 'Is there a <object> in the image?' or an 'object' key")
        records.append({**record, "label": label, "object": obj})
    return records


def read_pope_file(path: str | Path) -> list[dict]:
    """`read_pope_questions` of a file (e.g. RePOPE's annotations/coco_repope_random.json)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"question list {path} not found; RePOPE's lists are annotations/"
                                f"coco_repope_{{random,popular,adversarial}}.json of github.com/YanNeu/RePOPE")
    return read_pope_questions(path.read_text(), source=str(path))


def write_pope_questions(records: Sequence[dict]) -> str:
    """JSON lines in the POPE format (the inverse of `read_pope_questions`)."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def shapes_questions(images: Sequence[tuple[str, set[str]]], categories: Sequence[str], anchor: str,
                     companion: str, controls: int, rng: np.random.Generator,
                     template: str = "Is there a {name} in the image?") -> list[dict]:
    """Yes/no questions on shapes images, RePOPE style, with the known cause of the co-occurrence bias.

    `images` are (file name, set of category names present). Every image that shows `anchor` (X) without
    `companion` (Y) gets the biased question "Is there a Y?" (label no, cause X). The first `controls` other
    images get one unbiased question each, alternating: an absent category other than Y (label no) and a present
    one (label yes); their cause is None."""
    records, n_controls = [], 0
    for file_name, present in images:
        if anchor in present and companion not in present:
            records.append({"image": file_name, "object": companion, "label": "no", "kind": "biased",
                            "cause": anchor})
        elif n_controls < controls:
            if n_controls % 2 == 0:
                pool = [c for c in categories if c not in present and c != companion]
                kind, label = "absent", "no"
            else:
                pool = sorted(present)
                kind, label = "present", "yes"
            records.append({"image": file_name, "object": pool[int(rng.integers(len(pool)))], "label": label,
                            "kind": kind, "cause": None})
            n_controls += 1
    for i, r in enumerate(records):
        r["question_id"] = i + 1
        r["text"] = template.format(name=r["object"])
    return records


# --- correction by removal ----------------------------------------------------------------------------------------
@dataclass
class Correction:
    """Answers regenerated with the k lowest-ranked regions removed (k = ks[i]), and what corrected the answer."""

    ks: list[int]
    removed_area: list[float]
    answers: list[str]
    corrected_k: int | None  # the first k whose answer is correct; None when none is
    amcr: float  # removed area at the first correction; 1.0 when never corrected
    correcting_region: int | None  # the region removed last at the first correction (order[-corrected_k]); None
    # when never corrected or corrected with nothing removed (k = 0, reference steps)
    removed_regions: list[int] = field(default_factory=list)  # the regions removed at the first correction

    @property
    def corrected(self) -> bool:
        return self.corrected_k is not None

    def to_dict(self) -> dict:
        return asdict(self)


#: the numbers of lowest-ranked regions removed, in the order tried, for n regions: ``ours`` k = 1..n (the last
#: step removes everything: a black image); ``reference`` k = 0..n-1 (the reference regenerates from the top-j
#: regions kept, j = 1..n, and scans from j = n: the intact image first, never the black one)
REMOVAL_STEPS: dict[str, Callable[[int], range]] = {"ours": lambda n: range(1, n + 1),
                                                    "reference": lambda n: range(0, n)}


def removal_keep(order: np.ndarray, k: int) -> np.ndarray:
    """(n,) region keep-indicators with the k lowest-ranked regions of `order` removed."""
    order = np.asarray(order)
    keep = np.ones(len(order), dtype=bool)
    if k > 0:
        keep[order[-k:]] = False
    return keep


def correct_by_removal(answer: Callable[[np.ndarray], Sequence[str]], order: np.ndarray, areas: np.ndarray,
                       label: str, batch_size: int = 16, stop_at_first: bool = True, reading: str = "ours",
                       steps: str = "ours") -> Correction:
    """Regenerates the answer with the k lowest-ranked regions of `order` removed, for the k of `steps`
    (``REMOVAL_STEPS``: 1..n, or the reference's 0..n-1), until it reads (`reading`) as `label`.

    Args:
        answer: region keep-indicators (B, n) bool -> B generated answer texts.
        order: (n,) region ids, most important for the counter token first.
        areas: (n,) area fraction of each region id.
        label: the correct answer, 'yes' or 'no'.
        stop_at_first: stop after the batch holding the first correction (the answers for larger k are not
            needed for AMCR, CSR or the cause hit); False regenerates every step.
        reading: how an answer is read (``READINGS``: ``ours`` or ``reference``).
        steps: which k are tried (``REMOVAL_STEPS``: ``ours`` or ``reference``).
    """
    order = np.asarray(order)
    areas = np.asarray(areas, dtype=float)
    n = len(order)
    if areas.shape != (n,):
        raise ValueError(f"areas has shape {areas.shape}, expected ({n},) for {n} regions")
    if label not in YES_NO:
        raise ValueError(f"label must be 'yes' or 'no', got {label!r}")
    if steps not in REMOVAL_STEPS:
        raise ValueError(f"unknown removal steps {steps!r}; choose one of {sorted(REMOVAL_STEPS)}")
    read_answer("", reading)  # an unknown reading fails here, before any generation
    # removed_area[k]: the area of the k lowest-ranked regions (0 for k = 0, 1 for k = n)
    removed_area = np.concatenate([[0.0], np.cumsum(areas[order[::-1]])])
    removed_area[-1] = 1.0
    todo = list(REMOVAL_STEPS[steps](n))
    ks, texts, first = [], [], None
    for lo in range(0, len(todo), batch_size):
        batch = todo[lo:lo + batch_size]
        outs = list(answer(np.stack([removal_keep(order, k) for k in batch])))
        if len(outs) != len(batch):
            raise ValueError(f"answer returned {len(outs)} texts for {len(batch)} images")
        ks += batch
        texts += [str(t) for t in outs]
        if first is None:
            hits = [k for k, t in zip(batch, outs) if read_answer(str(t), reading) == label]
            first = hits[0] if hits else None
        if first is not None and stop_at_first:
            break
    removed = [int(r) for r in order[n - first:]] if first else []
    return Correction(
        ks=ks, removed_area=[float(removed_area[k]) for k in ks], answers=texts, corrected_k=first,
        amcr=float(removed_area[first]) if first is not None else 1.0,
        correcting_region=int(order[-first]) if first else None, removed_regions=removed,
    )


# --- the pixel protocol -------------------------------------------------------------------------------------------
def pixel_bands(saliency: np.ndarray, steps: int = 64) -> np.ndarray:
    """The reference's pixel protocol as a label map: pixels ranked by saliency (highest first, ties in raster
    order), band j holding ranks [int(N·j/steps), int(N·(j+1)/steps)) of the N pixels. Keeping bands 0..i-1 is
    the reference's "keep the top int(N·i/steps) pixels" (``perturbed(..., rate=i/steps, mode="insertion")``),
    so removing the k lowest-ranked bands of ``arange(steps)`` removes all but the top (steps - k)/steps."""
    if steps < 1:
        raise ValueError(f"pixel steps must be positive, got {steps}")
    flat = np.asarray(saliency, dtype=np.float64).ravel()
    rank = np.empty(flat.size, dtype=np.int64)
    rank[np.argsort(-flat, kind="stable")] = np.arange(flat.size)
    cuts = np.array([int(flat.size * (i / steps)) for i in range(1, steps)], dtype=np.int64)
    return np.searchsorted(cuts, rank, side="right").reshape(np.shape(saliency)).astype(np.int32)


def inverted(saliency: np.ndarray) -> np.ndarray:
    """The map upside down (its maximum minus it): the reference's ``1.0 - saliency_map`` on a map in [0, 1], the
    same pixel ranking reversed for any map."""
    saliency = np.asarray(saliency, dtype=np.float64)
    return saliency.max() - saliency if saliency.size else saliency


def amcr_mean(amcrs: Sequence[float]) -> float:
    """Mean AMCR over wrong answers (each 1.0 when never corrected)."""
    if len(amcrs) == 0:
        return float("nan")
    return float(np.mean(amcrs))


def csr(amcrs: Sequence[float], corrected: Sequence[bool], threshold: float = 0.1) -> float:
    """Correction success rate: the fraction of ALL wrong answers corrected with at most `threshold` of the
    image removed (never-corrected samples count as failures)."""
    if len(amcrs) != len(corrected):
        raise ValueError(f"{len(amcrs)} AMCR values for {len(corrected)} corrected flags")
    if len(amcrs) == 0:
        return float("nan")
    return float(np.mean([c and a <= threshold for a, c in zip(amcrs, corrected)]))


def region_overlap(labels: np.ndarray, region: int, mask: np.ndarray) -> float:
    """Fraction of `region`'s pixels inside `mask`."""
    if labels.shape != mask.shape:
        raise ValueError(f"label map {labels.shape} and mask {mask.shape} differ in shape")
    inside = labels == region
    total = int(inside.sum())
    return float((inside & mask.astype(bool)).sum() / total) if total else 0.0


def cause_hit(labels: np.ndarray, correction: Correction, cause_mask: np.ndarray | None,
              min_overlap: float = 0.0) -> bool | None:
    """Whether the region whose removal corrected the answer overlaps the true cause: more than `min_overlap` of
    its pixels lie in `cause_mask`. False when never corrected; None when the cause is unknown."""
    if cause_mask is None:
        return None
    if correction.correcting_region is None:
        return False
    return region_overlap(labels, correction.correcting_region, cause_mask) > min_overlap


def removed_cause_fraction(labels: np.ndarray, correction: Correction, cause_mask: np.ndarray | None) -> float | None:
    """Fraction of the cause object's pixels removed at the first correction (0 when never corrected)."""
    if cause_mask is None:
        return None
    mask = cause_mask.astype(bool)
    if not mask.any():
        return None
    removed = np.isin(labels, correction.removed_regions)
    return float((removed & mask).sum() / mask.sum())


# --- answers, units and tables of the hallucination experiment (eagle_repope) ---------------------------------
def answer_summary(answers: list[dict]) -> dict:
    """Counts: questions, accuracy, wrong answers, and per kind (biased / absent / present / repope)."""
    n = len(answers)
    out = {"questions": n, "accuracy": float(np.mean([a["correct"] for a in answers])) if n else float("nan"),
           "wrong": sum(is_wrong(a) for a in answers),
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


def is_wrong(answer: dict) -> bool:
    """Whether an answer is explained (its ``wrong`` mark; answers recorded before the mark: not correct)."""
    return bool(answer.get("wrong", not answer["correct"]))


def wrong_answers(answers: dict) -> list[dict]:
    """The answers of an answers record (``{"answers": [...]}``) that are explained: the wrong ones."""
    return [a for a in answers["answers"] if is_wrong(a)]


def pixel_units(saliency: np.ndarray, steps: int) -> tuple[RegionMap, np.ndarray]:
    """The pixel protocol as removable units: the map's saliency bands (``hallucination.pixel_bands``) and their
    order (band 0, the most salient, first), so that removing the k lowest-ranked bands keeps the top
    (steps - k)/steps of the pixels."""
    return RegionMap(pixel_bands(saliency, steps), {"method": "pixel_bands", "steps": steps}), np.arange(steps)


def region_ranking(saliency: np.ndarray, regions: RegionMap) -> np.ndarray:
    """Regions by mean saliency, highest first (ties to the lower region id)."""
    labels = regions.labels.ravel()
    total = np.bincount(labels, weights=saliency.ravel(), minlength=regions.n_regions)
    mean = total / np.maximum(np.bincount(labels, minlength=regions.n_regions), 1)
    return np.argsort(-mean, kind="stable")


def metric_rows(records: list[dict], summary: dict, methods: list[str], threshold: float) -> list[dict]:
    """One row per method: hallucination counts, the counter token's insertion AUC and AHC, AMCR, CSR@threshold
    over all wrong answers (never corrected = failure) and the cause-hit rate over those with a known cause."""
    rows = []
    for method in methods:
        per = [r["methods"][method] for r in records if method in r["methods"]]
        with_cause = [p for p in per if p["cause_hit"] is not None]
        amcrs = [p["amcr"] for p in per]
        rows.append({
            "method": method, "n_questions": summary["questions"], "n_wrong": summary["wrong"],
            "n_biased": summary["biased"], "hallucinations_biased": summary["biased_yes"],
            "hallucination_rate_biased": summary["hallucination_rate_biased"], "n_explained": len(per),
            "insertion_auc": float(np.mean([p["insertion_auc"] for p in per])) if per else None,
            "ahc": float(np.mean([p["highest_confidence"] for p in per])) if per else None,
            "amcr": amcr_mean(amcrs) if per else None,
            "csr": csr(amcrs, [p["corrected"] for p in per], threshold) if per else None,
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
