"""eagle_mitigation's figures and report: the sweep's table, the diagnostics' heat maps (tokens × layers), the
best setting, published whole (``PublishedReportDataset``)."""

from __future__ import annotations

import pandas as pd

from eagle_pipelines.core.diagnostics import Diagnostics
from eagle_pipelines.io.items import Manifest
from eagle_pipelines.io.report_dataset import figure_png
from eagle_pipelines.reporting import html_page as pages

HEADLINE = ["setting", "hallucination_rate_biased", "companion_rate_captions", "object_hallucination_captions",
            "accuracy_unbiased", "exact_match_unbiased_captions", "exact_match_biased_captions",
            "extra_passes_per_answer", "seconds_per_answer", "best"]


def _explorer(metrics: pd.DataFrame, diagnostics: Manifest, vlm, eval_split, decodings: Manifest,
              params) -> dict:
    """The explorer's data (reporting/explorers/mitigation.py): each diagnosed answer's image and the region map
    its EAGLE searches ran on (the same SLICO call as the diagnostics), and every setting's answers."""
    from eagle_pipelines.core.regions import superpixels
    from eagle_pipelines.pipelines.eagle_mitigation.nodes import setting_keys
    from eagle_pipelines.reporting.explorers.mitigation import mitigation_explorer

    best = set(metrics.loc[metrics["best"].astype(bool), "setting"]) if "best" in metrics else set()
    settings = []
    for key in setting_keys(decodings):
        record = decodings.load(key)
        settings.append({"label": record["label"], "best": record["label"] in best,
                         "answers": {a["task_id"]: a["text"] for a in record["answers"]}})
    samples = []
    for key in diagnostics.keys():
        diag = Diagnostics.from_dict(diagnostics.load(key))
        image = vlm.model_image(eval_split.image(int(diag.meta["image_id"])).pixels)
        labels = superpixels(image, n_segments=params.n_regions).labels
        samples.append({"diag": diag, "image": image, "labels": labels})
    return mitigation_explorer(samples, settings)


def build_figures(metrics: pd.DataFrame, diagnostics: Manifest, vlm=None, eval_split=None,
                  decodings: Manifest | None = None, params=None) -> dict:
    """``diagnostics_<task>.png``: N and S heat maps of each diagnosed answer; ``sweep.png``: hallucination on
    biased questions and in captions against unbiased accuracy, per setting; ``explorer`` (with the model, the
    split, the decodings and the diagnostics' parameters): the page's explorer data, saved as JSON."""
    import matplotlib.pyplot as plt

    figures = {}
    if vlm is not None and decodings is not None and params is not None:
        figures["explorer"] = _explorer(metrics, diagnostics, vlm, eval_split, decodings, params)
    for key in diagnostics.keys():
        diag = Diagnostics.from_dict(diagnostics.load(key))
        title = f"{diag.meta.get('kind', '')}: {diag.prompt!r} -> {diag.answer!r}"
        figures[f"diagnostics_{key}"] = diag.plot(title=title)
    if len(metrics):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, y, name in ((axes[0], "hallucination_rate_biased", "'Yes' on biased questions"),
                            (axes[1], "object_hallucination_captions", "captions naming an absent object")):
            for _, row in metrics.iterrows():
                marker = "*" if row.get("best") else ("s" if row.name == 0 else "o")
                ax.scatter(row["accuracy_unbiased"], row[y], marker=marker, s=80 if marker != "o" else 30)
                ax.annotate(str(row.name), (row["accuracy_unbiased"], row[y]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("accuracy on unbiased questions")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        fig.suptitle("settings (0: plain greedy decoding, square; best: star); numbers are table rows", fontsize=9)
        fig.tight_layout()
        figures["sweep"] = fig
    return figures


def publish_report(metrics: pd.DataFrame, metrics_per_sample: pd.DataFrame, coverage: dict, figures_png: dict,
                   diagnostics: Manifest, eagle_mitigation) -> dict:
    """The bundle the report dataset writes whole: tables, figures, the HTML page and ``run.json``."""
    import base64

    from eagle_pipelines.reporting.explorers.mitigation import mitigation_html

    params = {"eagle_mitigation": eagle_mitigation.model_dump(mode="json")}

    explorer = figures_png.get("explorer") if isinstance(figures_png.get("explorer"), dict) else None
    pngs = {name: png if isinstance(png, bytes) else figure_png(png) for name, png in figures_png.items()
            if not isinstance(png, dict)}
    best = metrics[metrics["best"]] if "best" in metrics else metrics.iloc[0:0]
    run = {"generated": pages.now(), "git commit": pages.git_commit(),
           "model fingerprint": coverage["params"]["decoding"].get("model_fingerprint", ""),
           "settings": coverage["settings"], "diagnosed answers": coverage["diagnosed"],
           "best setting": best["setting"].iloc[0] if len(best) else "none (no setting helped within the limit)",
           "items not made": len(coverage["not_made"])}
    diag_rows = []
    for key in diagnostics.keys():
        diag = Diagnostics.from_dict(diagnostics.load(key))
        for row in diag.table():
            diag_rows.append({"task": key, "kind": diag.meta.get("kind"), "prompt": diag.prompt, **row})
    diag_table = pd.DataFrame(diag_rows)
    body = f"""<h2>Sweep</h2>
<p>Each setting answers the same tasks. Hallucination: 'Yes' to "Is there a &lt;companion&gt;?" on images with the
anchor and without the companion; in their captions, the companion named and any absent object named. Unbiased:
accuracy on the control questions and caption exact match on the control images. Cost: passes and seconds per
answer (evidence included; extra passes relative to plain greedy decoding). The best setting lowers hallucination
without costing more than {eagle_mitigation.max_drop:.2f} of unbiased accuracy or exact match.</p>
{pages.table(metrics[[c for c in HEADLINE if c in metrics.columns]])}
<details><summary>All columns</summary>{pages.table(metrics)}</details>
<h2>Diagnostics</h2>
<p>Necessity N_t = log p(y_t | image) − log p(y_t | no image) and sufficiency S_t of the token's top-k EAGLE
regions, at the last layer; prior-driven: N_t below the threshold.</p>
{pages.table(diag_table) if len(diag_table) else '<p>none</p>'}
{mitigation_html(explorer)}
<h2>Figures</h2>
{pages.figures({n: base64.b64encode(p).decode('ascii') for n, p in pngs.items()}, {})}"""
    page = pages.document("EAGLE report: eagle_mitigation (evidence-guided decoding)", run, body, params)
    bundle = {"metrics.csv": metrics, "metrics_per_sample.csv": metrics_per_sample, "report.html": page,
              "diagnostics.csv": diag_table, "run.json": {**run, "params": params, "coverage": coverage}}
    bundle.update({f"figures/{name}.png": png for name, png in pngs.items()})
    if explorer is not None:
        bundle["figures/explorer.json"] = explorer
    return bundle
