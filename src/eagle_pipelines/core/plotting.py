"""How an attribution is drawn so that it reads at a glance on any photo, and the figure of one Attribution.

``attribution_display`` is the one picture every figure, the report's explorer and the kedro-viz preview use:

- the image in its own colours (``background="colour"``, the reports' figures and explorer: a reader names the
  object under region 1 without a thumbnail; the map is laid over it more lightly) or a greyscale copy
  (``background="grey"``, the default here: the object's own colour never competes with the map's);
- the map through a perceptual colour map (viridis: dark violet = low, yellow = high), smoothed as the reference
  smooths its maps (down to 1/20 of the size and back up, so region edges do not read as evidence);
- the image dimmed outside the top regions (the first regions of the order up to ``keep`` of the area; for a map
  without regions, the top ``keep`` of its pixels), so the eye goes to what the method ranks first;
- the first ``top_k`` regions outlined and numbered with their rank.

``scale`` < 1 pulls the whole map towards the low end of the colour map: the word-level figure uses the reference's
sensitivity scaling (1.5 × (max insertion − empty score), capped at 1), so a word the image barely changes shows a
dark map instead of a confident one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eagle_pipelines.core.images import as_rgb
from eagle_pipelines.files import atomic_write

#: the reference smooths each map by resizing it to 1/20 of its size and back (visualization/visualization.py)
SMOOTH_FACTOR = 20
#: the colour map of every saliency display
CMAP = "viridis"
#: the reference's word-level scale: the map times min(1, 1.5 × (max insertion − empty score))
SENSITIVITY_GAIN = 1.5
#: the backgrounds ``attribution_display`` draws on, and the colour map's weight over each
BACKGROUNDS = {"grey": None, "colour": 0.3}


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The saliency map through a colour map, blended `alpha` over the image (the paper's plain overlay; the
    figures use ``attribution_display``). uint8 RGB."""
    from matplotlib import colormaps

    colours = colormaps[cmap](np.clip(saliency, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(float) / 255 + alpha * colours
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)


# --- what is shown ------------------------------------------------------------------------------------------------
def smooth(saliency: np.ndarray, factor: int = SMOOTH_FACTOR, min_cells: int = 6) -> np.ndarray:
    """The map averaged down to 1/`factor` of its size and interpolated back up (the reference's smoothing; at
    least `min_cells` cells along the short side, so a small image is not blurred into one blob). ``factor`` 0 or 1
    returns the map unchanged."""
    from PIL import Image

    saliency = np.asarray(saliency, dtype=np.float32)
    if factor <= 1:
        return saliency
    h, w = saliency.shape
    cells = max(min_cells / min(h, w), 1.0 / factor)
    small = (max(1, round(w * cells)), max(1, round(h * cells)))
    if small[0] >= w and small[1] >= h:
        return saliency
    picture = Image.fromarray(saliency, mode="F")
    return np.asarray(picture.resize(small, Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR),
                      dtype=np.float32)


def sensitivity(attribution) -> float:
    """How much the explained tokens depend on the image: the highest mean insertion probability minus the mean
    probability with a black image (the reference's ``max(insertion_score) − deletion_score[-1]``)."""
    return float(np.asarray(attribution.insertion).mean(axis=1).max() - np.asarray(attribution.empty_score).mean())


def sensitivity_scale(attribution, gain: float = SENSITIVITY_GAIN) -> float:
    """The factor the word-level figure multiplies the map by: min(1, gain × sensitivity), at least 0."""
    return float(np.clip(gain * sensitivity(attribution), 0.0, 1.0))


def token_saliency(attribution, token: int) -> np.ndarray:
    """The map of one explained token over the same region order: region k gets the share of that token's own
    gain (λ1·p_keep + λ2·(1 − p_remove)) still ahead when it was added, as ``Attribution.saliency`` does for the
    mean over the tokens. A token that the first region already decides is bright only there."""
    a = attribution
    ins, dele = np.asarray(a.insertion)[:, token], np.asarray(a.deletion)[:, token]
    objective = a.lambda1 * ins + a.lambda2 * (1.0 - dele)
    start = a.lambda1 * a.empty_score[token] + a.lambda2 * (1.0 - a.full_score[token])
    gains = np.maximum(np.diff(np.concatenate([[start], objective])), 0.0)
    total = gains.sum()
    n = len(a.order)
    if total > 0:
        score = 1.0 - np.concatenate([[0.0], np.cumsum(gains)[:-1]]) / total
    else:  # the token never moves: rank order
        score = 1.0 - np.arange(n) / max(n - 1, 1)
    per_region = np.empty(n)
    per_region[np.asarray(a.order)] = score
    return per_region[a.labels].astype(np.float32)


def top_mask(saliency: np.ndarray, keep: float, labels: np.ndarray | None = None,
             order: np.ndarray | None = None) -> np.ndarray:
    """The pixels left bright: with regions, the first regions of `order` until they cover `keep` of the area
    (at least one); without, the top `keep` fraction of the map's pixels."""
    if labels is not None and order is not None:
        areas = np.bincount(labels.ravel(), minlength=len(order))[np.asarray(order)] / labels.size
        count = int(np.searchsorted(np.cumsum(areas), keep - 1e-9)) + 1
        return np.isin(labels, np.asarray(order)[:min(count, len(order))])
    flat = np.asarray(saliency, dtype=float).ravel()
    n_keep = max(1, round(float(keep) * flat.size))
    chosen = np.zeros(flat.size, dtype=bool)
    chosen[np.argsort(-flat, kind="stable")[:n_keep]] = True
    return chosen.reshape(np.shape(saliency))


@dataclass
class Display:
    """An attribution drawn for people: ``rgb`` (uint8, at ``rgb.shape``), the rank labels burnt into it (rank,
    row, column at that size) and the colour scale (``scale``: the share of the colour map the map spans)."""

    rgb: np.ndarray
    ranks: list[tuple[int, float, float]] = field(default_factory=list)
    scale: float = 1.0


def _grey(image: np.ndarray) -> np.ndarray:
    rgb = as_rgb(image).astype(np.float32) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _resize(array: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """`array` (H, W) or (H, W, 3) at `size` (height, width)."""
    from PIL import Image

    if array.shape[:2] == tuple(size):
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if array.dtype == np.uint8 or array.ndim == 3:
        return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize(size[::-1], resample))
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        out = Image.fromarray(array.astype(np.int32), mode="I").resize(size[::-1], Image.Resampling.NEAREST)
        return np.asarray(out).astype(array.dtype)
    return np.asarray(Image.fromarray(array.astype(np.float32), mode="F").resize(size[::-1], resample))


def _thick_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    from scipy import ndimage

    inner = mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)
    return inner


