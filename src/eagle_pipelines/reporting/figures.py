"""Matplotlib figures of the reports (no Kedro; the reporting nodes call these).

The reference's three figure types, drawn with ``core.plotting.attribution_display`` (viridis laid lightly over the
image in its own colours, ``BACKGROUND``, so a reader names the object under region 1 without a thumbnail; dimmed
outside the top regions, the first regions numbered, a colour bar):

- ``sentence_figure``: per image, EAGLE beside the random floor and the baselines, and under them the answer as a
  strip of tokens, each coloured by its influence (visual evidence against language prior);
- ``word_figure``: per explained object, its box on every map, EAGLE's map scaled by the word's sensitivity (the
  reference's 1.5 × (max insertion − empty score)), and the answer with the explained word highlighted;
- ``hallucination_figure``: per wrong answer, EAGLE's map of the counter token, the removal sequence (what was
  removed at each step, with the answer regenerated after it) and the counter token's score as regions go, the
  region whose removal corrected the answer (the trigger) outlined in red, the true cause in green.

Curves (``method_curves``, ``amcr_curves``) give every method its own colour, dash pattern and marker, draw the
widest line first so that a line lying on another still shows, and put the legend outside the data.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import Normalize, to_rgb  # noqa: E402

from eagle_pipelines.core.attribution import Attribution  # noqa: E402
from eagle_pipelines.core.evaluate import order_saliency, random_order  # noqa: E402
from eagle_pipelines.core.plotting import (  # noqa: E402
    CMAP,
    SENSITIVITY_GAIN,
    attribution_display,
    colour_bar,
    outlined,
    sensitivity,
    sensitivity_scale,
    top_mask,
)

TITLE, LABEL, SMALL = 10, 9, 8
#: the area left bright in every display: the top quarter of the image by each method's ranking
KEEP = 0.25
#: what every map of the reports is drawn on (core.plotting.attribution_display: "colour" or "grey")
BACKGROUND = "colour"
#: the colour map of the token strips (influence)
INFLUENCE_CMAP = "Blues"
#: the word-level figure's highlight (the reference's pale green)
HIGHLIGHT = (0.8, 1.0, 0.8)
#: Okabe-Ito colours (distinguishable with colour-blindness), a dash pattern and a marker per method
STYLES = {
    "eagle": {"color": "#D55E00", "ls": "-", "marker": "o", "lw": 4.0, "alpha": 0.7},
    "random": {"color": "#555555", "ls": (0, (1, 1.5)), "marker": None, "lw": 1.8},
    "llava_cam": {"color": "#0072B2", "ls": (0, (6, 2)), "marker": "s", "lw": 1.8},
    "igos_pp": {"color": "#009E73", "ls": (0, (4, 1.5, 1, 1.5)), "marker": "^", "lw": 1.8},
    "tam": {"color": "#CC79A7", "ls": (0, (2.5, 1.5)), "marker": "D", "lw": 1.8},
    "captum": {"color": "#000000", "ls": (0, (7, 1.5, 1, 1.5, 1, 1.5)), "marker": "v", "lw": 1.5},
}
_EXTRA = ["#56B4E9", "#E69F00", "#882255", "#117733"]


def display_name(method: str) -> str:
    from eagle_pipelines.core.baselines import display_name as name

    return name(method)


def method_style(method: str) -> dict:
    """Line colour, dash pattern, marker and width of `method` in every curve figure (unknown methods get the
    spare colours in a fixed order)."""
    if method in STYLES:
        return dict(STYLES[method])
    k = sum(ord(c) for c in method) % len(_EXTRA)
    return {"color": _EXTRA[k], "ls": (0, (3, 1, 1, 1)), "marker": "x", "lw": 1.8}


# --- token strips -------------------------------------------------------------------------------------------------
def _readable(colour) -> str:
    r, g, b = to_rgb(colour)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def spaced_tokens(tokens: list[str]) -> list[str]:
    """Tokens as decoded, with byte-level BPE (Ġ) and SentencePiece (▁) space marks turned into spaces and
    newlines into a visible ↵."""
    return [t.replace("\u0120", " ").replace("\u2581", " ").replace("\n", "\u21b5") for t in tokens]


def token_strip(ax, tokens: list[str], colours: list, fontsize: float = 10, line_height: float = 0.34) -> None:
    """The tokens in reading order on `ax` (axes coordinates), each on its own background colour, wrapped at the
    axes' width. Tokens that the tokenizer glued to the previous one (no leading space while others have one) are
    drawn without a gap."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    inverse = ax.transAxes.inverted()
    shown = spaced_tokens(tokens)
    spaced = any(t.startswith(" ") for t in shown[1:])
    x, y = 0.005, 1 - line_height / 2
    for i, (token, colour) in enumerate(zip(shown, colours)):
        gap = 0.012 if (not spaced or token.startswith(" ")) and i else (0.002 if i else 0)
        text = ax.text(x + gap, y, token.strip() or "\u2423", transform=ax.transAxes, fontsize=fontsize,
                       ha="left", va="center", color=_readable(colour),
                       bbox={"facecolor": colour, "edgecolor": "none", "boxstyle": "round,pad=0.22"})
        box = text.get_window_extent(renderer=renderer)
        (x0, _), (x1, _) = inverse.transform([(box.x0, box.y0), (box.x1, box.y1)])
        if x1 > 0.995 and x > 0.01:  # wrap
            y -= line_height
            text.set_position((0.005, y))
            x = 0.005 + (x1 - x0)
        else:
            x = x1


