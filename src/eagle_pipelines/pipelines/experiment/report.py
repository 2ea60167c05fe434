"""Nodes of the experiment template's reporting stage: the coverage of the tables, the figures and the published
report (tables, figures, HTML page and run facts, published together)."""

from __future__ import annotations

import base64

import pandas as pd

from eagle_pipelines.core.baselines.common import normalise
from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.io.items import Manifest
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.parameters import ReportingParams
from eagle_pipelines.pipelines.experiment.nodes import common_targets, working_image
from eagle_pipelines.reporting import figures, html_page


def coverage(targets: dict, attributions: Manifest, baselines: Manifest, evaluation: Manifest) -> dict:
    """What the tables cover and what they do not: targets per level, every item skipped or failed at any
    stage with its reason, the targets left out because a method lacks them, and the parameters of each
    stage (for the report)."""
    common, left_out = common_targets(evaluation)
    not_made = [{"stage": "answers", "item": e["item"], "reason": e["error"]} for e in targets["answer_errors"]]
    not_made += [{"stage": "targets", "item": s["key"], "reason": s["reason"]} for s in targets["skipped"]]
    for stage, manifest in (("EAGLE", attributions), ("baselines", baselines), ("evaluation", evaluation)):
        not_made += [{"stage": stage, "item": k, "reason": r} for k, r in sorted(manifest.not_made().items())]
    empty = [level for level in targets.get("levels", []) if not common.get(level)]
    return {"n_targets": {level: len(keys) for level, keys in sorted(common.items())}, "empty_levels": empty,
            "left_out": left_out, "not_made": not_made,
            "params": {**attributions.params, **baselines.params, **evaluation.params}}


def _samples(vlm, eval_split: CocoSplit, attributions: Manifest, level: str, limit: int) -> list:
    """(working image, attribution) of the first `limit` attributions of `level` whose image reads: the image the
    attribution's regions are on (the model's resolution, or the photo with ``compose: processor``)."""
    out = []
    for key, info in attributions.items.items():
        if info["level"] != level:
            continue
        try:
            image = working_image(vlm, eval_split.image(int(info["image_id"])).pixels,
                                  info.get("compose", "pixel_values"))
        except CocoFormatError:
            continue
        out.append((key, image, attributions.load(key)))
        if len(out) >= limit:
            break
    return out


def _baseline_maps(samples: list, baselines: Manifest) -> list[dict]:
    out = []
    for key, _image, _a in samples:
        maps = {}
        for bkey, info in baselines.items.items():
            if bkey.split("/", 1)[1] == key:
                maps[info["method"]] = normalise(baselines.load(bkey)[0]).astype("float32")
        out.append(maps)
    return out


def build_figures(vlm, eval_split: CocoSplit, attributions: Manifest, baselines: Manifest, evaluation: Manifest,
                  reporting: ReportingParams) -> dict:
    """Overlays of EAGLE beside the random floor and the baselines (sentence and word level), the mean curves
    and the per-token influence."""
    figs = {}
    levels = {info["level"] for info in attributions.items.values()}
    seed = evaluation.params.get("evaluation", {}).get("random_seed", 0)
    if "sentence" in levels:
        samples = _samples(vlm, eval_split, attributions, "sentence", reporting.figure_samples)
        figs["sentence_overlays"] = figures.sentence_overlays([(i, a) for _, i, a in samples], seed,
                                                              _baseline_maps(samples, baselines))
        figs["influence"] = figures.influence_bars(
            [attributions.load(k) for k, v in attributions.items.items() if v["level"] == "sentence"])
    if "word" in levels:
        samples = _samples(vlm, eval_split, attributions, "word", 2 * reporting.figure_samples)
        figs["word_overlays"] = figures.word_overlays([(i, a) for _, i, a in samples],
                                                      _baseline_maps(samples, baselines))
    common, _ = common_targets(evaluation)
    rows = [r for key, info in evaluation.items.items() if info["target"] in common.get(info["level"], ())
            for r in evaluation.load(key)["rows"]]
    figs["curves"] = figures.mean_curves(rows, "sentence" if "sentence" in levels else "word")
    return figs


HEADLINE = ["level", "method", "n_samples", "insertion_auc", "deletion_auc", "point_game_box", "point_game_mask",
            "seconds_per_sample", "peak_memory_mb"]
CAPTIONS = {
    "sentence_overlays": "Sentence level: EAGLE's saliency (earlier-ranked regions brighter) beside the random "
                         "floor and the baselines (each map min-max normalised).",
    "word_overlays": "Word level: one attribution per object the answer mentions, EAGLE beside the baselines; the "
                     "white box is the object.",
    "curves": "Mean insertion (higher is better) and deletion (lower is better) curves.",
    "influence": "Per-token influence: how much each word relies on the image rather than language priors.",
    "table": "The metrics table as a figure.",
}


HEADLINE_NOTE = {
    "pixels": "The table ranks the methods by insertion AUC under the pixel protocol.",
    "regions": "The table ranks the methods by insertion AUC, EAGLE (and the random floor) under the region "
               "protocol, as the reference scores EAGLE (its evals/eval_AUC_faithfulness.py), the baselines under "
               "the pixel protocol (the protocol column says which).",
}


