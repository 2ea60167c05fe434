"""eagle_video's reporting stage: what the tables cover, the figures (per-frame overlays of the first clips, their
animated GIFs, the mean curves) and the published report (tables, figures, GIFs, HTML page, run.json; whole or not
at all)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from eagle_pipelines.core.attribution import Attribution
from eagle_pipelines.core.plotting import save_video_gif
from eagle_pipelines.core.video import VideoAttribution
from eagle_pipelines.data.clips import ClipFormatError
from eagle_pipelines.io.clip_dataset import ClipSplit
from eagle_pipelines.io.items import Manifest
from eagle_pipelines.parameters import EagleVideoParams
from eagle_pipelines.reporting import html_page
from eagle_pipelines.reporting.explorers.video import video_html

CAPTIONS = {
    "curves": "Mean insertion (higher is better) and deletion (lower is better) curves over the explained clips: "
              "EAGLE's order and a seeded random order of the same regions, scored at the same prefix lengths.",
}


def coverage(answers: dict, attributions: Manifest, evaluation: Manifest) -> dict:
    """Clips in the tables, every clip left out at any stage with its reason, the stages' parameters."""
    not_made = [{"stage": "answers", "item": e["item"], "reason": e["error"]} for e in answers.get("errors", [])]
    for stage, manifest in (("EAGLE", attributions), ("evaluation", evaluation)):
        not_made += [{"stage": stage, "item": k, "reason": r} for k, r in sorted(manifest.not_made().items())]
    return {"n_clips": len(evaluation), "answered": len(answers["answers"]),
            "answer_exact_match": answers["summary"]["exact_match"], "not_made": not_made,
            "params": {**attributions.params, **evaluation.params}}


def video_attribution(attribution: Attribution) -> VideoAttribution:
    """A stored attribution (``Attribution.load``) as the ``VideoAttribution`` it was made as."""
    from dataclasses import fields

    return VideoAttribution(**{f.name: getattr(attribution, f.name) for f in fields(Attribution)})


def _clips(vlm, eval_split: ClipSplit, attributions: Manifest, answers: dict, limit: int):
    by_item = {a["item"]: a for a in answers["answers"]}
    out = []
    for key in attributions:
        if len(out) >= limit:
            break
        try:
            frames = vlm.model_clip(eval_split.frames(key, by_item[key]["clip_sha"])).frames
        except (ClipFormatError, KeyError):
            continue
        out.append((key, frames, video_attribution(attributions.load(key))))
    return out


