"""The reporting stage of eagle_repope: what the tables cover (items not made, with reasons), the figures (the
paper's corrections figure, the AMCR curve) and the published report (tables, figures, the self-contained HTML page
and run.json, published together)."""

from __future__ import annotations

import base64

import pandas as pd

from eagle_pipelines.core.evaluate import object_at
from eagle_pipelines.core.geometry import photo_grid, working_image
from eagle_pipelines.core.joint import image_view
from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.io.items import Manifest, compose_of
from eagle_pipelines.io.report_dataset import figure_png
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.parameters import EagleRepopeParams
from eagle_pipelines.pipelines.eagle_repope.nodes import question_records
from eagle_pipelines.reporting import figures
from eagle_pipelines.reporting import html_page as pages


# --- nodes ----------------------------------------------------------------------------------------------------------
def coverage(answers: dict, superpixels: Manifest, attributions: Manifest, corrections: Manifest) -> dict:
    """What the tables cover and what they do not: the answers' summary, every item skipped or failed at any stage
    with its reason, the model, and the parameters of each stage (from the manifests)."""
    not_made = [{"stage": "answers", "item": str(e["question_id"]), "reason": e["error"]}
                for e in answers.get("errors", [])]
    for stage, manifest in (("superpixels", superpixels), ("EAGLE", attributions), ("corrections", corrections)):
        not_made += [{"stage": stage, "item": k, "reason": r} for k, r in sorted(manifest.not_made().items())]
    return {"summary": answers["summary"], "model": answers["model"],
            "model_fingerprint": answers.get("model_fingerprint", ""),
            "n_explained": len(attributions), "n_records": len(corrections), "not_made": not_made,
            "params": {"answers": answers.get("settings", {}), **superpixels.params, **attributions.params,
                       **corrections.params}}


def build_figures(vlm, question_split: CocoSplit, attributions: Manifest, corrections: Manifest,
                  eagle_repope: EagleRepopeParams) -> dict:
    """The corrections figure (paper style; biased questions first, as their cause is known), the AMCR curve and
    ``explorer`` (the page's explorer of the same wrong answers: a dict, saved as JSON beside the PNGs)."""
    from eagle_pipelines.reporting.explorers.repope import repope_explorer

    records = question_records(corrections)
    chosen = sorted(records, key=lambda r: (r["kind"] != "biased", str(r["question_id"])))
    samples = []
    for r in chosen[: eagle_repope.figure_samples]:
        qid = str(r["question_id"])
        if qid not in attributions or "eagle" not in r["methods"]:
            continue
        info = attributions.info(qid)
        compose = compose_of(attributions)
        try:
            image = working_image(vlm, question_split.image(int(info["image_id"])).pixels, compose)
        except CocoFormatError:
            continue
        cause_mask = None
        if info["cause_annotation_id"] is not None:
            obj = next(o for o in question_split.index.objects(int(info["image_id"]))
                       if o.annotation_id == int(info["cause_annotation_id"]))
            cause_mask, _ = object_at(photo_grid(vlm, obj.mask.shape, compose), obj.mask, obj.bbox)
        samples.append({"image": image, "attribution": image_view(attributions.load(qid)),
                        "correction": r["methods"]["eagle"],
                        "question_id": info["question_id"], "text": info["question"], "label": info["label"],
                        "answer": info["answer"], "cause_mask": cause_mask})
    return {"corrections": figures.hallucination_figure(samples),
            "amcr": figures.amcr_curves(records, list(eagle_repope.methods), eagle_repope.csr_threshold),
            "explorer": repope_explorer(samples)}


def publish_report(metrics: pd.DataFrame, metrics_per_sample: pd.DataFrame, coverage: dict, figures_png: dict,
                   eagle_repope: EagleRepopeParams) -> dict:
    """Everything one run publishes, as one bundle (the report dataset writes it whole or not at all): the
    tables, the figures, the self-contained HTML page and ``run.json`` (the run's facts, parameters, and the
    items not made with their reasons)."""
    explorer = figures_png.get("explorer") if isinstance(figures_png.get("explorer"), dict) else None
    pngs = {name: png if isinstance(png, bytes) else figure_png(png) for name, png in figures_png.items()
            if not isinstance(png, dict)}
    params = {"eagle_repope": eagle_repope.model_dump(mode="json"), **coverage["params"]}
    summary = coverage["summary"]
    run = {"generated": pages.now(), "git commit": pages.git_commit(), "model": coverage["model"],
           "model fingerprint": coverage["model_fingerprint"], "questions": summary["questions"],
           "wrong answers": summary["wrong"], "explained": coverage["n_explained"],
           "items not made": len(coverage["not_made"])}
    page = html_page(metrics, summary, {n: base64.b64encode(p).decode("ascii") for n, p in pngs.items()}, run,
                     params, coverage["not_made"], explorer)
    bundle = {"metrics.csv": metrics, "metrics_per_sample.csv": metrics_per_sample, "report.html": page,
              "run.json": {**run, "params": params, "coverage": coverage}}
    bundle.update({f"figures/{name}.png": png for name, png in pngs.items()})
    if explorer is not None:
        bundle["figures/explorer.json"] = explorer
    return bundle


