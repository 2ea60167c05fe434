"""Nodes of the reporting pipeline."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path

import pandas as pd

from eagle_pipelines.core.baselines.common import normalise
from eagle_pipelines.data.coco import CocoFormatError, CocoIndex
from eagle_pipelines.parameters import parse
from eagle_pipelines.pipelines.baselines.nodes import current_baseline_folders
from eagle_pipelines.pipelines.evaluation.nodes import current_folders, current_prefixes, current_rows, folder_items
from eagle_pipelines.pipelines.reporting import figures, html_page


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _samples(attributions: list, index: CocoIndex, images: dict, vlm, limit: int):
    """(model-resolution image, attribution) of the first `limit` attributions whose image can be read."""
    out = []
    for a in attributions:
        try:
            image = vlm.model_image(index.load_image(int(a.meta["image_id"]), images))
        except CocoFormatError:
            continue
        out.append((image, a))
        if len(out) >= limit:
            break
    return out


def _baseline_maps(samples: list, level: str, store: dict, folders: dict) -> list[dict]:
    """Per sample, ``{method: map normalised to [0, 1]}`` of the baselines that have the sample's item."""
    out = []
    for _image, a in samples:
        target = a.meta.get("annotation_id", a.meta.get("word"))
        item = f"{a.meta['image_id']}" + (f"_{target}" if target is not None else "")
        maps = {}
        for (method, lvl), folder in folders.items():
            key = f"{folder}/{item}"
            if lvl == level and key in store:
                maps[method] = normalise(store[key]()[0]).astype("float32")
        out.append(maps)
    return out


def build_report(vlm, eagle_coco_eval_list: pd.DataFrame, eval_images: dict, eval_instances: dict,
                 eagle_coco_sentence_attributions: dict, eagle_coco_word_attributions: dict,
                 eagle_coco_evaluation: dict, eagle_coco_metrics: pd.DataFrame, eagle_coco: dict,
                 superpixels: dict, attribution: dict, evaluation: dict, reporting: dict,
                 eagle_coco_baselines: dict | None = None, baselines: dict | None = None):
    """The figures (overlays of EAGLE beside the random floor and the baselines, curves, influence, table) and
    one self-contained HTML page with all of them, the table, the parameters and the run it came from. The page
    is returned twice: latest copy and history."""
    params = parse("reporting", reporting)
    folders = current_folders(vlm, eagle_coco_eval_list, superpixels, attribution)
    index = CocoIndex(eval_instances, source="eval instances")
    evaluation_params = parse("evaluation", evaluation)
    baseline_folders = ({} if baselines is None else
                        current_baseline_folders(vlm, eagle_coco_eval_list, superpixels, attribution, baselines))
    store = eagle_coco_baselines or {}
    figs = {}
    if "sentence" in folders:
        sentences = [load() for _, load in folder_items(eagle_coco_sentence_attributions, folders["sentence"])]
        samples = _samples(sentences, index, eval_images, vlm, params.figure_samples)
        figs["sentence_overlays"] = figures.sentence_overlays(
            samples, evaluation_params.random_seed, _baseline_maps(samples, "sentence", store, baseline_folders))
        figs["influence"] = figures.influence_bars(sentences)
    if "word" in folders:
        words = (load() for _, load in folder_items(eagle_coco_word_attributions, folders["word"]))
        samples = _samples(words, index, eval_images, vlm, 2 * params.figure_samples)
        figs["word_overlays"] = figures.word_overlays(samples,
                                                      _baseline_maps(samples, "word", store, baseline_folders))
    rows = current_rows(eagle_coco_evaluation, current_prefixes(vlm, eagle_coco_eval_list, superpixels,
                                                                attribution, evaluation, baselines))
    figs["curves"] = figures.mean_curves(rows, "sentence" if "sentence" in folders else "word")
    figs["table"] = figures.table_figure(eagle_coco_metrics)
    page = _html(eagle_coco_metrics, figs, folders, {
        "eagle_coco": eagle_coco, "superpixels": superpixels, "attribution": attribution,
        "evaluation": evaluation, "baselines": baselines, "reporting": reporting}, vlm)
    order = ["sentence_overlays", "word_overlays", "curves", "influence", "table"]
    return (*[figs.get(name) or figures.placeholder(f"no {name.replace('_', ' ')} in this run") for name in order],
            page, page)


HEADLINE = ["level", "method", "n_samples", "insertion_auc", "deletion_auc", "point_game_box", "point_game_mask",
            "seconds_per_sample", "peak_memory_mb"]


def headline(metrics: pd.DataFrame) -> pd.DataFrame:
    """The table a reader compares methods by: the pixel protocol (the one every method is scored under), the
    main columns, sentence level first, methods by insertion AUC (best first) within each level."""
    rows = metrics[metrics["protocol"] == "pixels"] if "protocol" in metrics else metrics
    rows = rows.assign(_level=rows["level"].map({"sentence": 0, "word": 1}).fillna(2))
    rows = rows.sort_values(["_level", "insertion_auc"], ascending=[True, False], kind="stable")
    return rows[[c for c in HEADLINE if c in rows.columns]].reset_index(drop=True)


def _html(metrics: pd.DataFrame, figs: dict, folders: dict, params: dict, vlm) -> str:
    captions = {
        "sentence_overlays": "Sentence level: EAGLE's saliency (earlier-ranked regions brighter) beside the random "
                             "floor and the baselines (each map min-max normalised).",
        "word_overlays": "Word level: one attribution per object the answer mentions, EAGLE beside the baselines; "
                         "the white box is the object.",
        "curves": "Mean insertion (higher is better) and deletion (lower is better) curves.",
        "influence": "Per-token influence: how much each word relies on the image rather than language priors.",
        "table": "The metrics table as a figure.",
    }
    pngs = {name: _png(fig) for name, fig in figs.items() if name != "table"}
    run = {"generated": html_page.now(), "git commit": _git_commit(), "model": vlm.name,
           "model fingerprint": vlm.fingerprint, **{f"attribution folder ({k})": v for k, v in folders.items()}}
    body = f"""<h2>Metrics</h2>
<p>One protocol for every method. <em>regions</em>: curves of the method's own region order; <em>pixels</em>: the
method's map ranked into equal pixel fractions. Insertion AUC and AHC: higher is better; deletion AUC: lower is
better; Point Game (word level): fraction of objects where the map's maximum falls in the box / mask. The
baselines (LLaVA-CAM, IGOS++, TAM, Captum FeatureAblation; docs/baselines.md) are scored under the pixel protocol;
seconds and peak memory are per explained sample. The table below ranks the methods by insertion AUC under the
pixel protocol; the full table (region protocol, AHC, the image-sensitive-token columns) is folded under it and
in metrics.csv.</p>
{html_page.table(headline(metrics))}
<details><summary>All columns, both protocols</summary>{html_page.table(metrics)}</details>
<h2>Figures</h2>
{html_page.figures(pngs, captions)}"""
    return html_page.document("EAGLE report: eagle_coco", run, body, params)