def influence_colours(values, norm: Normalize, cmap: str = INFLUENCE_CMAP) -> list:
    palette = colormaps[cmap]
    return [palette(0.08 + 0.85 * norm(v)) for v in values]


def _influence_norm(attributions: list[Attribution]) -> Normalize:
    top = max([float(np.max(a.influence)) for a in attributions if len(a.influence)] + [0.3])
    return Normalize(0.0, top)


# --- displays -----------------------------------------------------------------------------------------------------
def _show(ax, picture: np.ndarray, title: str, fontsize: float = LABEL) -> None:
    ax.imshow(picture)
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _display(image: np.ndarray, saliency: np.ndarray, **kwargs):
    """``attribution_display`` on the reports' ``BACKGROUND``."""
    return attribution_display(image, saliency, background=BACKGROUND, **kwargs)


def _blank(shape: tuple[int, int]) -> np.ndarray:
    return np.full((*shape, 3), 245, np.uint8)


def _eagle_keep(a: Attribution) -> float:
    """The area EAGLE's lit regions cover (the first regions up to KEEP): every method of a row lights as much."""
    return float(top_mask(a.saliency(), KEEP, a.labels, a.order).mean())


def sentence_figure(samples: list[tuple[np.ndarray, Attribution]], seed: int = 0,
                    baselines: list[dict[str, np.ndarray]] | None = None, titles: list[str] | None = None):
    """Sentence level, one block per image: the photo, EAGLE (first three regions numbered), the random floor and
    each baseline's map (``{method: (H, W) map}`` per sample), the same area lit in each, and the answer under them
    as a strip of tokens coloured by influence. `titles`: the photo's title per sample (e.g. what differs within
    an MMVP pair, and the question; default ``#<image id>``), wrapped to the panel."""
    if not samples:
        return placeholder("no sentence-level attribution in this run")
    baselines = baselines or [{} for _ in samples]
    methods = sorted({m for maps in baselines for m in maps})
    cols = 3 + len(methods)
    norm = _influence_norm([a for _, a in samples])
    titles = ["\n".join(textwrap.fill(line, 30) for line in t.split("\n"))
              for t in (titles or [f"#{a.meta.get('image_id', '')}" for _, a in samples])]
    lines = max(t.count("\n") + 1 for t in titles)
    fig, outer = _blocks(len(samples), 2.55 * cols + 0.9, 3.45 + 0.17 * (lines - 1), "Sentence level: the regions "
                         "the whole answer relies on (bright: the top quarter of the image by each method; numbers: "
                         "rank)", lines)
    for block, (image, a), maps, photo_title in zip(outer, samples, baselines, titles):
        inner = block.subgridspec(2, cols + 1, height_ratios=[2.55, 0.62], width_ratios=[1] * cols + [0.07],
                                  hspace=0.12, wspace=0.06)
        keep = _eagle_keep(a)
        rand = random_order(a.n_regions, seed, a.meta.get("image_id", 0), 0)
        panels = [(image, photo_title),
                  (_display(image, a.saliency(), labels=a.labels, order=a.order).rgb, "EAGLE"),
                  (_display(image, order_saliency(rand, a.labels), labels=a.labels, order=rand).rgb,
                   "random floor")]
        for method in methods:
            saliency = maps.get(method)
            panels.append((_display(image, saliency, keep=keep).rgb if saliency is not None
                           else _blank(a.labels.shape), display_name(method)))
        for col, (picture, title) in enumerate(panels):
            _show(fig.add_subplot(inner[0, col]), picture, title, TITLE)
        colour_bar(fig, None, cax=fig.add_subplot(inner[0, cols]), label="saliency")
        strip = fig.add_subplot(inner[1, :cols])
        strip.set_title("the answer, each token coloured by its influence (dark: visual evidence, pale: language "
                        "prior)", fontsize=LABEL, loc="left", pad=2)
        token_strip(strip, a.target_words, influence_colours(a.influence, norm))
        bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=INFLUENCE_CMAP), cax=fig.add_subplot(inner[1, cols]))
        bar.ax.tick_params(labelsize=SMALL - 1)
        bar.set_label("influence", fontsize=SMALL - 1)
    return fig