HEADLINE = ["method", "n_explained", "insertion_auc", "ahc", "amcr", "csr", "corrected_rate", "cause_hit_rate",
            "n_with_cause", "seconds_per_sample"]


def _count_or_rate(value) -> str:
    """Counts (ints) as they are, rates (floats) with three decimals: the summary mixes both."""
    return f"{value:.3f}" if isinstance(value, float) else str(value)


#: under the table when EAGLE ranked the question's words too (prompt_units: words; docs/joint.md)
JOINT_NOTE = ("<p><b>Joint attribution</b> (prompt_units: words): EAGLE ordered the image's regions and the "
              "question's words together. Every metric above is image-only: the removal takes regions alone, in "
              "their joint order, and EAGLE's insertion AUC and AHC are those of that region order with the whole "
              "question kept, as for the other methods. The explorer shows the question's words by their joint "
              "rank and the prompt's share of the gain.</p>")


def html_page(metrics: pd.DataFrame, summary: dict, figures: dict[str, str], run: dict, params: dict,
              not_made: list[dict] | None = None, explorer: dict | None = None) -> str:
    """The report: run facts, the model's answers, the metrics table, the items not made (with the reason), the
    explorer of the wrong answers (``reporting/explorers/repope.py``), the figures (base64 PNG), parameters."""
    from eagle_pipelines.reporting.explorers.repope import repope_html

    empty = [kind for kind in ("biased", "absent", "present", "repope") if summary.get(kind) == 0]
    answers = pd.DataFrame([{"": k.replace("_", " "), "value": _count_or_rate(v)} for k, v in summary.items()
                            if v is not None and k.split("_")[0] not in empty])
    captions = {
        "corrections": "Wrong answers: the question and answer; EAGLE's saliency of the counter token (earlier-"
                       "ranked regions brighter); the image with the lowest-ranked regions removed up to the first "
                       "correction, the triggering region in red and the true cause in green.",
        "amcr": "Share of wrong answers corrected once a given area fraction (the method's lowest-ranked regions) "
                "is removed; the dashed line is the CSR threshold.",
    }
    body = f"""<h2>Answers</h2>
<p>Yes/no questions in the RePOPE style. On the embedded data, <em>biased</em> questions ask about the training
companion Y on images that show the anchor X without Y (label no, true cause X); <em>absent</em> and
<em>present</em> are unbiased controls.</p>
{pages.table(answers)}
<h2>Metrics</h2>
<p>Over the wrong answers. Insertion AUC and AHC of the counter token (the correct answer, teacher-forced) under
each method's region order: higher is better. AMCR: the removed area fraction at the first correction (1 when
never), lower is better. CSR: the share of ALL wrong answers corrected within the threshold (never corrected
counts as a failure). Cause hit: the region whose removal corrected the answer overlaps the true cause object.</p>
{pages.table(metrics[[c for c in HEADLINE if c in metrics.columns]])}
<details><summary>All columns</summary>{pages.table(metrics)}</details>
{JOINT_NOTE if params.get("eagle_repope", {}).get("prompt_units", "none") != "none" else ""}
{_not_made_block(not_made or [])}
{repope_html(explorer)}
<h2>Figures</h2>
{pages.figures(figures, captions)}"""
    return pages.document("EAGLE report: eagle_repope (hallucination diagnosis)", run, body, params)


def _not_made_block(not_made: list[dict]) -> str:
    if not not_made:
        return "<h2>Not in the tables</h2><p>Every item was made.</p>"
    frame = pd.DataFrame(not_made, columns=["stage", "item", "reason"])
    return (f"<h2>Not in the tables</h2><p>{len(frame)} items were not made (each with its reason); they are "
            f"retried when their input changes.</p>{pages.table(frame)}")
