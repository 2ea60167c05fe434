"""Matplotlib figures of an eagle_coco run (no Kedro; nodes call these)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from eagle_pipelines.core.attribution import Attribution  # noqa: E402
from eagle_pipelines.core.evaluate import order_saliency, random_order  # noqa: E402
from eagle_pipelines.core.plotting import overlay  # noqa: E402


def _baseline_title(method: str) -> str:
    from eagle_pipelines.core.baselines import display_name

    return display_name(method)


def sentence_overlays(samples: list[tuple[np.ndarray, Attribution]], seed: int,
                      baselines: list[dict[str, np.ndarray]] | None = None):
    """Per image: the image, EAGLE's saliency over it, the random floor's, and each baseline's map (when given:
    one ``{method: (H, W) map}`` per sample)."""
    baselines = baselines or [{} for _ in samples]
    methods = sorted({m for maps in baselines for m in maps})
    cols = 3 + len(methods)
    fig, axes = plt.subplots(len(samples), cols, figsize=(2.5 * cols, 2.5 * len(samples)), squeeze=False)
    for row, (image, a), maps in zip(axes, samples, baselines):
        rand = order_saliency(random_order(a.n_regions, seed, a.meta["image_id"], 0), a.labels)
        pictures = [image, overlay(image, a.saliency()), overlay(image, rand)]
        titles = [f"#{a.meta['image_id']}: {a.answer}", "EAGLE", "random"]
        for method in methods:
            pictures.append(overlay(image, maps[method]) if method in maps else np.full_like(image, 255))
            titles.append(_baseline_title(method))
        for ax, picture, title in zip(row, pictures, titles):
            ax.imshow(picture)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle("Sentence level: which regions the whole answer relies on", fontsize=10)
    fig.tight_layout()
    return fig


def word_overlays(samples: list[tuple[np.ndarray, Attribution]],
                  baselines: list[dict[str, np.ndarray]] | None = None):
    """Per explained object: EAGLE's saliency for its words, the object's box in white. With baseline maps (one
    ``{method: map}`` per sample) one row per object: EAGLE, then each baseline."""
    if baselines and any(baselines):
        methods = sorted({m for maps in baselines for m in maps})
        cols = 1 + len(methods)
        fig, axes = plt.subplots(len(samples), cols, figsize=(2.3 * cols, 2.4 * len(samples)), squeeze=False)
        for row, (image, a), maps in zip(axes, samples, baselines):
            x, y, w, h = a.meta.get("bbox", (0, 0, 0, 0))
            for ax, (name, saliency) in zip(row, [("EAGLE", a.saliency())]
                                            + [(_baseline_title(m), maps.get(m)) for m in methods]):
                ax.imshow(overlay(image, saliency) if saliency is not None else np.full_like(image, 255))
                ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white", lw=1.2))
                ax.set_title(f"{name}: #{a.meta['image_id']} \u201c{' '.join(a.target_words)}\u201d", fontsize=6)
                ax.axis("off")
        fig.suptitle("Word level: the regions each object's words rely on (EAGLE beside the baselines)",
                     fontsize=10)
        fig.tight_layout()
        return fig
    cols = min(4, max(1, len(samples)))
    rows = int(np.ceil(len(samples) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.7 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (image, a) in zip(axes.ravel(), samples):
        ax.imshow(overlay(image, a.saliency()))
        x, y, w, h = a.meta.get("bbox", (0, 0, 0, 0))
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor="white", lw=1.2))
        ax.set_title(f"#{a.meta['image_id']} \u201c{' '.join(a.target_words)}\u201d", fontsize=7)
    fig.suptitle("Word level: the regions each object's words rely on", fontsize=10)
    fig.tight_layout()
    return fig


def mean_curves(rows: list[dict], level: str = "sentence", protocol: str = "regions"):
    """Mean insertion and deletion curves per method, interpolated on a common area grid."""
    grid = np.linspace(0, 1, 101)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    methods = sorted({r["method"] for r in rows if r["level"] == level and r["protocol"] == protocol})
    for method in methods:
        sel = [r["curve"] for r in rows if r["level"] == level and r["protocol"] == protocol
               and r["method"] == method]
        for ax, key in zip(axes, ("insertion", "deletion")):
            ys = np.mean([np.interp(grid, c["x"], c[key]) for c in sel], axis=0)
            ax.plot(grid, ys, label=f"{method} (AUC {np.trapezoid(ys, grid):.3f}, n={len(sel)})")
    for ax, key in zip(axes, ("insertion", "deletion")):
        ax.set_title(f"{key} ({level} level, {protocol} protocol)", fontsize=9)
        ax.set_xlabel("area fraction " + ("kept" if key == "insertion" else "removed"))
        ax.legend(fontsize=8)
    axes[0].set_ylabel("mean p(explained tokens)")
    fig.tight_layout()
    return fig


def influence_bars(attributions: list[Attribution]):
    """Mean influence per token word over the sentence-level attributions: visual evidence vs language prior."""
    records = [(w, v) for a in attributions for w, v in zip(a.target_words, a.influence)]
    frame = pd.DataFrame(records, columns=["word", "influence"]).groupby("word")["influence"]
    stats = frame.agg(["mean", "count"]).sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(stats) + 1.2))
    colours = ["tab:blue" if m > 0.1 else "tab:gray" for m in stats["mean"]]
    ax.barh([f"{w} (n={c})" for w, c in zip(stats.index, stats["count"])], stats["mean"], color=colours)
    ax.axvline(0.1, color="k", lw=0.6, ls=":")
    ax.set_xlabel("mean influence (blue: visual evidence; grey: language prior, < 0.1)")
    ax.set_title("Per-token influence, sentence level", fontsize=10)
    fig.tight_layout()
    return fig


def table_figure(metrics: pd.DataFrame):
    """The comparison table as a figure (kedro-viz previews it)."""
    shown = metrics.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    fig, ax = plt.subplots(figsize=(min(22, 1.2 * len(shown.columns)), 0.35 * len(shown) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=shown.values, colLabels=[c.replace("_", "\n") for c in shown.columns],
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.6)
    fig.tight_layout()
    return fig


def placeholder(text: str):
    """A small figure that says why a figure is missing (e.g. a level that was not run)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    return fig