def _label_point(mask: np.ndarray) -> tuple[float, float]:
    """The point of `mask` farthest from its border (inside even a ring-shaped region)."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(np.argmax(distance), mask.shape)
    return float(row), float(col)


def _upscale(shape: tuple[int, int], min_side: int) -> tuple[int, tuple[int, int], int]:
    """The integer factor that brings the short side to at least `min_side`, the size it gives and the outline
    width at that size."""
    factor = max(1, int(np.ceil(min_side / min(shape))))
    size = (shape[0] * factor, shape[1] * factor)
    return factor, size, max(1, factor // 2 + min(size) // 400)


def _draw_outlines(picture: np.ndarray, outlines, size: tuple[int, int], width: int) -> None:
    for mask, colour in outlines or []:
        big = _resize(np.asarray(mask, dtype=bool), size, nearest=True)
        picture[_thick_boundary(big, width + 1)] = colour


def outlined(image: np.ndarray, outlines: list[tuple[np.ndarray, tuple[int, int, int]]],
             min_side: int = 256) -> np.ndarray:
    """`image` in colour (upscaled by an integer factor to a short side of at least `min_side`, nearest) with the
    contour of each (mask, colour) drawn on it: the hallucination figure's removal steps."""
    image = as_rgb(image)
    _, size, width = _upscale(image.shape[:2], min_side)
    picture = _resize(image, size, nearest=True).copy()
    _draw_outlines(picture, outlines, size, width)
    return picture