def _wrapped(text: str, width_in: float) -> str:
    return textwrap.fill(text, max(40, int(width_in * 72 / (0.55 * (TITLE + 1)))))


def _blocks(n: int, width: float, block: float, title: str, panel_title_lines: int = 1):
    """A figure of `n` stacked blocks of `block` inches under its `title` (wrapped to the width) in a band tall
    enough for the title and the first row's panel titles, and the blocks' grid."""
    title = _wrapped(title, width)
    top = 0.2 + 0.24 * (title.count("\n") + 1) + 0.2 * panel_title_lines
    height = top + n * block + 0.1
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(n, 1, hspace=0.16, top=1 - top / height, bottom=0.1 / height, left=0.01, right=0.99)
    _title(fig, title)
    return fig, grid


def _title(fig, text: str) -> None:
    """The figure's title at the top of its band (wrapped to the figure's width)."""
    fig.suptitle(_wrapped(text, fig.get_figwidth()), fontsize=TITLE + 1, y=1 - 0.1 / fig.get_figheight(),
                 va="top")


def word_figure(samples: list[tuple[np.ndarray, Attribution]], baselines: list[dict[str, np.ndarray]] | None = None,
                answers: list[list[str] | None] | None = None):
    """Word level, one block per explained object: EAGLE's map scaled by the word's sensitivity (min(1, 1.5 ×
    (max insertion − empty score)), as the reference draws it: a word the image barely moves shows a dark map),
    each baseline's map (``{method: map}`` per sample), the object's box on each, and the answer with the explained
    word highlighted (`answers`: the answer's tokens per sample, when a sentence-level attribution gave them)."""
    if not samples:
        return placeholder("no word-level attribution in this run")
    baselines = baselines or [{} for _ in samples]
    answers = answers or [None for _ in samples]
    methods = sorted({m for maps in baselines for m in maps})
    cols = 1 + len(methods)
    fig, outer = _blocks(len(samples), max(2.7 * cols + 0.9, 6.0), 3.7, "Word level: the regions each object's "
                         "word relies on (white box: the object; EAGLE's map scaled by the word's sensitivity)", 2)
    for block, (image, a), maps, tokens in zip(outer, samples, baselines, answers):
        inner = block.subgridspec(2, cols + 1, height_ratios=[2.6, 0.5], width_ratios=[1] * cols + [0.07],
                                  hspace=0.15, wspace=0.06)
        box = [tuple(a.meta["bbox"])] if a.meta.get("bbox") else []
        scale = sensitivity_scale(a)
        keep = _eagle_keep(a)
        word = " ".join(t.strip() for t in a.target_words) or a.meta.get("category", "")
        panels = [(_display(image, a.saliency(), labels=a.labels, order=a.order, scale=scale,
                                       boxes=box).rgb,
                   f"EAGLE: \u201c{word}\u201d\nsensitivity {sensitivity(a):.2f} \u2192 map \u00d7 {scale:.2f}")]
        for method in methods:
            saliency = maps.get(method)
            panels.append((_display(image, saliency, keep=keep, boxes=box).rgb if saliency is not None
                           else _blank(a.labels.shape), display_name(method)))
        for col, (picture, title) in enumerate(panels):
            _show(fig.add_subplot(inner[0, col]), picture, title, TITLE - 0.5)
        colour_bar(fig, None, cax=fig.add_subplot(inner[0, cols]), label="saliency")
        strip = fig.add_subplot(inner[1, :cols])
        strip.set_title(f"#{a.meta.get('image_id', '')}: the answer, the explained word highlighted", fontsize=LABEL,
                        loc="left", pad=2)
        words, colours = _highlighted(a, tokens)
        token_strip(strip, words, colours)
    return fig