def build_figures(vlm, eval_split: ClipSplit, answers: dict, attributions: Manifest, evaluation: Manifest,
                  eagle_video: EagleVideoParams) -> dict:
    """``clip_<key>``: every frame of the first `figures` explained clips with EAGLE's map (core/plotting.py
    ``plot_video_attribution``), ``curves``: the mean curves of EAGLE and the random floor, and ``explorer``: the
    page's explorer of the same clips (reporting/explorers/video.py; a dict, saved as JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eagle_pipelines.reporting.explorers.video import video_explorer

    figures = {}
    clips = _clips(vlm, eval_split, attributions, answers, eagle_video.figures)
    for key, frames, attribution in clips:
        figures[f"clip_{key}"] = attribution.plot(frames)
    figures["explorer"] = video_explorer([(key, frames, a, a.prompt) for key, frames, a in clips])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for method, colour in (("EAGLE", "#1b7837"), ("random", "#999999")):
        curves = [row["curve"] for k in evaluation for row in evaluation.load(k)["rows"] if row["method"] == method]
        if not curves:
            continue
        x = np.mean([c["x"] for c in curves], axis=0)
        for ax, name in zip(axes, ("insertion", "deletion")):
            y = np.mean([c[name] for c in curves], axis=0)
            ax.plot(x, y, color=colour, lw=2, label=f"{method} (AUC {np.trapezoid(y, x):.3f})")
    for ax, name in zip(axes, ("insertion", "deletion")):
        ax.set_title(f"{name} ({len(evaluation)} clips)")
        ax.set_xlabel(f"share of the clip {'kept' if name == 'insertion' else 'removed'}")
        ax.set_ylabel("mean p(explained tokens)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    figures["curves"] = fig
    return figures


def render_gifs(vlm, eval_split: ClipSplit, answers: dict, attributions: Manifest,
                eagle_video: EagleVideoParams) -> dict[str, bytes]:
    """An animated GIF of the map over each drawn clip (``clip_<key>``: its bytes), for the report."""
    gifs = {}
    with tempfile.TemporaryDirectory(prefix="eagle_video_gif_") as tmp:
        for key, frames, attribution in _clips(vlm, eval_split, attributions, answers, eagle_video.figures):
            path = save_video_gif(attribution, frames, Path(tmp) / f"{key}.gif")
            gifs[f"clip_{key}"] = path.read_bytes()
    return gifs


def publish_report(metrics: pd.DataFrame, metrics_per_sample: pd.DataFrame, coverage: dict, figures_png: dict,
                   gifs: dict[str, bytes], eagle_video: EagleVideoParams) -> dict:
    """The tables, the figures, the GIFs (``render_gifs``), the HTML page and run.json."""
    pngs = {name: value for name, value in figures_png.items() if isinstance(value, bytes)}
    explorer = figures_png.get("explorer") if isinstance(figures_png.get("explorer"), dict) else None
    params = coverage["params"]
    run = {"generated": html_page.now(), "git commit": html_page.git_commit(), "model": params.get("model", ""),
           "model fingerprint": params.get("model_fingerprint", ""), "clips answered": coverage["answered"],
           "answer exact match": f"{coverage['answer_exact_match']:.3f}", "clips in the tables": coverage["n_clips"],
           "items not made": len(coverage["not_made"])}
    not_made = pd.DataFrame(coverage["not_made"], columns=["stage", "item", "reason"])
    gif_html = "\n".join(
        f'<figure><img alt="{k}" src="data:image/gif;base64,{_b64(v)}"><figcaption>{k}: the map over the clip '
        f"(animated)</figcaption></figure>" for k, v in gifs.items())
    body = f"""<h2>Metrics</h2>
<p>Each clip shows static shapes in every frame and one more shape in exactly one frame; the question is what
appears, and the answer names that shape, so its cause is known: that shape's pixels in that frame. EAGLE orders the
clip's spatio-temporal regions ({params.get('eagle_video', {}).get('rows')} × {params.get('eagle_video', {}).get(
    'cols')} cells per frame); the random floor orders the same regions at random. Both are scored by the same
protocol: insertion AUC (higher is better) and deletion AUC (lower is better) at the same prefix lengths; the
temporal hit rate (the first region lies in the event's frame) and the spatio-temporal Point Game (the first region
touches the shape in that frame). forward_passes and seconds: EAGLE's search per clip.</p>
{html_page.table(metrics)}
<h2>Not in the tables</h2>
{html_page.table(not_made) if len(not_made) else "<p>Every clip was made.</p>"}
{video_html(explorer)}
<h2>Figures</h2>
{html_page.figures(pngs, CAPTIONS)}
{gif_html}
<h2>Per clip</h2>
{html_page.table(metrics_per_sample)}"""
    page = html_page.document("eagle_video: EAGLE on clips with a known cause", run, body,
                              {"eagle_video": eagle_video.model_dump(mode="json"), **params})
    bundle = {"metrics.csv": metrics, "metrics_per_sample.csv": metrics_per_sample, "skipped.csv": not_made,
              "report.html": page, "run.json": {**run, "params": params, "coverage": coverage}}
    bundle.update({f"figures/{name}.png": png for name, png in pngs.items()})
    bundle.update({f"figures/{name}.gif": gif for name, gif in gifs.items()})
    if explorer is not None:
        bundle["figures/explorer.json"] = explorer
    return bundle


def _b64(blob: bytes) -> str:
    import base64

    return base64.b64encode(blob).decode("ascii")
