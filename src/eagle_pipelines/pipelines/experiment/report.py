"""Nodes of the experiment template's reporting stage: the coverage of the tables, the figures and the published
report (tables, figures, HTML page and run facts, published together)."""

from __future__ import annotations

import html
import logging
from html import escape

import pandas as pd

from eagle_pipelines.core.baselines.common import normalise
from eagle_pipelines.core.evaluate import random_order
from eagle_pipelines.core.geometry import working_image
from eagle_pipelines.core.joint import image_view
from eagle_pipelines.data.coco import CocoFormatError
from eagle_pipelines.io.items import Manifest
from eagle_pipelines.io.report_dataset import figure_png
from eagle_pipelines.io.split_dataset import CocoSplit
from eagle_pipelines.parameters import PaperComparisonParams, ReportingParams
from eagle_pipelines.pipelines.experiment.nodes import common_targets
from eagle_pipelines.reporting import figures, html_page, paper
from eagle_pipelines.reporting.explorer import ExplorerImage, explorer_data, explorer_html

logger = logging.getLogger(__name__)


def coverage(targets: dict, attributions: Manifest, baselines: Manifest, evaluation: Manifest,
             experiment=None) -> dict:
    """What the tables cover and what they do not: targets per level, every item skipped or failed at any
    stage with its reason, the targets left out because a method lacks them, and the parameters of each
    stage and of the experiment (for the report)."""
    common, left_out = common_targets(evaluation)
    not_made = [{"stage": "answers", "item": e["item"], "reason": e["error"]} for e in targets["answer_errors"]]
    not_made += [{"stage": "targets", "item": s["key"], "reason": s["reason"]} for s in targets["skipped"]]
    for stage, manifest in (("EAGLE", attributions), ("baselines", baselines), ("evaluation", evaluation)):
        not_made += [{"stage": stage, "item": k, "reason": r} for k, r in sorted(manifest.not_made().items())]
    empty = [level for level in targets.get("levels", []) if not common.get(level)]
    out = {"n_targets": {level: len(keys) for level, keys in sorted(common.items())}, "empty_levels": empty,
           "left_out": left_out, "not_made": not_made,
           "params": {**attributions.params, **baselines.params, **evaluation.params}}
    if experiment is not None:
        out["params"]["experiment"] = (experiment.model_dump(mode="json") if hasattr(experiment, "model_dump")
                                       else dict(experiment))
    # a model behind an API (models/api_model.py: fingerprints "api-..."): what its top-k left out
    api = (api_coverage(attributions) if str(attributions.params.get("model_fingerprint", "")).startswith("api-")
           else None)
    if api:
        out["api"] = api
    return out


def api_coverage(attributions: Manifest) -> dict | None:
    """For a model behind an API (models/api_model.py): how many target probabilities the endpoint's top-k
    log-probabilities left out (counted as 0), over every attribution; None for local models."""
    facts = [attributions.load(k).meta.get("api") for k in attributions.items]
    facts = [f for f in facts if f]
    if not facts:
        return None
    scored, missing = sum(f["scored"] for f in facts), sum(f["missing"] for f in facts)
    return {"attributions": len(facts), "scoring": sorted({f["scoring"] for f in facts}),
            "scored": scored, "missing": missing, "coverage": 1.0 if scored == 0 else 1.0 - missing / scored,
            "min_coverage": min(f["coverage"] for f in facts),
            "incomplete": sum(f["coverage"] < 1.0 for f in facts),
            "requests": sum(f["requests"] for f in facts), "sent": sum(f["sent"] for f in facts)}


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
        out.append((key, image, image_view(attributions.load(key))))
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


def _curves_of(evaluation: Manifest, protocol: str) -> dict[str, dict[str, dict]]:
    """Per target key, each method's curve as the report compares them: under `protocol` (``regions``: EAGLE and
    the random floor under their own region curves, the baselines under pixels)."""
    out: dict[str, dict[str, dict]] = {}
    for key, info in evaluation.items.items():
        rows = evaluation.load(key)["rows"]
        with_regions = {r["method"] for r in rows if r["protocol"] == "regions"}
        for r in rows:
            wanted = "regions" if protocol == "regions" and r["method"] in with_regions else "pixels"
            if r["protocol"] == wanted:
                out.setdefault(info["target"], {})[r["method"]] = r["curve"]
    return out