def _highlighted(a: Attribution, tokens: list[str] | None) -> tuple[list[str], list]:
    """The answer's tokens with the explained positions in the highlight colour (the answer split on spaces, the
    target words matched in order, when no token list is given)."""
    if tokens:
        chosen = set(a.target_positions)
        return tokens, [HIGHLIGHT if i in chosen else "white" for i in range(len(tokens))]
    words = a.answer.split()
    target = [w.strip() for w in a.target_words]
    colours = ["white"] * len(words)
    for start in range(len(words) - len(target) + 1):
        if [w.strip(",.;:!?").lower() for w in words[start:start + len(target)]] == [t.lower() for t in target]:
            colours[start:start + len(target)] = [HIGHLIGHT] * len(target)
            break
    return words, colours


# --- hallucination ------------------------------------------------------------------------------------------------
def _removal_steps(ks: list[int], corrected_k: int | None, most: int) -> list[int]:
    """Indices into `ks` to draw: all when they fit, else evenly spread, always the first and the last."""
    last = ks.index(corrected_k) if corrected_k in ks else len(ks) - 1
    shown = list(range(last + 1))
    if len(shown) <= most:
        return shown
    return sorted({round(float(v)) for v in np.linspace(0, last, most)})


def hallucination_figure(samples: list[dict], most_steps: int = 4):
    """One row per wrong answer: EAGLE's map of the counter token (the trigger in red, the true cause in green)
    with the wrong and the revised answer; the removal sequence, one picture per step (the regions removed so far
    blacked out as the model saw them, the one removed at that step outlined in yellow, the trigger in red) with
    the answer regenerated after it; and the counter token's probability as the lowest-ranked regions go, a red
    line at the first correction. Sample keys: image, attribution, correction (EAGLE's record: ks, answers,
    corrected_k, amcr, correcting_region, order), question_id, text, label, answer, cause_mask."""
    if not samples:
        return placeholder("no wrong answer to show in this run")
    plans = [_removal_steps(list(s["correction"]["ks"]), s["correction"].get("corrected_k"), most_steps)
             if s["correction"]["ks"] else [] for s in samples]
    most_steps = max(1, *(len(plan) for plan in plans))
    cols = 2 + most_steps
    width = 2.6 * cols + 1.2
    title = _wrapped("Hallucination: EAGLE's lowest-ranked regions of the counter token removed until the answer is "
                     "right (red: the trigger, green: the true cause, yellow: removed at that step)", width)
    top = 0.3 + 0.24 * (title.count("\n") + 1) + 0.2 * 3
    height = top + 3.9 * len(samples) - 0.3
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(len(samples), cols, width_ratios=[1.1] + [1] * most_steps + [1.25], hspace=0.55,
                            wspace=0.15, top=1 - top / height, bottom=0.75 / height, left=0.02, right=0.98)
    _title(fig, title)
    for row, (s, steps) in enumerate(zip(samples, plans)):
        image, a, fix = s["image"], s["attribution"], s["correction"]
        order = np.asarray(fix.get("order") or a.order)
        trigger = fix.get("correcting_region")
        cause = None
        if s.get("cause_mask") is not None and np.any(s["cause_mask"]):  # drawn just outside the object, so a
            from scipy import ndimage  # trigger on the same object (red, inside) leaves it visible

            cause = ndimage.binary_dilation(np.asarray(s["cause_mask"], bool), iterations=2)
        marks = [] if cause is None else [(cause, (40, 220, 40))]
        if trigger is not None:
            marks.append((a.labels == trigger, (255, 40, 40)))
        ax = fig.add_subplot(grid[row, 0])
        _show(ax, _display(image, a.saliency(), labels=a.labels, order=a.order, outlines=marks).rgb,
              f"Q{s['question_id']}: {textwrap.fill(s['text'], 34)}", LABEL)
        revised = fix["answers"][fix["ks"].index(fix["corrected_k"])] if fix.get("corrected_k") is not None \
            else "never corrected"
        ax.set_xlabel(f"hallucinated: {textwrap.shorten(s['answer'], 40)} (label {s['label']})\n"
                      f"revised: {textwrap.shorten(revised, 40)}", fontsize=LABEL, loc="left")
        for col in range(most_steps):
            ax = fig.add_subplot(grid[row, 1 + col])
            if col >= len(steps):
                ax.set_axis_off()
                continue
            i = steps[col]
            k = int(fix["ks"][i])
            removed = order[len(order) - k:] if k else order[:0]
            newest = order[len(order) - k] if k else None
            keep = ~np.isin(a.labels, removed)
            picture = (image * keep[..., None]).astype(np.uint8)
            outlines = [] if newest is None else [(a.labels == newest, (255, 215, 0))]
            if trigger is not None and k == fix.get("corrected_k"):
                outlines = [(a.labels == trigger, (255, 40, 40))]
            if cause is not None:
                outlines.insert(0, (cause, (40, 220, 40)))
            ax.imshow(outlined(picture, outlines))
            corrected = k == fix.get("corrected_k")
            gap = "" if col == 0 or steps[col - 1] == i - 1 else "\u2026 "
            ax.set_title(f"{gap}step {i + 1}: {k} removed ({100 * fix['removed_area'][i]:.0f}%)", fontsize=LABEL)
            ax.set_xlabel(textwrap.shorten(fix["answers"][i], 28), fontsize=LABEL,
                          color="#1a7f37" if corrected else "#b00020", fontweight="bold" if corrected else None)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = fig.add_subplot(grid[row, cols - 1])
        _score_curve(ax, a, fix)
    return fig


