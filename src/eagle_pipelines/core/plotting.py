"""Figures of an Attribution: saliency over the image, insertion/deletion curves, per-token influence."""

from __future__ import annotations

import numpy as np

from eagle_pipelines.core.images import as_rgb


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """The saliency map through a colour map, blended `alpha` over the image (as in the paper). uint8 RGB."""
    from matplotlib import colormaps

    colours = colormaps[cmap](np.clip(saliency, 0, 1))[..., :3]
    blended = (1 - alpha) * image.astype(float) / 255 + alpha * colours
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)


def plot_attribution(attribution, image=None, token_labels: list[str] | None = None):
    import matplotlib.pyplot as plt

    a = attribution
    labels = token_labels or a.target_words or [str(p) for p in a.target_positions]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    sal = a.saliency()
    if image is not None:  # the attribution is at the model's resolution; show the image at that size
        from PIL import Image

        image = as_rgb(image)
        if image.shape[:2] != sal.shape:
            image = np.asarray(Image.fromarray(image).resize(sal.shape[::-1], Image.Resampling.BICUBIC))
    axes[0].imshow(overlay(image, sal) if image is not None else sal, cmap=None if image is not None else "jet")
    axes[0].set_title(f"saliency ({a.strategy}, {a.n_regions} regions)")
    axes[0].axis("off")
    scale = fig.colorbar(plt.cm.ScalarMappable(cmap="jet"), ax=axes[0], fraction=0.046, pad=0.02)
    scale.set_label("share of the search's gain still ahead", fontsize=8)
    x = np.concatenate([[0.0], a.area])
    ins = np.concatenate([[a.deletion[-1].mean()], a.insertion.mean(axis=1)])
    dele = np.concatenate([[a.insertion[-1].mean()], a.deletion.mean(axis=1)])
    axes[1].plot(x, ins, label=f"insertion (AUC {np.trapezoid(ins, x):.3f})")
    axes[1].plot(x, dele, label=f"deletion (AUC {np.trapezoid(dele, x):.3f})")
    axes[1].set_xlabel("area fraction inserted / deleted")
    axes[1].set_ylabel("mean p(explained tokens)")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=8)
    axes[1].set_title("faithfulness curves")
    axes[2].bar(range(len(a.influence)), a.influence, color="tab:purple")
    axes[2].set_xticks(range(len(a.influence)))
    axes[2].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    axes[2].set_ylabel("influence (high: visual evidence)")
    axes[2].set_title("per-token influence")
    fig.suptitle(f"{a.prompt!r} → {a.answer!r}", fontsize=9)
    fig.tight_layout()
    return fig