def attribution_display(image: np.ndarray, saliency: np.ndarray, *, labels: np.ndarray | None = None,
                        order: np.ndarray | None = None, top_k: int = 3, keep: float = 0.25, scale: float = 1.0,
                        smooth_factor: int = SMOOTH_FACTOR, cmap: str = CMAP, alpha: float = 0.6,
                        dim: float = 0.35, min_side: int = 256, boxes: list[tuple[float, float, float, float]]
                        | None = None, outlines: list[tuple[np.ndarray, tuple[int, int, int]]] | None = None,
                        numbers: bool = True, background: str = "grey") -> Display:
    """The picture of `saliency` (in [0, 1], the image's size) over `image` that reads at a glance (see the
    module docstring). `labels`/`order`: the region map and the method's order (EAGLE, random: the top regions are
    whole regions, the first `top_k` outlined and numbered); without them the top `keep` pixels are lit. `boxes`
    (x, y, w, h in image pixels) are drawn in white; `outlines` are extra (mask, colour) contours. The picture is
    upscaled (nearest for regions, bilinear for the image) so that its short side is at least `min_side`.
    `background`: ``grey`` (a greyscale copy under the map at `alpha`) or ``colour`` (the image's own colours
    under the map at ``BACKGROUNDS["colour"]``)."""
    from matplotlib import colormaps

    if background not in BACKGROUNDS:
        raise ValueError(f"background {background!r} is not one of {sorted(BACKGROUNDS)}")
    from PIL import Image, ImageDraw

    image = as_rgb(image)
    saliency = np.clip(np.nan_to_num(np.asarray(saliency, dtype=np.float32)), 0.0, 1.0)
    h, w = saliency.shape
    if image.shape[:2] != (h, w):
        image = _resize(image, (h, w))
    lit = top_mask(saliency, keep, labels, order)
    factor, size, width = _upscale((h, w), min_side)
    grey = _resize((_grey(image) * 255).astype(np.uint8), size).astype(np.float32) / 255.0
    shown = _resize(smooth(saliency, smooth_factor), size) * float(np.clip(scale, 0.0, 1.0))
    lit_big = _resize(lit, size, nearest=True)
    colours = colormaps[cmap](np.clip(shown, 0, 1))[..., :3].astype(np.float32)
    if background == "colour":
        weight = BACKGROUNDS["colour"]
        photo = _resize(image, size).astype(np.float32) / 255.0
        picture = (1 - weight) * photo + weight * colours
    else:
        picture = (1 - alpha) * (0.15 + 0.85 * grey)[..., None] + alpha * colours
    picture = np.where(lit_big[..., None], picture, picture * dim)
    picture = (np.clip(picture, 0, 1) * 255).astype(np.uint8)
    if not lit_big.all():  # the edge of the lit area, in white
        picture[_thick_boundary(lit_big, width)] = (255, 255, 255)
    ranks = []
    if labels is not None and order is not None and top_k:
        big_labels = _resize(np.asarray(labels, dtype=np.int32), size, nearest=True)
        for rank, region in enumerate(np.asarray(order)[:top_k], start=1):
            mask = big_labels == region
            if mask.any():
                picture[_thick_boundary(mask, width)] = (255, 255, 255)
                row, col = _label_point(mask)
                ranks.append((rank, row, col))
    _draw_outlines(picture, outlines, size, width)
    canvas = Image.fromarray(picture)
    draw = ImageDraw.Draw(canvas)
    for x, y, bw, bh in boxes or []:
        box = [x * factor, y * factor, (x + bw) * factor - 1, (y + bh) * factor - 1]
        draw.rectangle([box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1], outline=(0, 0, 0), width=width + 3)
        draw.rectangle(box, outline=(255, 255, 255), width=width + 1)  # white, edged in black on both sides
    if numbers and ranks:
        font = _font(max(12, min(size) // 14))
        for rank, row, col in ranks:
            draw.text((col, row), str(rank), fill=(255, 255, 255), font=font, anchor="mm",
                      stroke_width=max(2, min(size) // 150), stroke_fill=(0, 0, 0))
    return Display(np.asarray(canvas), ranks, float(np.clip(scale, 0.0, 1.0)))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def colour_bar(fig, ax=None, cmap: str = CMAP, label: str = "saliency (high: ranked earlier)", cax=None):
    """A colour bar of the display's colour map (0 to 1): in `cax`, or taken from beside `ax`."""
    import matplotlib.pyplot as plt

    mappable = plt.cm.ScalarMappable(cmap=cmap)
    bar = (fig.colorbar(mappable, cax=cax) if cax is not None
           else fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02))
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return bar


# --- the figure of one Attribution (explain(), eagle-explain) -----------------------------------------------------
def fit_title(fig, text: str, fontsize: float = 10) -> None:
    """`text` as the figure's title, every line wrapped to the figure's width (a long prompt or answer is never
    clipped at the edges), then the panels laid out under it (``tight_layout`` below the title's band)."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72 / (0.62 * fontsize)))
    lines = [part for line in text.split("\n") for part in (textwrap.wrap(line, width) or [""])]
    fig.suptitle("\n".join(lines), fontsize=fontsize, y=1 - 0.05 / fig.get_figheight(), va="top")
    band = (0.12 + len(lines) * fontsize * 1.3 / 72) / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, max(0.5, 1 - band)))


def plot_attribution(attribution, image=None, token_labels: list[str] | None = None):
    """Three panels: the attribution display (first three regions numbered, colour bar), the insertion and
    deletion curves with their AUCs, and each token's influence."""
    import matplotlib.pyplot as plt

    from matplotlib import patheffects

    a = attribution
    labels = token_labels or a.target_words or [str(p) for p in a.target_positions]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.1, 1, 1]})
    sal = a.saliency()
    base = as_rgb(image) if image is not None else np.full(sal.shape + (3,), 128, np.uint8)
    shown = attribution_display(base, sal, labels=a.labels, order=a.order, min_side=1, numbers=False,
                                background="colour" if image is not None else "grey")
    axes[0].imshow(shown.rgb)  # at the attribution's resolution; the ranks as text, sharp at any size
    for rank, row, col in shown.ranks:
        axes[0].text(col, row, str(rank), ha="center", va="center", color="white", fontsize=11, weight="bold",
                     path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
    axes[0].set_title(f"EAGLE ({a.strategy}, {a.n_regions} regions): first 3 numbered", fontsize=10)
    axes[0].axis("off")
    colour_bar(fig, axes[0], label="share of the search's gain still ahead")
    x = np.concatenate([[0.0], a.area])
    ins = np.concatenate([[a.deletion[-1].mean()], a.insertion.mean(axis=1)])
    dele = np.concatenate([[a.insertion[-1].mean()], a.deletion.mean(axis=1)])
    axes[1].plot(x, ins, color="#1b7837", lw=2, label=f"insertion (AUC {np.trapezoid(ins, x):.3f})")
    axes[1].plot(x, dele, color="#762a83", lw=2, ls="--", label=f"deletion (AUC {np.trapezoid(dele, x):.3f})")
    axes[1].set_xlabel("area fraction inserted / deleted", fontsize=9)
    axes[1].set_ylabel("mean p(explained tokens)", fontsize=9)
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8, loc="best")
    axes[1].set_title("faithfulness curves", fontsize=10)
    colours = ["#3b528b" if v > 0.1 else "#a0a0a0" for v in a.influence]
    axes[2].bar(range(len(a.influence)), a.influence, color=colours)
    axes[2].set_xticks(range(len(a.influence)))
    axes[2].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    axes[2].set_ylabel("influence (high: visual evidence)", fontsize=9)
    axes[2].set_title("per-token influence (grey: < 0.1, language prior)", fontsize=10)
    fit_title(fig, f"{a.prompt!r} → {a.answer!r}", 10)
    return fig