def _score_curve(ax, a: Attribution, fix: dict) -> None:
    """p(counter token) with the k lowest-ranked regions removed (EAGLE's insertion curve read backwards)."""
    keep_x = np.concatenate([[0.0], np.asarray(a.area, float)])
    keep_y = np.concatenate([[float(np.mean(a.empty_score))], np.asarray(a.insertion).mean(axis=1)])
    removed_x, y = 1.0 - keep_x[::-1], keep_y[::-1]
    style = method_style("eagle")
    ax.plot(removed_x, y, color=style["color"], lw=2.2, drawstyle="steps-post")
    ax.fill_between(removed_x, y, step="post", color=style["color"], alpha=0.12)
    if fix.get("corrected_k") is not None:
        ax.axvline(fix["amcr"], color="#b00020", lw=1.6)
        ax.text(fix["amcr"], 0.97, f" AMCR {fix['amcr']:.2f}", color="#b00020", fontsize=SMALL, va="top",
                transform=ax.get_xaxis_transform())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("area removed (lowest-ranked first)", fontsize=SMALL)
    ax.tick_params(labelsize=SMALL)
    ax.set_title(f"p(\u201c{textwrap.shorten(a.answer.strip(), 16)}\u201d) as regions go", fontsize=LABEL)


# --- curves -------------------------------------------------------------------------------------------------------
def _draw_order(methods: list[str]) -> list[str]:
    """Widest lines first, so a thin line lying on a wide one still shows."""
    return sorted(methods, key=lambda m: -method_style(m)["lw"])


