"""Scoring one sample under the shared protocol (needs a TokenScorer, not a model).

- Region protocol: a method that orders the superpixels (EAGLE, the random floor) is scored by the curves of its
  prefix sets: EAGLE's own recorded curves, the random order's computed the same way.
- Pixel protocol: any pixel map (EAGLE's saliency, a baseline's map, the random floor's) is ranked into `steps`
  keep/remove steps of equal pixel fractions, scored with the same scorer.
"""

from __future__ import annotations

import time

import numpy as np
from eagle_pipelines.core.geometry import PhotoGrid
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


def pixel_curves(scorer: TokenScorer, saliency: np.ndarray, steps: int, ties: str = "stable") -> Curves:
    """Curves of a pixel map under the pixel protocol (2·steps forward passes); `ties`: ``pixel_ranking``."""
    masks, area = pixel_order_masks(saliency, steps, ties)
    probs = scorer(np.concatenate([masks, ~masks]))
    return Curves(area, probs[:steps], probs[steps:])


def object_at(grid: PhotoGrid, mask: np.ndarray, bbox) -> tuple[np.ndarray, np.ndarray]:
    """An object's mask and COCO box (photo pixels) as masks of the working image, carried through the model
    processor's own resize, crop and padding (``grid``: ``PhotoGrid``). Parts the crop cuts off are dropped; an
    object wholly outside the crop gives empty masks (its Point Game is then undefined: NaN)."""
    return grid.to_model(mask), grid.box_mask(bbox)


def score_methods(scorer: TokenScorer, maps: dict[str, tuple[np.ndarray, Curves | None]], steps: int,
                  obj: tuple[np.ndarray, np.ndarray] | None = None, ties: str = "stable") -> list[dict]:
    """Metric rows for each method: its own region curves when given, and the pixel protocol for its map."""
    rows = []
    for method, (saliency, own) in maps.items():
        protocols = ([("regions", own)] if own is not None else []) + [("pixels", None)]
        for protocol, curves in protocols:
            start = time.perf_counter()
            if curves is None:
                curves = pixel_curves(scorer, saliency, steps, ties)
            x, ins = curves.insertion_curve()
            row = {"method": method, "protocol": protocol, **faithfulness(curves),
                   "eval_seconds": time.perf_counter() - start,
                   "curve": {"x": x.tolist(), "insertion": ins.tolist(),
                             "deletion": curves.deletion_curve()[1].tolist()}}
            if obj is not None:
                mask, box = obj
                row["point_game_box"] = float(point_game(saliency, mask=box)) if box.any() else np.nan
                row["point_game_mask"] = float(point_game(saliency, mask=mask)) if mask.any() else np.nan
            rows.append(row)
    return rows