def _explorer(vlm, eval_split: CocoSplit, attributions: Manifest, baselines: Manifest, evaluation: Manifest,
              reporting: ReportingParams, seed: int) -> dict:
    """The report explorer's data (reporting/explorer.py) for the first ``figure_samples`` images: each image's
    sentence- and word-level attributions, the baselines' maps and random floor of each, and their curves."""
    by_item: dict[str, dict] = {}  # one entry per question (an image may carry several: MMVP)
    for key, info in attributions.items.items():
        entry = by_item.setdefault(str(info.get("item", info["image_id"])), {
            "image_id": int(info["image_id"]), "prompt": info.get("prompt", ""),
            "compose": info.get("compose", "pixel_values"), "sentence": None, "words": []})
        if info["level"] == "sentence":
            entry["sentence"] = key
        else:
            entry["words"].append(key)
    curves = _curves_of(evaluation, reporting.headline_protocol)
    items = []
    for entry in by_item.values():
        image_id = entry["image_id"]
        if len(items) >= reporting.figure_samples:
            break
        try:
            image = working_image(vlm, eval_split.image(image_id).pixels, entry["compose"])
        except CocoFormatError:
            continue
        item = ExplorerImage(image_id, image, question=_question(entry["prompt"]),
                             label=image_label(eval_split, image_id))
        for key in [entry["sentence"], *entry["words"]] if entry["sentence"] else entry["words"]:
            a = image_view(attributions.load(key))  # a joint record: meta["joint"] has its prompt words
            if a.labels.shape != image.shape[:2]:
                continue
            if key == entry["sentence"]:
                item.sentence = (key, a)
            else:
                item.words.append((key, a))
            ann = int(attributions.info(key).get("meta", {}).get("annotation_id") or 0)
            item.random[key] = random_order(a.n_regions, seed, image_id, ann)
            item.maps[key] = _baseline_maps([(key, image, a)], baselines)[0]
            item.curves[key] = curves.get(key, {})
        if item.sentence or item.words:
            items.append(item)
    return explorer_data(items, reporting.headline_protocol)


def _row_title(eval_split: CocoSplit, info: dict) -> str:
    """A figure row's title: the image's label, and the question where each image has questions of its own (an
    image of a pair: MMVP)."""
    label = image_label(eval_split, int(info["image_id"]))
    question = _question(info.get("prompt", ""))
    try:
        paired = eval_split.index.image_info(int(info["image_id"])).get("pair") is not None
    except (KeyError, AttributeError):
        paired = False
    return f"{label}\n{question}" if question and paired else label


def _question(prompt: str) -> str:
    """The question of a prompt as a reader asks it (the first line: MMVP's options and instruction follow)."""
    return str(prompt).strip().split("\n")[0]


def image_label(eval_split: CocoSplit, image_id: int) -> str:
    """How the report names an image: for an image of a pair (MMVP: ``pair`` in its entry), the pair and what
    this image has that the other lacks (``objects``: "pair 2: green circle (not red circle)"; "pair 2, image a"
    when the entries do not list objects); otherwise its file name or id."""
    try:
        info = eval_split.index.image_info(image_id)
    except (KeyError, AttributeError):
        return f"image {image_id}"
    if info.get("pair") is None:
        return str(info.get("file_name") or f"image {image_id}")
    pair = int(info["pair"])
    others = [i for i in eval_split.index.image_ids() if i != image_id
              and eval_split.index.image_info(i).get("pair") == info["pair"]]
    mine = set(info.get("objects") or [])
    theirs = set(eval_split.index.image_info(others[0]).get("objects") or []) if others else set()
    if mine - theirs or theirs - mine:
        return (f"pair {pair + 1}: {', '.join(sorted(mine - theirs)) or 'without'} "
                f"(not {', '.join(sorted(theirs - mine)) or 'nothing'})")
    side = "ab"[sorted([image_id, *others]).index(image_id)] if len(others) == 1 else str(image_id)
    return f"pair {pair + 1}, image {side}"


