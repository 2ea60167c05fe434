"""Scoring one sample under the shared protocol (needs a TokenScorer, not a model).

- Region protocol: a method that orders the superpixels (EAGLE, the random floor) is scored by the curves of its
  prefix sets: EAGLE's own recorded curves, the random order's computed the same way.
- Pixel protocol: any pixel map (EAGLE's saliency, a baseline's map, the random floor's) is ranked into `steps`
  keep/remove steps of equal pixel fractions, scored with the same scorer.
"""

from __future__ import annotations

import time

import numpy as np
from PIL import Image

from eagle_pipelines.core.metrics import Curves, faithfulness, pixel_order_masks, point_game
from eagle_pipelines.core.regions import RegionMap
from eagle_pipelines.core.scoring import RegionScorer, TokenScorer
from eagle_pipelines.core.search import CountingScorer, complete_trace


def random_order(n: int, seed: int, *ids: int) -> np.ndarray:
    """A seeded random order of n regions, fixed per sample."""
    return np.random.default_rng([seed, *[int(i) for i in ids]]).permutation(n)


def order_saliency(order: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A map that paints regions by rank: the first region 1, the last 0."""
    n = len(order)
    value = np.empty(n)
    value[order] = 1.0 - np.arange(n) / max(n - 1, 1)
    return value[labels].astype(np.float32)


def region_curves(scorer: TokenScorer, regions: RegionMap, order: np.ndarray) -> Curves:
    """Curves of the prefix sets of `order` (2n forward passes)."""
    counting = CountingScorer(RegionScorer(scorer, regions), regions.n_regions)
    trace = complete_trace(counting, np.asarray(order), {}, 1.0, 1.0)
    return Curves(regions.cumulative_area(trace.order), trace.insertion, trace.deletion)


def pixel_curves(scorer: TokenScorer, saliency: np.ndarray, steps: int) -> Curves:
    """Curves of a pixel map under the pixel protocol (2·steps forward passes)."""
    masks, area = pixel_order_masks(saliency, steps)
    probs = scorer(np.concatenate([masks, ~masks]))
    return Curves(area, probs[:steps], probs[steps:])


def object_at(shape: tuple[int, int], mask: np.ndarray, bbox) -> tuple[np.ndarray, tuple[float, ...]]:
    """An object's mask and COCO box carried to the model-resolution grid `shape` (nearest for the mask)."""
    h, w = mask.shape
    if (h, w) == tuple(shape):
        return mask.astype(bool), tuple(bbox)
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    sx, sy = shape[1] / w, shape[0] / h
    x, y, bw, bh = bbox
    return np.asarray(resized) > 0, (x * sx, y * sy, bw * sx, bh * sy)


def score_methods(scorer: TokenScorer, maps: dict[str, tuple[np.ndarray, Curves | None]], steps: int,
                  obj: tuple[np.ndarray, tuple] | None = None) -> list[dict]:
    """Metric rows for each method: its own region curves when given, and the pixel protocol for its map."""
    rows = []
    for method, (saliency, own) in maps.items():
        protocols = ([("regions", own)] if own is not None else []) + [("pixels", None)]
        for protocol, curves in protocols:
            start = time.perf_counter()
            if curves is None:
                curves = pixel_curves(scorer, saliency, steps)
            x, ins = curves.insertion_curve()
            row = {"method": method, "protocol": protocol, **faithfulness(curves),
                   "eval_seconds": time.perf_counter() - start,
                   "curve": {"x": x.tolist(), "insertion": ins.tolist(),
                             "deletion": curves.deletion_curve()[1].tolist()}}
            if obj is not None:
                mask, box = obj
                row["point_game_box"] = float(point_game(saliency, box=box))
                row["point_game_mask"] = float(point_game(saliency, mask=mask))
            rows.append(row)
    return rows