def _plot(ax, x, y, method: str, label: str) -> None:
    style = method_style(method)
    marker = style.get("marker")
    ax.plot(x, y, color=style["color"], ls=style["ls"], lw=style["lw"], alpha=style.get("alpha", 1.0),
            marker=marker, markersize=4.5 if marker else 0, markevery=0.1, label=label,
            solid_capstyle="round", zorder=3 if method == "eagle" else 4)


def method_curves(rows: list[dict], level: str = "sentence", protocol: str = "pixels"):
    """Mean insertion and deletion curves of every method at `level` (interpolated on a common area grid).
    `protocol` ``pixels``: every method's map ranked into pixel fractions; ``regions``: the methods that order
    regions (EAGLE, random) under their own region curves, the baselines under pixels (as the headline table)."""
    grid = np.linspace(0, 1, 101)
    at_level = [r for r in rows if r["level"] == level]
    with_regions = {r["method"] for r in at_level if r["protocol"] == "regions"}
    chosen = [r for r in at_level if r["protocol"] == ("regions" if protocol == "regions" and r["method"]
                                                       in with_regions else "pixels")]
    methods = sorted({r["method"] for r in chosen}, key=lambda m: (m != "eagle", m == "random", m))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3), sharey=True)
    if not methods:
        plt.close(fig)
        return placeholder(f"no {level}-level curves in this run")
    handles = {}
    for method in _draw_order(methods):
        sel = [r["curve"] for r in chosen if r["method"] == method]
        for ax, key in zip(axes, ("insertion", "deletion")):
            ys = np.mean([np.interp(grid, c["x"], c[key]) for c in sel], axis=0)
            handles.setdefault(method, []).append(np.trapezoid(ys, grid))
            _plot(ax, grid, ys, method, method)
    for ax, key in zip(axes, ("insertion", "deletion")):
        better = "higher is better" if key == "insertion" else "lower is better"
        ax.set_title(f"{key} ({better})", fontsize=TITLE)
        ax.set_xlabel("area fraction " + ("kept" if key == "insertion" else "removed"), fontsize=LABEL)
        ax.tick_params(labelsize=SMALL)
        ax.grid(alpha=0.25)
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("mean p(explained tokens)", fontsize=LABEL)
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    n = len([r for r in chosen if r["method"] == methods[0]])
    labels = [f"{display_name(m)}{' (regions)' if protocol == 'regions' and m in with_regions else ''}: "
              f"ins {handles[m][0]:.3f}, del {handles[m][1]:.3f}" for m in methods]
    fig.legend([lines[m] for m in methods], labels, loc="lower center", ncol=min(3, len(methods)),
               fontsize=SMALL + 0.5, frameon=False, title=f"mean AUC over n = {n} targets", title_fontsize=SMALL)
    how = ("EAGLE and random under their own region order, the baselines under pixels" if protocol == "regions"
           else "every map ranked into equal pixel fractions")
    fig.suptitle(f"{level.capitalize()} level: insertion and deletion curves of every method ({how})",
                 fontsize=TITLE + 1)
    rows_of_legend = int(np.ceil(len(methods) / 3))
    fig.tight_layout(rect=(0, (0.35 + 0.22 * rows_of_legend) / fig.get_figheight(), 1, 1))
    return fig