def build_figures(vlm, eval_split: CocoSplit, attributions: Manifest, baselines: Manifest, evaluation: Manifest,
                  reporting: ReportingParams) -> dict:
    """The report's figures: the sentence-level figure (EAGLE beside the random floor and the baselines, the
    answer's tokens coloured by influence), the word-level figure (each object's box, EAGLE scaled by the word's
    sensitivity, the word highlighted in the answer), the curves of every method per level (``curves``: the first
    level, ``curves_word`` when both ran), the per-token influence, and ``explorer`` (the data of the page's
    interactive explorer: a dict, saved as JSON beside the PNGs)."""
    figs = {}
    levels = {info["level"] for info in attributions.items.values()}
    seed = evaluation.params.get("evaluation", {}).get("random_seed", 0)
    tokens: dict[int, list[str]] = {}
    if "sentence" in levels:
        samples = _samples(vlm, eval_split, attributions, "sentence", reporting.figure_samples)
        figs["sentence"] = figures.sentence_figure(
            [(i, a) for _, i, a in samples], seed, _baseline_maps(samples, baselines),
            titles=[_row_title(eval_split, attributions.info(k)) for k, _, _ in samples])
        sentence = [image_view(attributions.load(k)) for k, v in attributions.items.items()
                    if v["level"] == "sentence"]
        figs["influence"] = figures.influence_bars(sentence)
        tokens = {int(a.meta.get("image_id", -1)): list(a.target_words) for a in sentence}
    if "word" in levels:
        samples = _samples(vlm, eval_split, attributions, "word", 2 * reporting.figure_samples)
        figs["word"] = figures.word_figure([(i, a) for _, i, a in samples], _baseline_maps(samples, baselines),
                                           [tokens.get(int(a.meta.get("image_id", -1))) for _, _, a in samples])
    common, _ = common_targets(evaluation)
    rows = [r for key, info in evaluation.items.items() if info["target"] in common.get(info["level"], ())
            for r in evaluation.load(key)["rows"]]
    ran = [level for level in ("sentence", "word") if level in levels]
    for n, level in enumerate(ran):
        figs["curves" if n == 0 else f"curves_{level}"] = figures.method_curves(rows, level,
                                                                                reporting.headline_protocol)
    figs["explorer"] = _explorer(vlm, eval_split, attributions, baselines, evaluation, reporting, seed)
    return figs


def compare_with_paper(metrics: pd.DataFrame, vlm, paper_tables: pd.DataFrame, params: PaperComparisonParams,
                       experiment: str) -> pd.DataFrame:
    """The run's table beside the paper's cells for its model (reporting/paper.py: ``compare``), with the model's
    fingerprint and the device its seconds and memory were measured on. A comparison that cannot be made (a
    method the mapping lacks) is logged and published as one row with the reason, so the report still appears."""
    preset = params.preset
    fingerprint = getattr(vlm, "fingerprint", "")
    try:
        return paper.compare(metrics, paper_tables, experiment=experiment, preset=preset,
                             paper_model=params.paper_models[preset], fingerprint=fingerprint,
                             device=str(getattr(vlm, "device", "cpu")))
    except paper.PaperTableError as exc:
        logger.error("paper comparison not made: %s", exc)
        return paper.note_only(preset, fingerprint, f"not made: {exc}")


HEADLINE = ["level", "method", "n_samples", "insertion_auc", "deletion_auc", "point_game_box", "point_game_mask",
            "seconds_per_sample", "peak_memory_mb"]