# --- the figures of a clip's attribution (core/video.py: VideoAttribution; docs/video.md) -------------------------
def _clip_frames(attribution, frames) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at the attribution's resolution (grey when none are given)."""
    n, h, w = attribution.labels.shape
    if frames is None:
        return np.full((n, h, w, 3), 128, np.uint8)
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) != n:
        raise ValueError(f"{n} frames expected for this attribution, got an array of shape {frames.shape}")
    return frames


def video_frame_displays(attribution, frames=None, keep: float = 0.1, top_k: int = 3,
                         min_side: int = 224, numbers: bool = True, background: str = "colour") -> list[Display]:
    """One ``attribution_display`` per frame of a clip's attribution, on one colour scale (the clip's saliency).
    Lit: the first regions of the clip's order until they cover `keep` of the whole clip (a frame holding none of
    them is dimmed throughout, so the moment stands out); numbered: the clip's first `top_k` regions, in
    whichever frame they lie. `background`: the frames in colour (the shape that appears is seen as it is) or
    grey (``attribution_display``)."""
    sal = attribution.saliency()
    labels = np.asarray(attribution.labels)
    order = np.asarray(attribution.order)
    background = background if frames is not None else "grey"
    frames = _clip_frames(attribution, frames)
    lit = top_mask(sal, keep, labels, order)  # (N, H, W) over the whole clip
    displays = []
    for k in range(len(labels)):
        # this frame's share of the lit regions: along the clip's order, the frame's areas reach it exactly at
        # its last lit region (a frame with none: only order[0] would be lit, and it lies elsewhere)
        share = float(lit[k].mean())
        displays.append(attribution_display(frames[k], sal[k], labels=labels[k], order=order, top_k=top_k,
                                            keep=max(share, 1e-9), min_side=min_side, numbers=numbers,
                                            background=background))
    return displays


