"""Metrics of a clip's region order against a known cause: what happened in one frame at one place.

- ``prefix_curves``: insertion and deletion curves of a region order at `steps` evenly spaced prefix lengths (one
  protocol for every method: EAGLE's order and the random floor are scored at the same points; 2·steps passes).
- ``temporal_hit``: the first-ranked region lies in the event's frame ("which moment").
- ``st_point_game``: the spatio-temporal Point Game: the maximum of the order's map over the clip (the first-ranked
  region) lies in the event's frame *and* touches the event object's mask there ("which moment and which place";
  ``core.metrics.point_game`` on the (N, H, W) map, ties counting as hits).
- ``order_rows``: one row per method's order of a clip, every metric above under one protocol (eagle_video's
  evaluation).
"""

from __future__ import annotations

import time

import numpy as np

from eagle_pipelines.core.evaluate import order_saliency
from eagle_pipelines.core.metrics import Curves, MetricError, faithfulness, point_game
from eagle_pipelines.core.regions import RegionMap, region_frames
from eagle_pipelines.core.scoring import RegionScorer, TokenScorer


def prefix_counts(n: int, steps: int) -> np.ndarray:
    """`steps` prefix lengths spread evenly over 1..n (ceil(i·n/steps), i = 1..steps; all n when steps >= n)."""
    if steps < 1:
        raise MetricError(f"steps must be positive, got {steps}")
    steps = min(steps, n)
    return np.unique(np.ceil(np.arange(1, steps + 1) * n / steps).astype(int))


def prefix_curves(scorer: TokenScorer, regions: RegionMap, order: np.ndarray, steps: int) -> Curves:
    """Curves of `order` at ``prefix_counts(n, steps)``: keep the first k regions (insertion) and remove them
    (deletion), x = the kept / removed share of the clip's pixels."""
    order = np.asarray(order)
    n = regions.n_regions
    if sorted(order.tolist()) != list(range(n)):
        raise MetricError(f"the order is not a permutation of the {n} regions")
    counts = prefix_counts(n, steps)
    sets = np.zeros((len(counts), n), dtype=bool)
    for i, k in enumerate(counts):
        sets[i, order[:k]] = True
    probs = RegionScorer(scorer, regions)(np.concatenate([sets, ~sets]))
    area = regions.cumulative_area(order)[counts - 1]
    return Curves(area, probs[:len(counts)], probs[len(counts):])


def temporal_hit(order: np.ndarray, regions: RegionMap, event_frame: int) -> bool:
    """True when the first region of `order` lies in frame `event_frame`."""
    return bool(region_frames(regions)[int(np.asarray(order)[0])] == int(event_frame))


def st_point_game(order: np.ndarray, regions: RegionMap, event_masks: np.ndarray) -> bool:
    """True when the maximum of the order's map (its first region) touches the event object's pixels, given as
    (N, H, W) masks that are empty outside the event frame."""
    masks = np.asarray(event_masks, dtype=bool)
    if masks.shape != regions.labels.shape:
        raise MetricError(f"event masks {masks.shape} and the clip's label map {regions.labels.shape} differ")
    return point_game(order_saliency(np.asarray(order), regions.labels), mask=masks)


def order_rows(scorer: TokenScorer, regions: RegionMap, orders: dict[str, np.ndarray], event_frame: int,
               event_masks: np.ndarray, steps: int) -> list[dict]:
    """One row per method of `orders` (method -> its order of the clip's regions), in that order, each scored under
    the same protocol: the faithfulness metrics of its ``prefix_curves`` at `steps` prefix lengths and the seconds
    they took (``eval_seconds``), ``temporal_hit`` in `event_frame`, ``st_point_game`` on `event_masks`, the first
    region, and the curves themselves (``curve``: x = the kept / removed share, from 0)."""
    rows = []
    for method, order in orders.items():
        start = time.perf_counter()
        curves = prefix_curves(scorer, regions, order, steps)
        rows.append({"method": method, **faithfulness(curves), "eval_seconds": time.perf_counter() - start,
                     "temporal_hit": float(temporal_hit(order, regions, event_frame)),
                     "st_point_game": float(st_point_game(order, regions, event_masks)),
                     "first_region": int(order[0]), "curve": {"x": [0.0, *curves.area.tolist()],
                                                              "insertion": curves.insertion_curve()[1].tolist(),
                                                              "deletion": curves.deletion_curve()[1].tolist()}})
    return rows