CAPTIONS = {
    "sentence": "Sentence level: EAGLE beside the random floor and the baselines (each map min-max normalised, "
                "viridis on a greyscale copy, smoothed as the reference smooths its maps). Bright: the top quarter "
                "of the image by each method's ranking, the rest dimmed; numbers: the first three regions. Under "
                "each row, the answer's tokens coloured by their influence.",
    "word": "Word level: one attribution per object the answer mentions (white box: the object), EAGLE's map "
            "multiplied by min(1, 1.5 \u00d7 (max insertion \u2212 empty score)) as the reference draws it, so a "
            "word the image barely moves shows a dark map; the explained word highlighted in the answer.",
    "curves": "Mean insertion (higher is better) and deletion (lower is better) curves of every method, first "
              "level (AUCs in the legend).",
    "curves_word": "The same curves at the word level.",
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


def with_table_figure(figures_png: dict, metrics: pd.DataFrame) -> dict:
    """The report's figures: the built ones and the metrics table drawn as a figure (``table``)."""

    return {**figures_png, "table": figure_png(figures.table_figure(metrics))}


def publish_report(metrics: pd.DataFrame, metrics_per_sample: pd.DataFrame, coverage: dict, figures_png: dict,
                   reporting: ReportingParams | None = None,
                   paper_comparison: pd.DataFrame | None = None) -> dict:
    """Everything one run publishes, as one bundle (the report dataset writes it whole or not at all): the
    tables, what was not made and why (``skipped.csv``), the paper's cells beside the run's
    (``paper_comparison.csv``, when given), the figures (drawn before: ``figures_png``, the table's included),
    the self-contained HTML page and ``run.json`` (the run's facts and parameters; the experiment's come with
    `coverage`)."""
    pngs = {name: value for name, value in figures_png.items() if isinstance(value, bytes)}
    explorer_data = figures_png.get("explorer") if isinstance(figures_png.get("explorer"), dict) else None
    params = {k: v for k, v in coverage["params"].items() if k != "experiment"}
    experiment = coverage["params"].get("experiment", {})
    run = {"generated": html_page.now(), "git commit": html_page.git_commit(),
           "model": params.get("model", ""), "model fingerprint": params.get("model_fingerprint", ""),
           **{f"targets ({level})": n for level, n in coverage["n_targets"].items()},
           "items not made": len(coverage["not_made"])}
    cells = None if paper_comparison is None else paper_comparison[paper_comparison["metric"].notna()]
    if cells is not None and len(cells):
        run["paper cells covered"] = f"{int(cells['covered'].astype(bool).sum())} of {len(cells)}"
    protocol = reporting.headline_protocol if reporting is not None else "pixels"
    from eagle_pipelines.timings import node_timings

    timings = node_timings()  # every node before this one (NodeTimingHook adds this node's own to run.json)
    page = _html(metrics, pngs, coverage, run, {"experiment": experiment, **params}, protocol, explorer_data,
                 paper_comparison, timings)
    skipped = pd.DataFrame(coverage["not_made"], columns=["stage", "item", "reason"])
    bundle = {"metrics.csv": metrics, "metrics_per_sample.csv": metrics_per_sample, "skipped.csv": skipped,
              "report.html": page,
              "run.json": {**run, "timings": timings, "params": {"experiment": experiment, **params},
                           "coverage": coverage}}
    if paper_comparison is not None:
        bundle["paper_comparison.csv"] = paper_comparison
    bundle.update({f"figures/{name}.png": png for name, png in pngs.items()})
    if explorer_data is not None:
        bundle["figures/explorer.json"] = explorer_data
    return bundle


def joint_note(metrics: pd.DataFrame) -> str:
    """What the table means when EAGLE searched the prompt's words too (``prompt_units: words``, docs/joint.md):
    which rows are image-only and which are over the joint set (an empty string otherwise)."""
    if "protocol" not in metrics or not (metrics["protocol"] == "joint").any():
        return ""
    return ("<p><b>Joint attribution</b> (prompt_units: words): EAGLE ordered the image's regions and the words of "
            "each prompt together. The <em>regions</em> and <em>pixels</em> rows are image-only: EAGLE's regions in "
            "their joint order, scored with the whole prompt, as the random floor and the baselines are. The "
            "<em>joint</em> row is EAGLE's own insertion/deletion curves over the joint steps (a region or a word "
            "per step; a removed word's tokens become the pad token) and <code>prompt_share</code> the prompt "
            "words' share of the insertion gains; no other method has a joint row.</p>")


def timings_section(timings: dict | None) -> str:
    """The report's section on where the run's time went: each node's wall seconds and share (run.json
    ``timings``, which also has the report node's own)."""
    if not timings:
        return ""
    total = sum(timings.values())
    frame = pd.DataFrame({"node": list(timings), "seconds": list(timings.values()),
                          "share": [s / total if total else 0.0 for s in timings.values()]})
    return ("<h2>Where the time went</h2><p>Wall seconds of each node of this run, in the order they finished "
            f"(items already in the stores cost nothing); {total:.1f} s in all before the report itself.</p>"
            f"{html_page.table(frame)}")


def paper_section(comparison: pd.DataFrame | None) -> str:
    """The report's section on the paper's tables: each cell's paper value, this run's, the difference and n, and
    how seconds and memory were measured."""
    if comparison is None:
        return ""
    title = "<h2>The paper's tables beside this run</h2>"
    cells = comparison[comparison["metric"].notna()]
    if cells.empty:
        notes = "; ".join(escape(str(n)) for n in comparison["note"].dropna().unique())
        return f"{title}<p>No cell to compare: {notes}. (paper_comparison.csv says the same.)</p>"
    covered = cells[cells["covered"].astype(bool)]
    measured = "; ".join(sorted({str(m) for m in cells.loc[cells["metric"] == "gpu_memory_gb", "measured_as"]
                                 .dropna()}))
    shown = cells[["task", "level", "method", "metric", "paper", "run", "difference", "n", "protocol", "note"]]
    first = {k: escape(str(v)) for k, v in cells.iloc[0].items()}
    return (f"{title}<p>Source: {escape(paper.SOURCE)}. Model: {first['model']} (preset <code>{first['preset']}"
            f"</code>, fingerprint <code>{first['model_fingerprint']}</code>). {len(covered)} of the paper's "
            f"{len(cells)} cells for this model and experiment are covered by this run; difference = this run − the "
            "paper. EAGLE is compared under its region curves and the baselines under the pixel protocol, as the "
            f"paper scores them. Memory: {escape(measured or 'not measured')}. Seconds: wall time per explained "
            f"sample. (paper_comparison.csv has every column.)</p>{html_page.table(shown)}")


def _html(metrics: pd.DataFrame, pngs: dict[str, bytes], coverage: dict, run: dict, params: dict,
          protocol: str = "pixels", explorer_data: dict | None = None,
          paper_comparison: pd.DataFrame | None = None, timings: dict | None = None) -> str:
    shown = {name: png for name, png in pngs.items() if name != "table"}
    not_made = pd.DataFrame(coverage["not_made"], columns=["stage", "item", "reason"])
    left_out = [f"{level}: {method} has {len(keys)} targets the others lack ({', '.join(keys[:5])})"
                for level, methods in coverage["left_out"].items() for method, keys in methods.items()]
    skipped_block = (f"<h2>Not in the tables</h2><p>{len(not_made)} items were not made (each with its reason); "
                     f"they are retried when their input changes.</p>{html_page.table(not_made)}"
                     if len(not_made) else "<h2>Not in the tables</h2><p>Every item was made.</p>")
    api = coverage.get("api")
    if api:
        skipped_block += (f"<h2>API coverage</h2><p>The model answered through an API ({', '.join(api['scoring'])} "
                          f"scoring): {api['missing']} of {api['scored']} target probabilities were not among the "
                          f"endpoint's top log-probabilities and count as 0 (coverage {api['coverage']:.4f}; lowest "
                          f"per attribution {api['min_coverage']:.4f}; {api['incomplete']} of {api['attributions']} "
                          f"attributions incomplete). {api['requests']} requests, {api['sent']} sent (the rest "
                          "from the response cache).</p>")
    for level in coverage.get("empty_levels", []):
        skipped_block += (f"<p>The {level} level has no target in this run (e.g. word level on a split without "
                          f"object annotations, or answers that name no annotated object).</p>")
    if left_out:
        skipped_block += "<p>Left out so that every row covers the same targets:</p><ul>" + "".join(
            f"<li>{html.escape(line)}</li>" for line in left_out) + "</ul>"
    body = f"""<h2>Metrics</h2>
<p>One protocol for every method, every row of a level over the same targets (n_samples). <em>regions</em>:
curves of the method's own region order; <em>pixels</em>: the method's map ranked into equal pixel fractions.
Insertion AUC and AHC: higher is better; deletion AUC: lower is better; Point Game (word level): fraction of objects
where the map's maximum falls in the box / mask. The baselines (docs/baselines.md) are scored under the pixel
protocol; seconds and peak memory are per explained sample. {HEADLINE_NOTE[protocol]} The full table is folded
under it and in metrics.csv.</p>
{html_page.table(headline(metrics, protocol))}
<details><summary>All columns, both protocols</summary>{html_page.table(metrics)}</details>
{joint_note(metrics)}
{paper_section(paper_comparison)}
{skipped_block}
{timings_section(timings)}
{explorer_html(explorer_data)}
<h2>Figures</h2>
{html_page.figures(shown, CAPTIONS)}"""
    return html_page.document("EAGLE report", run, body, params)