def headline(metrics: pd.DataFrame, protocol: str = "pixels") -> pd.DataFrame:
    """The table a reader compares methods by: the main columns, sentence level first, methods by insertion AUC
    (best first) within each level. `protocol` ``pixels``: every method under the pixel protocol; ``regions``: the
    methods that order regions (EAGLE, random) under their own region curves, as the reference scores EAGLE, and
    the baselines (which have no regions) under the pixel protocol; a ``protocol`` column says which."""
    if "protocol" not in metrics:
        rows = metrics
    elif protocol == "regions":
        has_regions = set(metrics.loc[metrics["protocol"] == "regions", "method"])
        rows = metrics[(metrics["protocol"] == "regions") | ~metrics["method"].isin(has_regions)]
    else:
        rows = metrics[metrics["protocol"] == "pixels"]
    rows = rows.assign(_level=rows["level"].map({"sentence": 0, "word": 1}).fillna(2))
    rows = rows.sort_values(["_level", "insertion_auc"], ascending=[True, False], kind="stable")
    columns = HEADLINE if protocol == "pixels" else HEADLINE[:2] + ["protocol"] + HEADLINE[2:]
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)


def publish_report(metrics: pd.DataFrame, metrics_per_sample: pd.DataFrame, coverage: dict, figures_png: dict,
                   experiment, reporting: ReportingParams | None = None) -> dict:
    """Everything one run publishes, as one bundle (the report dataset writes it whole or not at all): the
    tables, what was not made and why (``skipped.csv``), the figures, the self-contained HTML page and
    ``run.json`` (the run's facts and parameters)."""
    from eagle_pipelines.io.report_dataset import figure_png

    experiment = experiment.model_dump(mode="json") if hasattr(experiment, "model_dump") else dict(experiment)
    pngs = dict(figures_png)
    pngs["table"] = figure_png(figures.table_figure(metrics))
    params = coverage["params"]
    run = {"generated": html_page.now(), "git commit": html_page.git_commit(),
           "model": params.get("model", ""), "model fingerprint": params.get("model_fingerprint", ""),
           **{f"targets ({level})": n for level, n in coverage["n_targets"].items()},
           "items not made": len(coverage["not_made"])}
    protocol = reporting.headline_protocol if reporting is not None else "pixels"
    page = _html(metrics, pngs, coverage, run, {"experiment": experiment, **params}, protocol)
    skipped = pd.DataFrame(coverage["not_made"], columns=["stage", "item", "reason"])
    bundle = {"metrics.csv": metrics, "metrics_per_sample.csv": metrics_per_sample, "skipped.csv": skipped,
              "report.html": page,
              "run.json": {**run, "params": {"experiment": experiment, **params}, "coverage": coverage}}
    bundle.update({f"figures/{name}.png": png for name, png in pngs.items()})
    return bundle


def _html(metrics: pd.DataFrame, pngs: dict[str, bytes], coverage: dict, run: dict, params: dict,
          protocol: str = "pixels") -> str:
    encoded = {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items() if name != "table"}
    not_made = pd.DataFrame(coverage["not_made"], columns=["stage", "item", "reason"])
    left_out = [f"{level}: {method} has {len(keys)} targets the others lack ({', '.join(keys[:5])})"
                for level, methods in coverage["left_out"].items() for method, keys in methods.items()]
    skipped_block = (f"<h2>Not in the tables</h2><p>{len(not_made)} items were not made (each with its reason); "
                     f"they are retried when their input changes.</p>{html_page.table(not_made)}"
                     if len(not_made) else "<h2>Not in the tables</h2><p>Every item was made.</p>")
    for level in coverage.get("empty_levels", []):
        skipped_block += (f"<p>The {level} level has no target in this run (e.g. word level on a split without "
                          f"object annotations, or answers that name no annotated object).</p>")
    if left_out:
        skipped_block += "<p>Left out so that every row covers the same targets:</p><ul>" + "".join(
            f"<li>{line}</li>" for line in left_out) + "</ul>"
    body = f"""<h2>Metrics</h2>
<p>One protocol for every method, every row of a level over the same targets (n_samples). <em>regions</em>:
curves of the method's own region order; <em>pixels</em>: the method's map ranked into equal pixel fractions.
Insertion AUC and AHC: higher is better; deletion AUC: lower is better; Point Game (word level): fraction of objects
where the map's maximum falls in the box / mask. The baselines (docs/baselines.md) are scored under the pixel
protocol; seconds and peak memory are per explained sample. {HEADLINE_NOTE[protocol]} The full table is folded
under it and in metrics.csv.</p>
{html_page.table(headline(metrics, protocol))}
<details><summary>All columns, both protocols</summary>{html_page.table(metrics)}</details>
{skipped_block}
<h2>Figures</h2>
{html_page.figures(encoded, CAPTIONS)}"""
    return html_page.document("EAGLE report", run, body, params)