def save_frame_overlays(attribution, frames, folder, keep: float = 0.1) -> list:
    """Writes one PNG per frame (``frame_00.png``...; the display of ``video_frame_displays``) into `folder`,
    atomically; returns the paths."""
    from pathlib import Path

    from PIL import Image


    folder = Path(folder)
    paths = []
    for k, display in enumerate(video_frame_displays(attribution, frames, keep=keep)):
        path = folder / f"frame_{k:02d}.png"
        atomic_write(path, lambda f, rgb=display.rgb: Image.fromarray(rgb).save(f, format="PNG"))
        paths.append(path)
    return paths


def save_video_gif(attribution, frames, path, duration_ms: int = 500, keep: float = 0.1):
    """An animated GIF of the map over the clip (one frame per clip frame, looping; PIL), written atomically.
    Each frame carries its index, time and share of the search's gain in a caption strip."""
    from pathlib import Path

    from PIL import Image, ImageDraw


    displays = video_frame_displays(attribution, frames, keep=keep)
    shares = attribution.frame_importance() if hasattr(attribution, "frame_importance") else None
    times = list(getattr(attribution, "timestamps", range(len(displays))))
    pictures = []
    for k, display in enumerate(displays):
        h, w = display.rgb.shape[:2]
        strip = max(14, h // 12)
        canvas = Image.new("RGB", (w, h + strip), (0, 0, 0))
        canvas.paste(Image.fromarray(display.rgb), (0, strip))
        text = f"frame {k + 1}/{len(displays)}  t={float(times[k]):.1f}s"
        if shares is not None:
            text += f"  gain {100 * shares[k]:.0f}%"
        ImageDraw.Draw(canvas).text((4, strip // 2), text, fill=(255, 255, 255), font=_font(max(10, strip - 4)),
                                    anchor="lm")
        pictures.append(canvas.convert("P", palette=Image.Palette.ADAPTIVE, colors=255))
    path = Path(path)
    atomic_write(path, lambda f: pictures[0].save(f, format="GIF", save_all=True, append_images=pictures[1:],
                                                  duration=int(duration_ms), loop=0))
    return path


def plot_video_attribution(attribution, frames=None, token_labels: list[str] | None = None, keep: float = 0.1):
    """Every frame with its map (one colour scale; the clip's first three regions numbered; the clip's top `keep`
    lit), titled with its time and share of the gain, above the faithfulness curves and each frame's share."""
    import matplotlib.pyplot as plt
    from matplotlib import patheffects

    a = attribution
    displays = video_frame_displays(a, frames, keep=keep, min_side=1, numbers=False)
    n = len(displays)
    shares = a.frame_importance()
    times = a.timestamps
    fig = plt.figure(figsize=(max(8.0, 2.1 * n), 6.2))
    grid = fig.add_gridspec(2, max(n, 2), height_ratios=[1.1, 1])
    for k, display in enumerate(displays):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(display.rgb)
        for rank, row, col in display.ranks:
            ax.text(col, row, str(rank), ha="center", va="center", color="white", fontsize=10, weight="bold",
                    path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
        ax.set_title(f"frame {k + 1} (t={float(times[k]):.1f}s)\ngain {100 * shares[k]:.0f}%", fontsize=9)
        ax.axis("off")
    half = max(n, 2) // 2
    ax = fig.add_subplot(grid[1, :half])
    x = np.concatenate([[0.0], a.area])
    ins = np.concatenate([[a.deletion[-1].mean()], a.insertion.mean(axis=1)])
    dele = np.concatenate([[a.insertion[-1].mean()], a.deletion.mean(axis=1)])
    ax.plot(x, ins, color="#1b7837", lw=2, label=f"insertion (AUC {np.trapezoid(ins, x):.3f})")
    ax.plot(x, dele, color="#762a83", lw=2, ls="--", label=f"deletion (AUC {np.trapezoid(dele, x):.3f})")
    ax.set_xlabel("share of the clip inserted / deleted", fontsize=9)
    ax.set_ylabel("mean p(explained tokens)", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, half:])
    ax.bar(range(1, n + 1), shares, color="#3b528b")
    ax.set_xticks(range(1, n + 1))
    ax.set_xlabel("frame", fontsize=9)
    ax.set_ylabel("share of the search's gain", fontsize=9)
    ax.set_title("which moment", fontsize=10)
    words = " ".join(token_labels or a.target_words)
    fit_title(fig, f"{a.prompt!r} → {a.answer!r}\nexplained: {words!r}; {a.strategy} search over {a.n_regions} "
              f"regions of {n} frames", 10)
    return fig