def amcr_curves(records: list[dict], methods: list[str], threshold: float):
    """The share of wrong answers corrected against the removed area, one line per method (AMCR and CSR in the
    legend, below the axes), the CSR threshold dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    grid = np.linspace(0, 1, 401)
    stats = {}
    for method in _draw_order([m for m in methods if any(m in r["methods"] for r in records)]):
        per = [r["methods"][method] for r in records if method in r["methods"]]
        amcr = np.array([p["amcr"] if p["corrected"] else np.inf for p in per])
        _plot(ax, grid, [(amcr <= g).mean() for g in grid], method, method)
        finite = np.where(np.isfinite(amcr), amcr, 1.0)
        stats[method] = (float(finite.mean()), float((amcr <= threshold).mean()))
    ax.axvline(threshold, color="grey", lw=0.9, ls="--")
    ax.text(threshold, 0.5, f" CSR threshold {threshold:g}", color="grey", fontsize=SMALL, rotation=90,
            va="center", ha="right", transform=ax.get_xaxis_transform())
    ax.set_xlabel("removed area fraction (each method's lowest-ranked regions first)", fontsize=LABEL)
    ax.set_ylabel("share of wrong answers corrected", fontsize=LABEL)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.04)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=SMALL)
    ax.set_title("Correction by removing the lowest-ranked regions", fontsize=TITLE)
    if stats:
        order = sorted(stats, key=lambda m: (m != "eagle", m == "random", m))
        lines = {line.get_label(): line for line in ax.get_lines()}
        fig.legend([lines[m] for m in order], [f"{display_name(m)}: AMCR {stats[m][0]:.3f}, CSR {stats[m][1]:.2f}"
                                               for m in order],
                   loc="lower center", ncol=2, fontsize=SMALL + 0.5, frameon=False)
        fig.tight_layout(rect=(0, (0.3 + 0.2 * int(np.ceil(len(order) / 2))) / fig.get_figheight(), 1, 1))
    else:
        ax.text(0.5, 0.5, "no wrong answers: nothing to correct", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
    return fig


# --- other figures ------------------------------------------------------------------------------------------------
def influence_bars(attributions: list[Attribution]):
    """Mean influence per token word over the sentence-level attributions: visual evidence vs language prior."""
    records = [(w.strip(), v) for a in attributions for w, v in zip(a.target_words, a.influence)]
    if not records:
        return placeholder("no sentence-level attribution in this run")
    frame = pd.DataFrame(records, columns=["word", "influence"]).groupby("word")["influence"]
    stats = frame.agg(["mean", "count"]).sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(stats) + 1.4))
    colours = ["#3b528b" if m > 0.1 else "#a0a0a0" for m in stats["mean"]]
    ax.barh([f"{w} (n={c})" for w, c in zip(stats.index, stats["count"])], stats["mean"], color=colours)
    ax.axvline(0.1, color="k", lw=0.6, ls=":")
    ax.set_xlabel("mean influence (blue: visual evidence; grey: language prior, < 0.1)", fontsize=LABEL)
    ax.tick_params(labelsize=SMALL)
    ax.set_title("Per-token influence, sentence level", fontsize=TITLE)
    fig.tight_layout()
    return fig


def table_figure(metrics: pd.DataFrame):
    """The comparison table as a figure."""
    shown = metrics.copy()
    for col in shown.columns:
        if shown[col].dtype.kind == "f":
            shown[col] = shown[col].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    fig, ax = plt.subplots(figsize=(min(22, 1.2 * len(shown.columns)), 0.35 * len(shown) + 0.8))
    ax.axis("off")
    table = ax.table(cellText=shown.values, colLabels=[c.replace("_", "\n") for c in shown.columns],
                     loc="center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(SMALL)
    table.scale(1, 1.6)
    fig.tight_layout()
    return fig


def placeholder(text: str):
    """A small figure that says why a figure is missing (e.g. a level that was not run)."""
    fig, ax = plt.subplots(figsize=(4, 1))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=LABEL)
    return fig


__all__ = ["CMAP", "SENSITIVITY_GAIN", "amcr_curves", "hallucination_figure", "influence_bars", "method_curves",
           "method_style", "placeholder", "sentence_figure", "table_figure", "token_strip", "word_figure"]
